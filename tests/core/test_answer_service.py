"""The offline-answer service listens for stored replies: a question answered after its
index was built is offered while offline, with no call from the core to add it."""

from __future__ import annotations

from typing import Any

import pytest

from chat_tui.core import Core
from chat_tui.events import ReplyStored
from tests.fault_server import FaultServer
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


async def test_a_reply_stored_after_the_index_was_built_is_offered_offline(
    core: Core, fault_server: FaultServer, events: list[Any]
) -> None:
    fault_server.stop()
    core.reachability.report_unreachable("cable pulled")
    first = await core.sender.submit(None, "How do I boil an egg?")
    # The first offline question builds the index, from a history with no replies.
    assert await core.answer_while_offline(first.message) is None

    fault_server.start()
    core.reachability.probe_now()
    assert await core.reachability.wait_online(10)
    core.start_delivery()
    await wait_until(
        lambda: any(isinstance(e, ReplyStored) for e in events), what="the reply stored"
    )
    stored = next(e for e in events if isinstance(e, ReplyStored))

    fault_server.stop()
    core.reachability.report_unreachable("cable pulled again")
    again = await core.sender.submit(stored.question.conversation_id, "how to boil an egg")
    await wait_until(lambda: core.answer_while_offline(again.message), what="an offline answer")
    notices = [
        m
        for m in await core.store.all_messages(stored.question.conversation_id)
        if m.role == "notice"
    ]
    assert [n.content for n in notices] == [stored.reply.content]
    assert notices[0].meta["kind"] == "offline_answer"
    assert notices[0].meta["source_message_id"] == first.message.id
