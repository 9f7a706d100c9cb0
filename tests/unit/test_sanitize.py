"""Tests for chat_tui.sanitize: untrusted model output must be terminal-safe."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat_tui.sanitize import StreamSanitizer, sanitize, sanitize_stream

ESC = "\x1b"
BEL = "\x07"
ST = "\x1b\\"

# Characters that must never survive sanitizing.
FORBIDDEN = (
    {chr(c) for c in range(0x20) if chr(c) not in "\n\t"}
    | {"\x7f"}
    | {chr(c) for c in range(0x80, 0xA0)}
    | {chr(c) for c in range(0x202A, 0x202F)}
    | {chr(c) for c in range(0x2066, 0x206A)}
)


def _clean(text: str) -> bool:
    """True if *text* contains nothing a terminal would interpret."""
    return not any(ch in FORBIDDEN or 0xD800 <= ord(ch) <= 0xDFFF for ch in text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # SGR colours, including 256-colour/truecolour and reset.
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[1;38;5;196mX\x1b[38;2;1;2;3mY\x1b[m", "XY"),
        # Cursor movement and erase.
        ("a\x1b[2Ab\x1b[10;20Hc\x1b[K", "abc"),
        ("before\x1b[2J\x1b[Hafter", "beforeafter"),
        # Private-mode CSI (alternate screen, hide cursor).
        ("\x1b[?1049h\x1b[?25lhidden?", "hidden?"),
        # OSC 8 hyperlink: the link text stays, the URL and escapes go.
        ("see \x1b]8;;https://evil.example/\x1b\\this link\x1b]8;;\x1b\\ ok", "see this link ok"),
        ("\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07", "click"),
        # OSC 52 clipboard write and OSC 0 title set.
        ("x\x1b]52;c;cm0gLXJmIH4K\x07y", "xy"),
        ("\x1b]0;pwned\x07hello", "hello"),
        ("\x1b]2;pwned\x1b\\hello", "hello"),
        # 8-bit C1 forms.
        ("\x9b31mred\x9b0m", "red"),
        ("\x9d0;pwned\x9chello", "hello"),
        ("\x9d0;pwned\x07hello", "hello"),
        # DCS / SOS / PM / APC strings, 7- and 8-bit.
        ("a\x1bP1$r0m\x1b\\b", "ab"),
        ("a\x90q#0;2;0;0;0\x9cb", "ab"),
        ("a\x1bXsos\x1b\\b\x1b^pm\x1b\\c\x1b_apc\x1b\\d", "abcd"),
        ("a\x98sos\x9cb\x9epm\x9cc\x9fapc\x9cd", "abcd"),
        # BEL inside DCS does not end it (only ST does).
        ("a\x1bPdata\x07more\x1b\\b", "ab"),
        # Two- and three-character ESC sequences.
        ("\x1b7saved\x1b8", "saved"),
        ("\x1bcreset", "reset"),
        ("\x1b(Bplain", "plain"),
        ("\x1b#8E", "E"),
        ("a\x1b", "a"),
        # Bell, backspace, NUL, vertical tab, form feed, DEL, C1 NEL.
        ("ding\x07", "ding"),
        ("abc\x08\x08\x08XYZ", "abcXYZ"),
        ("nul\x00byte", "nulbyte"),
        ("a\x0bb\x0cc\x7fd\x85e", "abcde"),
        # Carriage return: the overwrite trick is defeated, CRLF becomes LF.
        ("rm -rf ~\rls -la   ", "rm -rf ~ls -la   "),
        ("line1\r\nline2\r\n", "line1\nline2\n"),
        # Trojan Source bidi controls.
        ("access\u202e\u2066 level\u2069\u2066", "access level"),
        ("\u202a\u202b\u202c\u202d\u202eabc\u2067\u2068", "abc"),
        # Lone surrogates become U+FFFD.
        ("bad\udcffbyte", "bad\ufffdbyte"),
        ("\ud83d", "\ufffd"),
    ],
)
def test_removes_control_sequences(raw: str, expected: str) -> None:
    assert sanitize(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain ascii text",
        "line one\nline two\n\tindented",
        "emoji 😀👍🏽 and family 👨\u200d👩\u200d👧 (ZWJ kept)",
        "CJK 中文 日本語 한국어, accents café naïve e\u0301",
        "Arabic مرحبا and Hebrew שלום are fine without overrides",
        "markup is not our job: [bold]x[/bold] [@click=app.quit]quit[/] [link=x]y[/link]",
        "brackets [31m without ESC stay",
        "zero width space \u200b and non-breaking\u00a0space and BOM \ufeff",
        "\ufffd already a replacement char",
    ],
)
def test_keeps_ordinary_text(text: str) -> None:
    assert sanitize(text) == text


def test_markup_is_left_literal() -> None:
    # sanitize only strips control bytes; escaping markup is the renderer's job.
    assert sanitize("\x1b[1m[bold]hi[/bold]\x1b[0m") == "[bold]hi[/bold]"
    assert sanitize("[@click=app.quit]x[/]") == "[@click=app.quit]x[/]"


def test_fast_path_returns_same_object() -> None:
    text = "nothing to do here 😀\n" * 100
    assert sanitize(text) is text


def test_malformed_csi_does_not_eat_following_text() -> None:
    # The sequence ends at the first byte that cannot belong to it.
    assert sanitize("\x1b[12é and more") == "é and more"
    assert sanitize("\x1b[12\nnext") == "\nnext"
    assert sanitize("\x1b[31\x1b[32mgreen") == "green"
    assert sanitize("\x9b\x9b\x9b1mX") == "X"


def test_esc_inside_osc_starts_a_new_sequence() -> None:
    # ESC ends the OSC string; what follows is parsed afresh.
    assert sanitize("\x1b]0;title\x1b[31mred") == "red"
    assert sanitize("\x1b]0;title\x1bcvisible") == "visible"


def test_unterminated_strings_swallow_the_rest() -> None:
    assert sanitize("keep\x1b]52;c;AAAA and everything after") == "keep"
    assert sanitize("keep\x9d0;title") == "keep"
    assert sanitize("keep\x1bPdcs body\x07still body") == "keep"


def test_bidi_marks_and_normal_rtl_kept() -> None:
    # Only the embedding/override/isolate controls go; LRM/RLM are harmless marks.
    assert sanitize("a\u200eb\u200fc") == "a\u200eb\u200fc"


# --- linear time on hostile input ------------------------------------------------

MB = 1_000_000


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("\x1b[" * (MB // 2), id="repeated-csi-introducer"),
        pytest.param("\x1b]" + "A" * MB, id="unterminated-osc"),
        pytest.param("\x1b]" * (MB // 2), id="repeated-osc-introducer"),
        pytest.param("\x1bP" + "\x07" * MB, id="unterminated-dcs"),
        pytest.param("\x9b" * MB, id="repeated-8bit-csi"),
        pytest.param("\x1b[" + "1;" * (MB // 2), id="endless-csi-params"),
        pytest.param("a\x1b" * (MB // 2), id="alternating-esc"),
        pytest.param("\x1b(" * (MB // 2), id="repeated-esc-intermediate"),
    ],
)
def test_hostile_input_is_fast(hostile: str) -> None:
    start = time.perf_counter()
    out = sanitize(hostile)
    elapsed = time.perf_counter() - start
    assert _clean(out)
    assert elapsed < 0.5, f"sanitize took {elapsed:.2f}s"

    start = time.perf_counter()
    sanitizer = StreamSanitizer()
    streamed = "".join(sanitizer.feed(hostile[i : i + 4096]) for i in range(0, len(hostile), 4096))
    streamed += sanitizer.flush()
    elapsed = time.perf_counter() - start
    assert streamed == out
    assert elapsed < 1.0, f"stream sanitizing took {elapsed:.2f}s"


def test_ordinary_text_is_fast() -> None:
    text = "The quick brown fox jumps over the lazy dog. 😀\n" * 20_000  # ~1 MB
    start = time.perf_counter()
    assert sanitize(text) == text
    assert time.perf_counter() - start < 0.1


# --- streaming ---------------------------------------------------------------------


def _stream(chunks: list[str]) -> str:
    sanitizer = StreamSanitizer()
    out = "".join(sanitizer.feed(chunk) for chunk in chunks)
    return out + sanitizer.flush()


def test_stream_holds_back_split_escape() -> None:
    sanitizer = StreamSanitizer()
    assert sanitizer.feed("hello \x1b") == "hello "
    assert sanitizer.pending_length == 1
    assert sanitizer.feed("[31mred") == "red"
    assert sanitizer.pending_length == 0


def test_stream_holds_back_split_hyperlink() -> None:
    sanitizer = StreamSanitizer()
    assert sanitizer.feed("click \x1b]8;;http://") == "click "
    assert sanitizer.feed("evil.example/") == ""
    assert sanitizer.feed("\x1b") == ""
    assert sanitizer.feed("\\here\x1b]8;;\x1b\\") == "here"
    assert sanitizer.flush() == ""


def test_stream_split_st_and_crlf() -> None:
    # ST split between chunks must not leak a backslash; CR then LF across chunks.
    assert _stream(["\x1b]0;t\x1b", "\\ok"]) == "ok"
    assert _stream(["line\r", "\nnext"]) == "line\nnext"
    assert _stream(["\x1b(", "B", "x"]) == "x"
    # ESC + intermediate held back must stay an nF sequence: "[" is then its final
    # byte, not the start of a CSI.
    assert sanitize("\x1b([31m") == "31m"
    assert _stream(["\x1b(", "[31m"]) == "31m"
    assert _stream(["\x1b", "(", "[31m"]) == "31m"


def test_stream_pending_is_bounded() -> None:
    sanitizer = StreamSanitizer()
    assert sanitizer.feed("ok \x1b]52;c;") == "ok "
    for _ in range(1000):
        assert sanitizer.feed("QUFBQUFB" * 100) == ""
        assert sanitizer.pending_length <= 4096
    # A sequence that is terminated eventually, however long, still ends cleanly.
    assert sanitizer.feed("\x07visible") == "visible"
    assert sanitizer.pending_length == 0


def test_stream_flush_drops_unterminated_and_resets() -> None:
    sanitizer = StreamSanitizer()
    assert sanitizer.feed("a\x1b]0;never ends") == "a"
    assert sanitizer.flush() == ""
    assert sanitizer.pending_length == 0
    assert sanitizer.feed("fresh") == "fresh"


def test_sanitize_stream_generator() -> None:
    chunks = ["he", "llo \x1b[", "1mworld\x1b", "]0;x\x07!", "\x1b"]
    assert "".join(sanitize_stream(chunks)) == "hello world!"
    assert all(piece for piece in sanitize_stream(chunks))


# --- properties --------------------------------------------------------------------

FRAGMENTS = [
    "\x1b", "[", "]", "P", "X", "^", "_", "\\", "(", "#", " ", "?", ";", "1", "31",
    "m", "H", "J", "B", "8;;http://x/", "52;c;QUFB", "0;title",
    "\x07", "\x9b", "\x9c", "\x9d", "\x90", "\x98", "\x9e", "\x9f", "\x85",
    "\r", "\n", "\t", "\r\n", "\x00", "\x08", "\x7f",
    "\u202e", "\u2066", "\u2069", "\u200d", "\ud800", "\udfff",
    "é", "😀", "中", "text", "[bold]",
]  # fmt: skip

hostile_text = st.lists(
    st.sampled_from(FRAGMENTS) | st.text(max_size=4),
    max_size=40,
).map("".join)


@given(hostile_text)
@settings(max_examples=500)
def test_output_never_contains_controls(text: str) -> None:
    assert _clean(sanitize(text))


@given(st.text())
def test_output_clean_for_arbitrary_unicode(text: str) -> None:
    assert _clean(sanitize(text))


@given(hostile_text)
@settings(max_examples=500)
def test_idempotent(text: str) -> None:
    once = sanitize(text)
    assert sanitize(once) == once


@given(hostile_text, st.data())
@settings(max_examples=1000)
def test_stream_equals_whole_string(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _stream(chunks) == sanitize(text)


@given(hostile_text)
def test_stream_char_by_char_equals_whole_string(text: str) -> None:
    assert _stream(list(text)) == sanitize(text)
