"""Pages of a conversation say whether older messages exist, so callers need not
guess from ``seq`` values or page sizes."""

from __future__ import annotations

from pathlib import Path

from chat_tui.store import Store


async def conversation(store: Store, turns: int) -> int:
    """A conversation of ``turns`` answered questions: 2 * turns messages."""
    cid = None
    for i in range(turns):
        message, _ = await store.enqueue(cid, f"question {i}")
        cid = message.conversation_id
        claim = await store.claim_next("me", lease_seconds=30)
        assert claim is not None and claim.message.id == message.id
        assert await store.complete(message.id, "me", f"answer {i}") is not None
    assert cid is not None
    return cid


async def test_a_page_knows_whether_older_messages_exist(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "chat.db")
    try:
        cid = await conversation(store, 5)  # 10 messages
        newest = await store.page(cid, limit=4)
        assert [m.content for m in newest.messages] == [
            *("question 3", "answer 3", "question 4", "answer 4")
        ]
        assert newest.has_older
        assert newest.messages == await store.messages_page(cid, limit=4)

        older = await store.page(cid, before_seq=newest.messages[0].seq, limit=4)
        assert [m.content for m in older.messages] == [
            *("question 1", "answer 1", "question 2", "answer 2")
        ]
        assert older.has_older
        oldest = await store.page(cid, before_seq=older.messages[0].seq, limit=4)
        assert [m.content for m in oldest.messages] == ["question 0", "answer 0"]
        assert not oldest.has_older

        # Exactly the page size left: nothing older (a full page is no sign of more).
        exact = await store.page(cid, before_seq=older.messages[0].seq, limit=2)
        assert len(exact.messages) == 2 and not exact.has_older
        assert not (await store.page(cid, limit=10)).has_older
        assert (await store.page(cid, limit=9)).has_older
        empty = await store.page(cid, before_seq=oldest.messages[0].seq)
        assert empty.messages == [] and not empty.has_older
    finally:
        await store.close()


async def test_a_page_around_a_message_knows_whether_older_ones_exist(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "chat.db")
    try:
        cid = await conversation(store, 5)
        everything = await store.all_messages(cid)
        first, middle = everything[0], everything[6]  # question 0, question 3

        at_first = await store.page_around(cid, first.seq, limit=4)
        assert at_first.messages[0] == first and not at_first.has_older
        at_middle = await store.page_around(cid, middle.seq, limit=4)
        assert [m.content for m in at_middle.messages] == [
            *("question 2", "answer 2", "question 3", "answer 3")
        ]
        assert at_middle.has_older
        assert at_middle.messages == await store.messages_around(cid, middle.seq, limit=4)
        # Just enough before it to fill the first half: nothing older.
        second = everything[2]  # question 1: two messages before it
        at_second = await store.page_around(cid, second.seq, limit=4)
        assert at_second.messages[0] == first and not at_second.has_older
    finally:
        await store.close()
