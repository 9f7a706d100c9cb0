"""One renderer for streamed and stored replies: the same lines either way."""

from __future__ import annotations

from rich.console import Console
from textual.app import App, ComposeResult

from chat_tui.store import Message
from chat_tui.tui.rendering import (
    CachedRender,
    block_ends,
    hard_breaks,
    render_markdown,
    safe_split,
)
from chat_tui.tui.widgets.chat_view import MessageView, StreamingReply, joined

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


# Code blocks and tables between paragraphs, lists and headings, in every order; the
# second starts with a table (Rich put a blank line and an empty table edge above it).
BLOCKY = [
    "# Title\n\nIntro paragraph.\n\n```python\nx = 1\n```\n\nAfter code.\n\n"
    "| a | b |\n| --- | --- |\n| 1 | 2 |\n\n- one\n- two\n\n```\ncode after a list\n```\n\n"
    "| t | u |\n| --- | --- |\n| 3 | 4 |\n\n## Sub\n\n1. first\n2. second\n\n"
    "| x |\n| --- |\n| 5 |\n\n```sh\nls\n```\n\nThe end.\n",
    "| a | b |\n| --- | --- |\n| 1 | 2 |\n\n```\ncode\n```\n\n- item\n\n---\n\nLast words.\n",
]


def screen_rows(app: App, widget) -> list[tuple[str, bool]]:  # type: ignore[no-untyped-def]
    """The rows of ``widget``'s content on screen: (text, shows a background of its own)."""
    from textual.strip import Strip

    update = app.screen._compositor.render_full_update()
    region = widget.content_region
    own = widget.background_colors[1].rich_color
    rows = []
    for y in range(region.y, region.bottom):
        strip = Strip.join(list(update.strips[y])).crop(region.x, region.right)
        boxed = any(s.style and s.style.bgcolor and s.style.bgcolor != own for s in strip)
        rows.append((strip.text.rstrip(), boxed))
    return rows


def assert_no_double_blank(rows: list[tuple[str, bool]], what: str) -> None:
    blank = [not text.strip() and not boxed for text, boxed in rows]
    for i in range(1, len(blank)):
        assert not (blank[i - 1] and blank[i]), (what, [text for text, _ in rows][: i + 1])


class Shelf(App):
    """Stored replies as the chat shows them."""

    def __init__(self, views: list[MessageView]) -> None:
        super().__init__()
        self.views = views

    def compose(self) -> ComposeResult:
        yield from self.views


def reply_message(text: str) -> Message:
    return Message(
        id=2,
        conversation_id=1,
        seq=11,
        role="assistant",
        content=text,
        state="complete",
        created_at=0.0,
        updated_at=0.0,
        reply_to=1,
    )


async def test_at_most_one_blank_line_around_code_and_tables_streaming_and_stored() -> None:
    for doc in BLOCKY:
        app = Host()
        async with app.run_test(size=(90, 120)) as pilot:
            app.reply.FREEZE_AT = 60  # several frozen pieces, with the CSS gap between them
            for i in range(0, len(doc), 9):
                await app.reply.write(doc[i : i + 9])
                if i % 45 == 0:
                    await app.reply._redraw()
                    await pilot.pause()
                    assert_no_double_blank(screen_rows(app, app.reply), f"streaming at {i}")
            await app.reply.stop()
            await pilot.pause()
            rows = screen_rows(app, app.reply)
            assert_no_double_blank(rows, "streamed")
            assert any("The end" in t or "Last words" in t for t, _ in rows)
            drawn = app.reply.drawn_pieces(doc)
        assert drawn is not None
        # Stored: drawn from the streamed pieces, and drawn whole (as after a restart).
        stored = Shelf(
            [MessageView(reply_message(doc), drawn=drawn), MessageView(reply_message(doc))]
        )
        async with stored.run_test(size=(90, 120)) as pilot:
            await pilot.pause()
            for view in stored.views:
                rows = screen_rows(stored, view)
                assert_no_double_blank(rows, "stored")
                assert sum(boxed for _, boxed in rows) >= 3  # the code blocks are there
            assert screen_rows(stored, stored.views[0]) == screen_rows(stored, stored.views[1])


# Markdown whose blocks are easy to draw apart wrongly: a loose list, a list item's
# second paragraph, indented code, quotes, a rule, HTML, a link definition, a table
# after code, a list and a table opening a piece.
TRICKY = (
    "Intro.\n\n- a\n\n- b\n\n- c\n\n1. one\n\n2. two\n\n- item\n\n  its second paragraph\n\n"
    "After the list.\n\n    indented code\n\n    more of it\n\n> quoted\n\n> again\n\n"
    "para\n\n---\n\n<details>\n\nhidden?\n\n</details>\n\nsee [the docs][1]\n\n"
    "[1]: https://example.com\n\n```\ncode\n```\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n"
    "- starts a piece\n- two\n\n| t |\n| --- |\n| 3 |\n\n## Heading\n\nThe end.\n"
)


async def test_a_reply_drawn_block_by_block_reads_exactly_like_it_drawn_whole() -> None:
    for doc in [TRICKY, REPLY, *BLOCKY]:
        app = Host()
        async with app.run_test(size=(90, 40)):
            app.reply.FREEZE_AT = 100
            for i in range(0, len(doc), 3):
                await app.reply.write(doc[i : i + 3])
                await app.reply._redraw()  # a redraw after every chunk: every split is tried
            await app.reply.stop()
            pieces = app.reply.drawn_pieces(doc)
        assert pieces is not None and len(pieces) > 3
        from rich.console import Group

        for width in (40, 90):
            streamed = plain_lines(Group(*joined(pieces)), width)
            assert streamed == plain_lines(render_markdown(doc), width), doc[:30]


def test_blocks_end_only_where_the_next_line_cannot_continue_the_block() -> None:
    text = "a\n\n- b\n\n- c\n\n  more c\n\n    code\n\n[1]: x\n\n<b>\n\nd\n\n```\ne\n\nf\n```\n\ng"
    ends = block_ends(text, 0)
    assert [text[end : end + 3] for end in ends] == ["d\n\n", "```", "g"]
    assert block_ends("a\n\n-", 0) == []  # an unfinished line that may become a list item
    assert block_ends("a\n\n1", 0) == []
    assert block_ends("a\n\nb", 0) == [3]
