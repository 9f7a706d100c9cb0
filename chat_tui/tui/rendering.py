"""How message text is drawn: one Markdown renderer for replies, the user's own
messages, and a reply while it streams, so all three look the same.

Rich's Markdown is used (one renderable per message, far cheaper than
Textual's Markdown widget, which mounts a dozen widgets per reply). Two
changes to its defaults: headings are left-aligned, and code follows the app's
theme (a light Pygments style in light themes, where monokai and Rich's
"cyan on black" inline code read as black boxes). Rich is imported lazily: the
first frame of an empty window does not need it.
"""

from __future__ import annotations

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


def _left_aligned_markdown() -> type:
    global _markdown_class
    if _markdown_class is None:
        from rich.markdown import Heading, Markdown

        class LeftHeading(Heading):
            LEVEL_ALIGN = dict.fromkeys(("h1", "h2", "h3", "h4", "h5", "h6"), "left")

        class ChatMarkdown(Markdown):
            elements = {**Markdown.elements, "heading_open": LeftHeading}

        _markdown_class = ChatMarkdown
    return _markdown_class


def render_markdown(text: str, *, dark: bool | None = None) -> Markdown:
    """``text`` (already sanitized) as Markdown. Links show their target and are
    never opened; Rich markup in the text stays literal."""
    cls = _left_aligned_markdown()
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


def safe_split(text: str, start: int) -> int:
    """The end of the last complete Markdown block in ``text[start:]``: the last
    blank line that is outside a code fence (``start`` if there is none).

    Used while a reply streams: everything before it is drawn once and kept;
    only the part after it is redrawn as more arrives.
    """
    fenced = False
    split = start
    pos = start
    for line in text[start:].split("\n")[:-1]:  # the last piece is an unfinished line
        pos += len(line) + 1
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and not line.strip():
            split = pos
    return split


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

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.segment import Segment

        width = options.max_width
        if width != self._width:
            self._lines = console.render_lines(
                self.renderable, options.update(height=None), pad=False
            )
            self._width = width
        new_line = Segment.line()
        for line in self._lines:
            yield from line
            yield new_line

    def __rich_measure__(self, console: Any, options: Any) -> Any:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.renderable)
