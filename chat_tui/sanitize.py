r"""Strip terminal control sequences from untrusted text before display.

Replies from an LLM endpoint are untrusted: a model (or whoever controls the
endpoint or the documents it was fed) can emit escape sequences that clear the
screen, move the cursor to overwrite earlier output, set the window title,
write to the clipboard (OSC 52), create disguised hyperlinks (OSC 8), or use
Unicode bidi controls to make text read differently from what it contains
("Trojan Source").  Everything shown in the TUI or printed by the CLI must
pass through :func:`sanitize` (or :class:`StreamSanitizer` for streamed
replies) first.

What is removed
---------------
* Whole escape sequences, not just the ESC byte, so no parameter residue such
  as ``[31m`` is left behind: CSI (``ESC [`` / 8-bit ``0x9B``), OSC
  (``ESC ]`` / ``0x9D`` up to BEL or ST), DCS/SOS/PM/APC strings (``ESC P``,
  ``ESC X``, ``ESC ^``, ``ESC _`` and their 8-bit forms, up to ST) and other
  ESC sequences.  An unterminated OSC/DCS/... string swallows the rest of the
  text, because a terminal would swallow it too.
* Every remaining C0 control except ``\n`` and ``\t`` (so ``\r``, which
  enables the "overwrite the line" trick, goes too and ``\r\n`` becomes
  ``\n``), DEL and all C1 controls (U+0080-U+009F).
* The bidi embedding/override/isolate controls U+202A-U+202E and
  U+2066-U+2069.
* Lone surrogates (e.g. from ``errors="surrogateescape"``) become U+FFFD,
  since they cannot be encoded for the terminal.

Everything else, including emoji, CJK, combining accents and the zero-width
joiner, is kept.

Parsing rules (modelled on ECMA-48 and the DEC/xterm parser)
------------------------------------------------------------
* A sequence ends at its terminator, or at the first character that cannot
  belong to it; that character is then treated as ordinary input.  So
  ``"\x1b[é"`` keeps the ``é`` and a stray ``"\x1b["`` cannot eat prose.
* ESC always starts a new sequence, even inside an OSC/DCS string; this is
  how ST (``ESC \\``) terminates strings.
* A plain ESC sequence is ``ESC``, any intermediates (0x20-0x2F) and one
  final character (0x30-0x7E), so ``ESC ( B`` (emitted by ``tput sgr0``) is
  removed completely rather than leaving a stray ``B``.

All patterns are anchored on an introducer character and use possessive
quantifiers over disjoint character classes, so matching is linear in the
input: no catastrophic backtracking on hostile input.

Not handled here: Rich/Textual markup
-------------------------------------
This module only removes terminal control characters.  It does *not* escape
Rich/Textual markup such as ``[bold]`` or ``[@click=app.quit]``, which a
model can also emit; those are left as literal text.  Display code must render
sanitized text with markup disabled (e.g. ``markup=False`` or a ``Text``
object), otherwise the model could trigger actions or restyle the UI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ["StreamSanitizer", "sanitize", "sanitize_stream"]

# Control sequences.  Order matters: the specific ESC forms must come before
# the generic ESC sequence, which would otherwise take "[" or "]" as its final.
_CSI = r"(?:\x1b\[|\x9b)[\x20-\x3f]*+[\x40-\x7e]?"
_OSC = r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*+[\x07\x9c]?"
_STRING = r"(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*+\x9c?"
_ESC = r"\x1b[\x20-\x2f]*+[\x30-\x7e]?"
_SEQUENCE = f"{_CSI}|{_OSC}|{_STRING}|{_ESC}"

# Single characters removed wherever they appear outside a sequence.
_CONTROL_CLASS = r"\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"

_REMOVE = re.compile(f"{_SEQUENCE}|[{_CONTROL_CLASS}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Anything that needs work; its absence enables the fast path.
_NEEDS_WORK = re.compile(f"[{_CONTROL_CLASS}\\ud800-\\udfff]")

# Characters that can start a sequence (ESC and the 8-bit introducers).
_INTRODUCERS = r"\x1b\x90\x98\x9b\x9d-\x9f"
# Tokenises the whole text; group 1 ends up holding the *last* sequence token
# (Python keeps the last capture of a repeated group), which is how the stream
# sanitizer finds a possibly incomplete trailing sequence without a Python
# loop over every token.
_LAST_SEQUENCE = re.compile(f"(?:({_SEQUENCE})|[^{_INTRODUCERS}]++)*+")
# A sequence that is still open at the end of the text.  Group 1 of each
# alternative is all that has to be remembered to finish parsing it later:
# the body of an open sequence never influences how it ends.
_OPEN_SEQUENCE = re.compile(
    r"(\x1b[\x20-\x2f]?)[\x20-\x2f]*+"
    r"|(\x1b\[|\x9b)[\x20-\x3f]*+"
    r"|(\x1b\]|\x9d)[^\x07\x1b\x9c]*+"
    r"|(\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*+"
)


def sanitize(text: str) -> str:
    """Return *text* with terminal control sequences and characters removed.

    Safe to call on any string, any number of times: the result contains no
    C0 control other than newline and tab, no DEL, no C1 control, no bidi
    override/isolate control and no lone surrogate, and
    ``sanitize(sanitize(x)) == sanitize(x)``.
    """
    if not _NEEDS_WORK.search(text):
        return text
    text = _REMOVE.sub("", text)
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


class StreamSanitizer:
    r"""Incremental :func:`sanitize` for replies that arrive in chunks.

    A streamed reply can split an escape sequence across chunks (a chunk
    ending in ``"\x1b"`` or ``"\x1b]8;;http://"``).  Sanitizing chunks
    independently would let the second half through as visible text, so an
    open sequence at the end of a chunk is held back until the next one.

    Only the sequence's introducer (at most two characters) is held, not its
    body: the body is discarded anyway and never affects where the sequence
    ends.  So memory stays bounded however long a hostile unterminated
    sequence is (far below the 4096-character budget), and the output is
    exactly ``sanitize`` of the concatenated input for any split, including
    long sequences that are eventually terminated.

    Call :meth:`flush` at the end of the reply; an unterminated sequence is
    dropped, as :func:`sanitize` would drop it.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        """Start with no open sequence."""
        self._pending = ""

    @property
    def pending_length(self) -> int:
        """Number of characters currently held back (always at most 2)."""
        return len(self._pending)

    def feed(self, chunk: str) -> str:
        """Sanitize *chunk*, returning the text that is safe to show now."""
        text = self._pending + chunk if self._pending else chunk
        self._pending = ""
        if not _NEEDS_WORK.search(text):
            return text
        match = _LAST_SEQUENCE.match(text)
        start, end = match.span(1) if match else (-1, -1)
        if start >= 0 and end == len(text):
            open_seq = _OPEN_SEQUENCE.fullmatch(text, start)
            if open_seq:
                self._pending = next(g for g in open_seq.groups() if g is not None)
                text = text[:start]
        return sanitize(text)

    def flush(self) -> str:
        """End the stream, discarding any unterminated sequence.

        Returns the remaining safe text, which is always empty because an
        unfinished sequence produces no output; it is returned anyway so
        callers can treat ``flush`` like ``feed``.  The sanitizer can be
        reused afterwards.
        """
        self._pending = ""
        return ""


def sanitize_stream(chunks: Iterable[str]) -> Iterator[str]:
    """Yield the sanitized, non-empty pieces of a stream of text chunks."""
    sanitizer = StreamSanitizer()
    for chunk in chunks:
        if out := sanitizer.feed(chunk):
            yield out
    if out := sanitizer.flush():
        yield out
