"""The SQLite store, on a real database file: schema, durability, order, the outbox."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chat_tui.store import MIGRATIONS, REPLY_OFFSET, Store, StoreError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chat.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path)
    try:
        yield s
    finally:
        await s.close()


def raw(db_path: Path) -> sqlite3.Connection:
    """A second, independent connection: what another process would see."""
    conn = sqlite3.connect(db_path, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- opening ------------------------------------------------------------------------------------


async def test_schema_sets_user_version_and_reopen_keeps_data(db_path: Path) -> None:
    s = await Store.open(db_path)
    msg, _ = await s.enqueue(None, "first question")
    await s.close()
    with contextlib.closing(raw(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"conversations", "messages", "outbox", "drafts", "meta"} <= tables
    # Reopening an up-to-date database must not re-run the migration (it would
    # fail on CREATE TABLE) and must keep the data.
    s = await Store.open(db_path)
    try:
        again = await s.get_message(msg.id)
        assert again is not None and again.content == "first question"
    finally:
        await s.close()


async def test_newer_schema_is_refused_not_touched(db_path: Path) -> None:
    s = await Store.open(db_path)
    await s.close()
    with contextlib.closing(raw(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        conn.commit()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(db_path)
    with contextlib.closing(raw(db_path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1


async def test_wal_and_synchronous_full(store: Store, db_path: Path) -> None:
    # synchronous and busy_timeout are per connection: ask the store's own.
    cur = await store._db.execute("PRAGMA synchronous")
    assert (await cur.fetchone())[0] == 2  # FULL
    cur = await store._db.execute("PRAGMA busy_timeout")
    assert (await cur.fetchone())[0] >= 1000
    # WAL is a property of the file: an independent connection sees it.
    with contextlib.closing(raw(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


async def test_private_permissions_even_with_permissive_umask(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    db = data / "chat.db"
    with umask(0):
        s = await Store.open(db)
        await s.enqueue(None, "secret-ish")
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        for suffix in ("-wal", "-shm"):
            side = Path(str(db) + suffix)
            if side.exists():
                assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0, suffix
    finally:
        await s.close()


async def test_existing_open_data_dir_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    s = await Store.open(data / "chat.db")
    await s.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


async def test_corrupt_database_is_named_and_left_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = os.urandom(8192)
    db_path.write_bytes(garbage)
    with pytest.raises(StoreError) as info:
        await Store.open(db_path)
    assert str(db_path) in str(info.value)
    assert db_path.read_bytes() == garbage
    assert db_path.exists()


# -- enqueue, order, paging -------------------------------------------------------------------


async def test_enqueue_is_durable_for_another_connection(store: Store, db_path: Path) -> None:
    msg, dup = await store.enqueue(None, "hello\nsecond line")
    assert not dup and msg.state == "queued" and msg.role == "user" and msg.key
    # No close, no checkpoint: a fresh connection (another process) sees it now.
    with contextlib.closing(raw(db_path)) as conn:
        row = conn.execute("SELECT * FROM messages WHERE id = ?", (msg.id,)).fetchone()
        assert row["content"] == "hello\nsecond line" and row["state"] == "queued"
        out = conn.execute("SELECT * FROM outbox WHERE message_id = ?", (msg.id,)).fetchone()
        assert out is not None and out["attempts"] == 0
        title = conn.execute(
            "SELECT title FROM conversations WHERE id = ?", (msg.conversation_id,)
        ).fetchone()[0]
    assert title == "hello"


async def test_enqueue_into_missing_conversation_fails_and_writes_nothing(
    store: Store, db_path: Path
) -> None:
    with pytest.raises(StoreError):
        await store.enqueue(12345, "lost?")
    with contextlib.closing(raw(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


async def test_per_conversation_order(store: Store) -> None:
    a, _ = await store.enqueue(None, "a1")
    b, _ = await store.enqueue(None, "b1")
    for i in range(2, 6):
        await store.enqueue(a.conversation_id, f"a{i}")
        await store.enqueue(b.conversation_id, f"b{i}")
    msgs_a = await store.all_messages(a.conversation_id)
    msgs_b = await store.all_messages(b.conversation_id)
    assert [m.content for m in msgs_a] == [f"a{i}" for i in range(1, 6)]
    assert [m.content for m in msgs_b] == [f"b{i}" for i in range(1, 6)]
    seqs = [m.seq for m in msgs_a]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_messages_page_newest_first_then_back(store: Store) -> None:
    first, _ = await store.enqueue(None, "m0")
    cid = first.conversation_id
    for i in range(1, 25):
        await store.enqueue(cid, f"m{i}")
    page = await store.messages_page(cid, limit=10)
    assert [m.content for m in page] == [f"m{i}" for i in range(15, 25)]
    page2 = await store.messages_page(cid, before_seq=page[0].seq, limit=10)
    assert [m.content for m in page2] == [f"m{i}" for i in range(5, 15)]
    page3 = await store.messages_page(cid, before_seq=page2[0].seq, limit=10)
    assert [m.content for m in page3] == [f"m{i}" for i in range(0, 5)]
    assert await store.messages_page(cid, before_seq=page3[0].seq, limit=10) == []


# -- duplicates and expiry ----------------------------------------------------------------------


async def test_dedup_within_window_writes_nothing(store: Store, db_path: Path) -> None:
    t0 = time.time()
    first, _ = await store.enqueue(None, "same text", now=t0)
    cid = first.conversation_id
    again, dup = await store.enqueue(cid, "same text", dedup_window=300, now=t0 + 60)
    assert dup is True and again.id == first.id
    with contextlib.closing(raw(db_path)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
    # Different text is not a duplicate.
    other, dup = await store.enqueue(cid, "other text", dedup_window=300, now=t0 + 61)
    assert dup is False and other.id != first.id


async def test_dedup_not_after_window(store: Store) -> None:
    t0 = time.time()
    first, _ = await store.enqueue(None, "same text", now=t0)
    later, dup = await store.enqueue(
        first.conversation_id, "same text", dedup_window=300, now=t0 + 301
    )
    assert dup is False and later.id != first.id
    assert len(await store.all_messages(first.conversation_id)) == 2


async def test_dedup_not_after_delivered(store: Store) -> None:
    first, _ = await store.enqueue(None, "same text")
    claim = await store.claim_next("me", lease_seconds=30)
    assert claim is not None and claim.message.id == first.id
    assert await store.complete(first.id, "me", "an answer") is not None
    again, dup = await store.enqueue(first.conversation_id, "same text", dedup_window=300)
    assert dup is False and again.id != first.id and again.state == "queued"


async def test_expire_old(store: Store) -> None:
    t0 = time.time()
    done, _ = await store.enqueue(None, "done", now=t0 - 7200)
    claim = await store.claim_next("me", lease_seconds=30, now=t0)
    assert claim is not None and claim.message.id == done.id
    await store.complete(done.id, "me", "reply")
    busy, _ = await store.enqueue(None, "being sent", now=t0 - 7200)
    claim = await store.claim_next("me", lease_seconds=30, now=t0)
    assert claim is not None and claim.message.id == busy.id
    old, _ = await store.enqueue(None, "old", now=t0 - 7200)
    new, _ = await store.enqueue(old.conversation_id, "new", now=t0)

    assert await store.expire_old(0, now=t0) == []  # 0 = never
    expired = await store.expire_old(3600, now=t0)
    assert [m.id for m in expired] == [old.id]
    assert (await store.get_message(old.id)).state == "expired"
    assert (await store.get_message(new.id)).state == "queued"
    assert (await store.get_message(done.id)).state == "delivered"
    assert (await store.get_message(busy.id)).state == "sending"  # its reply may be streaming
    # Never deleted; shown with a resend action: retry brings it back.
    again = await store.retry(old.id)
    assert again.state == "queued" and again.attempts == 0


# -- retry / cancel ------------------------------------------------------------------------------


async def test_retry_and_cancel_transitions(store: Store) -> None:
    m, _ = await store.enqueue(None, "q")
    cid = m.conversation_id
    claim = await store.claim_next("me", lease_seconds=30)
    assert claim is not None
    # Being sent: cancel asks the lease holder to stop (it finishes the cancel).
    asked = await store.cancel(m.id)
    assert asked.state == "sending"
    assert await store.stop_requested(m.id, "me") == "cancel"
    with pytest.raises(StoreError):
        await store.retry(m.id)  # being sent
    failed = await store.fail(m.id, "me", "HTTP 400: bad")
    assert failed is not None and failed.state == "failed" and failed.error == "HTTP 400: bad"

    edited = await store.retry(m.id, text="q, edited")
    assert edited.state == "queued" and edited.content == "q, edited" and edited.error is None
    assert edited.attempts == 0

    cancelled = await store.cancel(m.id)
    assert cancelled.state == "cancelled"
    assert await store.claim_next("me", lease_seconds=30) is None
    # Kept in history.
    assert [x.id for x in await store.all_messages(cid)] == [m.id]
    with pytest.raises(StoreError):
        await store.cancel(m.id)  # already cancelled

    requeued = await store.retry(m.id)
    assert requeued.state == "queued"
    claim = await store.claim_next("me", lease_seconds=30)
    assert claim is not None and claim.message.id == m.id
    await store.complete(m.id, "me", "done")
    with pytest.raises(StoreError):
        await store.retry(m.id)  # delivered
    with pytest.raises(StoreError):
        await store.cancel(m.id)  # delivered
    reply = (await store.all_messages(cid))[-1]
    assert reply.role == "assistant"
    with pytest.raises(StoreError):
        await store.retry(reply.id)  # not a user message
    with pytest.raises(StoreError):
        await store.cancel(999_999)  # no such message


async def test_cancelled_earlier_message_unblocks_later(store: Store) -> None:
    a, _ = await store.enqueue(None, "a")
    b, _ = await store.enqueue(a.conversation_id, "b")
    claim = await store.claim_next("me", lease_seconds=30)
    assert claim.message.id == a.id
    await store.fail(a.id, "me", "HTTP 422: nope")
    assert await store.claim_next("me", lease_seconds=30) is None
    await store.cancel(a.id)
    claim = await store.claim_next("me", lease_seconds=30)
    assert claim is not None and claim.message.id == b.id
    assert claim.history == []  # a cancelled message is not context


# -- the outbox: claims and leases ------------------------------------------------------------


async def test_claim_skips_conversation_blocked_by_failed_message(store: Store) -> None:
    a1, _ = await store.enqueue(None, "a1")
    a2, _ = await store.enqueue(a1.conversation_id, "a2")
    b1, _ = await store.enqueue(None, "b1")
    b2, _ = await store.enqueue(b1.conversation_id, "b2")

    claim = await store.claim_next("me", lease_seconds=30)
    assert claim.message.id == a1.id
    await store.fail(a1.id, "me", "HTTP 400: invalid")

    claim = await store.claim_next("me", lease_seconds=30)
    assert claim is not None and claim.message.id == b1.id
    # b2 waits for b1 (which is still sending), a2 waits for a1 (failed).
    assert await store.claim_next("me", lease_seconds=30) is None
    await store.complete(b1.id, "me", "reply b1")
    claim = await store.claim_next("me", lease_seconds=30)
    assert claim is not None and claim.message.id == b2.id
    assert claim.history == [
        {"role": "user", "content": "b1"},
        {"role": "assistant", "content": "reply b1"},
    ]
    await store.complete(b2.id, "me", "reply b2")
    assert await store.claim_next("me", lease_seconds=30) is None
    assert (await store.get_message(a2.id)).state == "queued"
    assert await store.waiting_count() == 0  # a2 waits for the user, not the network


async def test_claim_respects_next_attempt_at(store: Store) -> None:
    t0 = time.time()
    m, _ = await store.enqueue(None, "later", now=t0)
    claim = await store.claim_next("me", lease_seconds=30, now=t0)
    await store.release(
        m.id, "me", error="HTTP 503", next_attempt_at=t0 + 50, charge_attempt=True, max_attempts=6
    )
    assert await store.claim_next("me", lease_seconds=30, now=t0 + 49) is None
    claim = await store.claim_next("me", lease_seconds=30, now=t0 + 50)
    assert claim is not None and claim.message.attempts == 1


async def test_expired_lease_is_reclaimable_and_old_owner_cannot_complete(
    store: Store, db_path: Path
) -> None:
    t0 = time.time()
    m, _ = await store.enqueue(None, "q", now=t0)
    a = await store.claim_next("A", lease_seconds=5, now=t0)
    assert a is not None and a.owner == "A"
    assert await store.claim_next("B", lease_seconds=5, now=t0 + 4) is None  # still held
    b = await store.claim_next("B", lease_seconds=5, now=t0 + 6)  # A died
    assert b is not None and b.message.id == m.id and b.owner == "B"

    # A comes back to life with a reply: refused, nothing written.
    assert await store.complete(m.id, "A", "reply from A") is None
    assert (
        await store.release(
            m.id, "A", error="x", next_attempt_at=t0, charge_attempt=True, max_attempts=6
        )
        is None
    )
    assert await store.fail(m.id, "A", "x") is None
    assert await store.renew_lease(m.id, "A", t0 + 100) is False
    stored = await store.complete(m.id, "B", "reply from B")
    assert stored is not None and stored.content == "reply from B"
    assert stored.seq == m.seq + REPLY_OFFSET
    # Neither owner can complete again.
    assert await store.complete(m.id, "B", "again") is None
    assert await store.complete(m.id, "A", "again") is None
    with contextlib.closing(raw(db_path)) as conn:
        replies = conn.execute("SELECT content FROM messages WHERE role = 'assistant'").fetchall()
        assert [r[0] for r in replies] == ["reply from B"]
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


async def test_unique_index_rejects_a_second_reply(store: Store, db_path: Path) -> None:
    m, _ = await store.enqueue(None, "q")
    await store.claim_next("me", lease_seconds=30)
    await store.complete(m.id, "me", "the reply")
    with contextlib.closing(raw(db_path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO messages (conversation_id, seq, role, content, state, created_at, "
            "updated_at, reply_to) VALUES (?, ?, 'assistant', 'dup', 'complete', 0, 0, ?)",
            (m.conversation_id, m.seq + REPLY_OFFSET, m.id),
        )


async def test_release_charges_attempts_and_fails_at_max(store: Store) -> None:
    t0 = time.time()
    m, _ = await store.enqueue(None, "q", now=t0)
    for n in range(1, 3):
        await store.claim_next("me", lease_seconds=30, now=t0)
        out = await store.release(
            m.id,
            "me",
            error=f"HTTP 500 #{n}",
            next_attempt_at=t0,
            charge_attempt=True,
            max_attempts=3,
        )
        assert out.state == "queued" and out.attempts == n and out.error == f"HTTP 500 #{n}"
    # Offline waits cost nothing.
    await store.claim_next("me", lease_seconds=30, now=t0)
    out = await store.release(
        m.id, "me", error="offline", next_attempt_at=t0, charge_attempt=False, max_attempts=3
    )
    assert out.state == "queued" and out.attempts == 2
    await store.claim_next("me", lease_seconds=30, now=t0)
    out = await store.release(
        m.id, "me", error="HTTP 500 #3", next_attempt_at=t0, charge_attempt=True, max_attempts=3
    )
    assert out.state == "failed" and out.attempts == 3
    assert await store.claim_next("me", lease_seconds=30, now=t0 + 1000) is None


async def test_release_all_gives_back_leases(store: Store) -> None:
    a, _ = await store.enqueue(None, "a")
    b, _ = await store.enqueue(None, "b")
    assert (await store.claim_next("me", lease_seconds=300)).message.id == a.id
    assert (await store.claim_next("me", lease_seconds=300)).message.id == b.id
    assert await store.claim_next("other", lease_seconds=300) is None
    assert await store.release_all("me") == 2
    assert {(await store.get_message(i)).state for i in (a.id, b.id)} == {"queued"}
    claim = await store.claim_next("other", lease_seconds=300)
    assert claim is not None and claim.message.id == a.id


async def test_counts_and_queue_items(store: Store) -> None:
    a, _ = await store.enqueue(None, "a")
    b, _ = await store.enqueue(None, "b")
    await store.claim_next("me", lease_seconds=30)
    await store.fail(a.id, "me", "HTTP 400: no")
    counts = await store.counts()
    assert counts == {
        "queued": 1,
        "sending": 0,
        "delivered": 0,
        "failed": 1,
        "expired": 0,
        "cancelled": 0,
    }
    items = {i.message.id: i.as_json() for i in await store.queue_items()}
    assert items[a.id]["state"] == "failed" and items[a.id]["last_error"] == "HTTP 400: no"
    assert items[b.id]["state"] == "queued"


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_no_transaction(
    tmp_path: Path,
) -> None:
    """Found by the soak: a lease renewal cancelled inside BEGIN IMMEDIATE (another
    process was writing) left the transaction open, so every later write failed and
    other processes were locked out."""
    import asyncio
    import sqlite3
    import time

    path = tmp_path / "chat.db"
    store = await Store.open(path)
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    try:
        message, _ = await store.enqueue(None, "hello")
        assert await store.claim_next("me", lease_seconds=30) is not None
        other.execute("BEGIN IMMEDIATE")  # another process is writing right now
        renew = asyncio.create_task(store.renew_lease(message.id, "me", time.time() + 30))
        await asyncio.sleep(0.2)  # the renewal now waits inside BEGIN (busy_timeout)
        renew.cancel()
        await asyncio.sleep(0.05)
        other.execute("COMMIT")  # the queued BEGIN may now run
        await asyncio.gather(renew, return_exceptions=True)
        reply = await store.complete(message.id, "me", "echo: hello")
        assert reply is not None and reply.content == "echo: hello"
        other.execute("BEGIN IMMEDIATE")  # and other processes can still write
        other.execute("ROLLBACK")
    finally:
        other.close()
        await store.close()


async def test_sending_keeps_the_other_composers_drafts(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "chat.db")
    try:
        first, _ = await store.enqueue(None, "start")
        await store.save_draft(None, "a new conversation, half typed")
        await store.save_draft(first.conversation_id, "reply being typed")
        await store.enqueue(first.conversation_id, "reply being typed")
        assert await store.load_draft(first.conversation_id) == ""
        assert await store.load_draft(None) == "a new conversation, half typed"
        await store.enqueue(None, "a new conversation, half typed")
        assert await store.load_draft(None) == ""
    finally:
        await store.close()


async def test_waiting_count_ignores_messages_behind_a_failed_or_expired_one(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "chat.db")
    try:
        a1, _ = await store.enqueue(None, "a1")
        await store.enqueue(a1.conversation_id, "a2")
        await store.enqueue(None, "b1")
        c1, _ = await store.enqueue(None, "c1", now=1.0)  # long ago
        await store.enqueue(c1.conversation_id, "c2")
        assert await store.waiting_count() == 5
        claim = await store.claim_next("me", lease_seconds=30)
        assert claim is not None and claim.message.id == a1.id
        await store.fail(a1.id, "me", "HTTP 400: no")
        assert await store.waiting_count() == 3  # a2 waits for the user; b1, c1, c2 do not
        expired = await store.expire_old(3600)
        assert [m.id for m in expired] == [c1.id]
        assert await store.waiting_count() == 1  # only b1: c2 is behind the expired c1
        await store.cancel(a1.id)
        assert await store.waiting_count() == 2  # a2 is free again
    finally:
        await store.close()
