"""Issue 12, bug 4: Ctrl+F → Enter on a hit in a conversation of tall messages
lands on that message, highlighted and on screen (the page around the hit is
mounted first; scrolling to it before that page was laid out used the
geometry of the page before, and the highlight ended up off-screen)."""

from __future__ import annotations

from pathlib import Path

from chat_tui.tui.app import ChatApp
from chat_tui.tui.widgets.chat_view import ChatView
from tests.fault_server import FaultServer
from tests.helpers import app_settings, seed_history, views, wait_until

HIT = 5  # an early message: far from both ends of the page mounted around it


def tall_answer(i: int) -> str:
    word = "needlepoint" if i == HIT else "haystack"
    # Lines of every length near the chat's width: how many wrap depends on the last
    # column or two, so the page's geometry changes when the scrollbar appears.
    paragraphs = "\n\n".join(
        f"Paragraph {n:02} of answer {i:02} " + "x" * (34 + (n + i) % 9) for n in range(17)
    )
    return f"{word} {i}\n\n{paragraphs}"  # 35 lines or more on screen


async def test_search_lands_on_the_hit_among_tall_messages(
    server: FaultServer, tmp_path: Path
) -> None:
    pairs = [(f"question {i}", tall_answer(i)) for i in range(60)]
    await seed_history(tmp_path / "chat.db", pairs, title="tall messages")
    await seed_history(tmp_path / "chat.db", [("other", "short")], title="newest")
    app = ChatApp(app_settings(server, tmp_path))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: len(views(app)) == 2)  # the newest conversation
        await pilot.press("ctrl+f", *"needlepoint")
        await pilot.pause(0.5)
        await pilot.press("enter", "enter")
        await wait_until(pilot, lambda: any(v.has_class("found") for v in views(app)))
        await pilot.pause(0.5)
        chat = app.query_one(ChatView)
        found = [v for v in views(app) if v.has_class("found")]
        assert len(found) == 1
        assert found[0].message.content.startswith(f"needlepoint {HIT}")
        assert found[0].region.height > 30  # tall indeed
        # On screen, and scrolled to the top of the chat as the app means to (a
        # scroll computed on the geometry before the page's layout was a few
        # lines off, or hundreds).
        top = found[0].virtual_region.y - chat.scroll_y
        assert 0 <= top < chat.scrollable_content_region.height, (top, chat.scroll_y)
        assert chat.scrollable_content_region.intersection(found[0].region).height > 0
        assert top == 0, top
