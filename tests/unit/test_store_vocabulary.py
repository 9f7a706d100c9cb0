"""The store's state names and the SQL built from them.

States are a StrEnum, so stored values and string comparisons keep working; the
"earlier message not settled" condition is built from them once, and must read
exactly like the partial index ``messages_unsettled``'s condition or SQLite
stops using that index (every claim would then walk the conversation's history).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from chat_tui.store import USER_STATES, Store
from chat_tui.store.records import (
    EARLIER_UNSETTLED,
    ROLES,
    UNSETTLED,
    MessageState,
    Role,
    sql_list,
)
from chat_tui.store.schema import SCHEMA_V1


def test_state_names_are_the_strings_stored() -> None:
    assert MessageState.QUEUED == "queued"
    assert [str(s) for s in MessageState] == [
        *("queued", "sending", "delivered", "failed", "expired", "cancelled"),
        *("complete", "stopped"),
    ]
    assert USER_STATES == ("queued", "sending", "delivered", "failed", "expired", "cancelled")
    assert {"user", "assistant", "notice"} == ROLES
    assert {MessageState.QUEUED: 1} == {"queued": 1}  # usable as the plain string in dicts
    assert f"{MessageState.SENDING}" == "sending"
    assert (
        sql_list([MessageState.DELIVERED, MessageState.CANCELLED]) == "('delivered', 'cancelled')"
    )
    assert Role.USER.sql == "'user'"


def test_the_order_condition_is_the_partial_index_condition() -> None:
    assert UNSETTLED == "role = 'user' AND state NOT IN ('delivered', 'cancelled')"
    assert f"ON messages(conversation_id, seq)\n    WHERE {UNSETTLED};" in SCHEMA_V1
    assert EARLIER_UNSETTLED == (
        "EXISTS (SELECT 1 FROM messages p WHERE p.conversation_id = m.conversation_id "
        "AND p.role = 'user' AND p.state NOT IN ('delivered', 'cancelled') AND p.seq < m.seq)"
    )


def plan(conn: sqlite3.Connection, sql: str) -> str:
    return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))


async def test_queries_that_keep_order_use_the_partial_index(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    store = await Store.open(path)
    try:
        statements: list[str] = []  # as run, parameters filled in
        await store._db.set_trace_callback(statements.append)
        first, _ = await store.enqueue(None, "first")
        await store.enqueue(first.conversation_id, "second", dedup_window=60)
        await store.next_due()
        assert await store.claim_next("me", lease_seconds=30) is not None
        await store._db.set_trace_callback(None)
    finally:
        await store.close()
    ordered = [s for s in statements if "NOT EXISTS (SELECT 1 FROM messages p" in s]
    dedup = [s for s in statements if "AND content = " in s]
    assert len(ordered) == 2 and len(dedup) == 1  # next_due and claim_next; enqueue's check
    conn = sqlite3.connect(path)
    try:
        for sql in [*ordered, *dedup]:
            assert "USING INDEX messages_unsettled" in plan(conn, sql), sql
        # The check can tell: the same condition with its states in another order
        # means the same but no longer matches the index's text.
        swapped = ordered[0].replace("('delivered', 'cancelled')", "('cancelled', 'delivered')")
        assert swapped != ordered[0]
        assert "messages_unsettled" not in plan(conn, swapped)
    finally:
        conn.close()


def test_every_name_the_store_package_offers_is_there() -> None:
    """The package loads its parts on first use (``store/__init__.py``): each name in
    ``__all__`` must still resolve, to the object its own module defines."""
    import chat_tui.store as store

    for name in store.__all__:
        assert getattr(store, name) is not None, name
    assert set(store.__all__) == {*store._ON_FIRST_USE, "StoreError", "StoreReplaced"}
