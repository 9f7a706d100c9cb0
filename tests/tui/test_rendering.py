"""One renderer for streamed and stored replies: the same lines either way."""

from __future__ import annotations

from rich.console import Console
from textual.app import App, ComposeResult

from chat_tui.store import Message
from chat_tui.tui.rendering import CachedRender, hard_breaks, render_markdown, safe_split
from chat_tui.tui.widgets.chat_view import StreamingReply, joined

REPLY = (
    "## Heading\n\nFirst paragraph with `code`.\n\n"
    + "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(12))
    + "\n\n```python\nx = 1\n\ny = 2\n```\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\nThe end.\n"
)


def plain_lines(renderable: object, width: int = 80) -> list[str]:
    console = Console(width=width, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    lines = console.render_lines(renderable, console.options, pad=False)
    return ["".join(s.text for s in line).rstrip() for line in lines]


def question() -> Message:
    return Message(
        id=1,
        conversation_id=1,
        seq=10,
        role="user",
        content="q",
        state="sending",
        created_at=0.0,
        updated_at=0.0,
    )


class Host(App):
    def __init__(self) -> None:
        super().__init__()
        self.reply = StreamingReply(question())

    def compose(self) -> ComposeResult:
        yield self.reply


async def test_streamed_pieces_read_exactly_like_the_whole_reply() -> None:
    app = Host()
    async with app.run_test(size=(90, 40)) as pilot:
        for i in range(0, len(REPLY), 7):  # chunks as a server sends them
            await app.reply.write(REPLY[i : i + 7])
            if i % 700 == 0:
                await app.reply._redraw()  # a redraw lands mid-stream
        await app.reply.stop()
        await pilot.pause()
        pieces = app.reply.drawn_pieces(REPLY)
        assert pieces is not None and len(pieces) > 1  # it was drawn in several pieces
        from rich.console import Group

        assert plain_lines(Group(*joined(pieces))) == plain_lines(render_markdown(REPLY))
        assert app.reply.drawn_pieces(REPLY + "changed") is None


def test_safe_split_never_cuts_a_code_fence() -> None:
    text = "para\n\n```\ncode\n\nmore code\n"
    assert safe_split(text, 0) == len("para\n\n")
    assert safe_split(text + "```\n\nafter", 0) == len(text + "```\n\n")


def test_headings_are_left_aligned_and_user_line_breaks_kept() -> None:
    assert plain_lines(render_markdown("# Title\n\ntext"), width=40)[0] == "Title"
    assert plain_lines(render_markdown(hard_breaks("one\ntwo"))) == ["one", "two"]


def test_cached_render_draws_once_per_width() -> None:
    calls = []

    class Counting:
        def __rich_console__(self, console, options):  # type: ignore[no-untyped-def]
            calls.append(options.max_width)
            yield "hello"

    cached = CachedRender(Counting())
    plain_lines(cached, 30)
    plain_lines(cached, 30)
    plain_lines(cached, 50)
    assert calls == [30, 50]
