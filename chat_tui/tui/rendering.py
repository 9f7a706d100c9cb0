"""How message text is drawn: one Markdown renderer for replies, the user's own
messages, and a reply while it streams, so all three look the same.

Rich's Markdown is used (one renderable per message, far cheaper than
Textual's Markdown widget, which mounts a dozen widgets per reply). Changes
to its defaults: headings are left-aligned; code follows the app's theme (a
light Pygments style in light themes, where monokai and Rich's "cyan on black"
inline code read as black boxes); one blank line between blocks, never two
(a table has no empty top and bottom edge of its own), and none at the start
or end of a text. Rich is imported lazily: the first frame of an
empty window does not need it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.markdown import Markdown
    from rich.theme import Theme as RichTheme
    from textual.theme import Theme

DARK_CODE_THEME = "monokai"
LIGHT_CODE_THEME = "friendly"

_markdown_class: type | None = None


class _Look:
    """Whether the app's theme is dark; set by the app when the theme changes."""

    dark = True


look = _Look()


def is_blank(line: list[Any]) -> bool:
    """A rendered line that shows nothing: only spaces, and no background (a code
    block's padding rows have one: they are part of its box, not blank)."""
    return all(not segment.text.strip() and not _background(segment) for segment in line)


def _background(segment: Any) -> bool:
    style = segment.style
    return style is not None and style.bgcolor is not None and not style.bgcolor.is_default


def _chat_markdown() -> type:
    global _markdown_class
    if _markdown_class is None:
        from rich.markdown import Heading, Markdown, TableElement
        from rich.padding import Padding
        from rich.segment import Segment

        class LeftHeading(Heading):
            LEVEL_ALIGN = dict.fromkeys(("h1", "h2", "h3", "h4", "h5", "h6"), "left")

        class EdgelessTable(TableElement):
            """A table without the empty rows Rich draws as its top and bottom edge:
            with the blank line between blocks they made two blank lines."""

            def __rich_console__(self, console: Any, options: Any) -> Any:
                for table in super().__rich_console__(console, options):
                    table.show_edge = False  # also its left edge: indent as it was
                    yield Padding(table, (0, 0, 0, 1))

        class ChatMarkdown(Markdown):
            elements = {
                **Markdown.elements,
                "heading_open": LeftHeading,
                "table_open": EdgelessTable,
            }

            def __rich_console__(self, console: Any, options: Any) -> Any:
                # Rich starts a text that opens with a list or a table with a blank
                # line, ends one that closes with a rule with another, and puts two
                # around HTML: no blank line at either end and never two in a row,
                # so a text drawn in pieces also reads exactly like it drawn whole.
                new_line = Segment.line()
                pending = False  # a blank line, shown if more follows
                shown = False
                for line in console.render_lines(_Blocks(self), options, pad=False):
                    if is_blank(line):
                        pending = shown
                        continue
                    if pending:
                        yield new_line
                        pending = False
                    yield from line
                    yield new_line
                    shown = True

        class _Blocks:
            def __init__(self, markdown: Markdown) -> None:
                self.markdown = markdown

            def __rich_console__(self, console: Any, options: Any) -> Any:
                return Markdown.__rich_console__(self.markdown, console, options)

        _markdown_class = ChatMarkdown
    return _markdown_class


def render_markdown(text: str, *, dark: bool | None = None) -> Markdown:
    """``text`` (already sanitized) as Markdown. Links show their target and are
    never opened; Rich markup in the text stays literal."""
    cls = _chat_markdown()
    dark = look.dark if dark is None else dark
    code_theme = DARK_CODE_THEME if dark else LIGHT_CODE_THEME
    return cls(text, hyperlinks=False, code_theme=code_theme)


def hard_breaks(text: str) -> str:
    """A person's own message keeps its line breaks when read as Markdown: a
    single newline outside code fences becomes a hard break."""
    out: list[str] = []
    lines = text.split("\n")
    fenced = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not fenced and line.strip() and nxt.strip() and not line.endswith("  "):
            line += "  "
        out.append(line)
    return "\n".join(out)


# A line after a blank line that may still belong to the block before it: indented
# (a list item's next paragraph, indented code), another item of the same list (a
# loose list), a link definition (read by text above it), or HTML (drawn as nothing).
_CONTINUES = re.compile(r"[ \t]|[-*+][ \t]|[-*+]$|\d{1,9}[.)]([ \t]|$)|\[|<")
# The start of an unfinished line that may still become a list item.
_UNDECIDED = re.compile(r"[-*+]|\d{1,9}[.)]?")


def block_ends(text: str, start: int) -> list[int]:
    """Where complete Markdown blocks end in ``text[start:]``: after each blank line
    outside a code fence that is followed by a line starting a block of its own.

    Used while a reply streams: each complete block is drawn once and kept, and
    the blocks drawn apart read exactly like the text drawn whole (joined with
    the one blank line Markdown puts between blocks); only the unfinished block
    after the last end is redrawn as more arrives.
    """
    ends: list[int] = []
    fenced = False
    blank = False
    pos = start
    lines = text[start:].split("\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        starts_block = line.strip() and not _CONTINUES.match(line)
        if blank and not fenced and starts_block and not (last and _UNDECIDED.fullmatch(line)):
            ends.append(pos)
        if last:
            break  # the unfinished line: only its start was needed
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        blank = not fenced and not line.strip()
        pos += len(line) + 1
    return ends


def safe_split(text: str, start: int) -> int:
    """The end of the last complete Markdown block in ``text[start:]`` (see
    :func:`block_ends`), or ``start`` if there is none."""
    ends = block_ends(text, start)
    return ends[-1] if ends else start


def console_theme(theme: Theme) -> RichTheme:
    """Rich styles Markdown reads from the console, derived from the app theme."""
    from rich.style import Style
    from rich.theme import Theme as RichTheme

    accent = theme.accent or theme.primary
    surface = theme.panel or theme.surface or ("#303030" if theme.dark else "#e8e8e8")
    return RichTheme(
        {
            "markdown.code": Style(bold=True, color=accent, bgcolor=surface),
            "markdown.code_block": Style(bgcolor=surface),
            "markdown.h1": Style(bold=True, underline=True),
            "markdown.h1.border": Style(color=theme.primary),
        }
    )


class CachedRender:
    """A Rich renderable drawn once per width, then replayed from its segments.

    Textual asks a widget for its lines again on every layout and scroll; for a
    Markdown message that meant parsing and laying out the Markdown again each
    time (most of the CPU while a long reply streamed). The text of a shown
    message does not change, so its lines are kept until the width does.
    """

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable
        self._width: int | None = None
        self._lines: list[list[Any]] = []

    def lines(self, console: Any, options: Any) -> list[list[Any]]:
        """The lines at ``options.max_width``, drawn on the first call at that width."""
        width = options.max_width
        if width != self._width:
            self._lines = console.render_lines(
                self.renderable, options.update(height=None), pad=False
            )
            self._width = width
        return self._lines

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.segment import Segment

        new_line = Segment.line()
        for line in self.lines(console, options):
            yield from line
            yield new_line

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.renderable)


class BlockStack:
    """Markdown drawn in pieces (each a :class:`CachedRender` of whole blocks), one
    under the other with the one blank line a whole render puts between blocks;
    a piece that draws nothing (a link definition, HTML) takes no room."""

    def __init__(self, pieces: list[CachedRender]) -> None:
        self.pieces = pieces

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.segment import Segment

        new_line = Segment.line()
        first = True
        for piece in self.pieces:
            lines = piece.lines(console, options)
            if not lines:
                continue
            if not first:
                yield new_line
            first = False
            for line in lines:
                yield from line
                yield new_line
