"""A model-based test of the outbox: random sequences of Store operations on a
real SQLite file, checked against a small in-memory model after every step.

The model is the contract of docs/architecture.md steps 1-8 in a few dicts: which message
a claim must return, what each transition does, which states exist. Leases are
driven with an explicit clock (``now``), so expiry is exercised without
waiting.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from chat_tui.store import REPLY_OFFSET, USER_STATES, Store, StoreError

pytestmark = pytest.mark.timeout(120)

OWNERS = ("A", "B")
LEASE = 10.0
MAX_ATTEMPTS = 3
DEDUP_WINDOW = 300.0
OUTBOX_STATES = {"queued", "sending", "failed", "expired"}
SETTLED = {"delivered", "cancelled"}


@dataclass
class Msg:
    id: int
    cid: int
    seq: int
    text: str
    created_at: float
    state: str = "queued"
    attempts: int = 0
    next_attempt_at: float = 0.0
    owner: str | None = None
    lease_expires: float | None = None


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="chat-tui-model-"))
        self.db_path = self.dir / "chat.db"
        self.store: Store = self.run(Store.open(self.db_path))
        # Ahead of the wall clock, so retry()'s time.time() is never in "our" future.
        self.now = time.time() + 10_000
        self.msgs: dict[int, Msg] = {}
        self.conversations: list[int] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- model helpers ---------------------------------------------------------------------

    def in_conv(self, cid: int) -> list[Msg]:
        return sorted((m for m in self.msgs.values() if m.cid == cid), key=lambda m: m.seq)

    def blocked(self, m: Msg) -> bool:
        return any(p.seq < m.seq and p.state not in SETTLED for p in self.in_conv(m.cid))

    def expected_claim(self) -> Msg | None:
        due = [
            m
            for m in self.msgs.values()
            if m.state in ("queued", "sending")
            and m.next_attempt_at <= self.now
            and (m.lease_expires is None or m.lease_expires <= self.now)
            and not self.blocked(m)
        ]
        return min(due, key=lambda m: m.id) if due else None

    def pick(self, index: int, states: set[str] | None = None) -> Msg | None:
        pool = sorted(
            (m for m in self.msgs.values() if states is None or m.state in states),
            key=lambda m: m.id,
        )
        return pool[index % len(pool)] if pool else None

    def check_message(self, m: Msg) -> None:
        got = self.run(self.store.get_message(m.id))
        assert got is not None
        assert (got.state, got.conversation_id, got.seq) == (m.state, m.cid, m.seq)
        if m.state in OUTBOX_STATES:
            assert got.attempts == m.attempts

    # -- rules -------------------------------------------------------------------------------

    @rule(
        target_new=st.booleans(),
        conv=st.integers(0, 10),
        text=st.sampled_from(["hello", "again", "why?"]),
        dedup=st.booleans(),
    )
    def enqueue(self, target_new: bool, conv: int, text: str, dedup: bool) -> None:
        cid = (
            None
            if target_new or not self.conversations
            else self.conversations[conv % len(self.conversations)]
        )
        window = DEDUP_WINDOW if dedup else 0.0
        expected_dup = None
        if cid is not None and window > 0:
            same = [
                m
                for m in self.in_conv(cid)
                if m.state in ("queued", "sending")
                and m.text == text
                and m.created_at >= self.now - window
            ]
            expected_dup = same[-1] if same else None
        msg, dup = self.run(self.store.enqueue(cid, text, dedup_window=window, now=self.now))
        if expected_dup is not None:
            assert dup is True and msg.id == expected_dup.id
            return
        assert dup is False and msg.state == "queued" and msg.content == text
        if cid is None:
            assert msg.conversation_id not in self.conversations
            self.conversations.append(msg.conversation_id)
        else:
            assert msg.conversation_id == cid
            assert msg.seq > max(m.seq for m in self.in_conv(cid))
        self.msgs[msg.id] = Msg(
            msg.id, msg.conversation_id, msg.seq, text, self.now, next_attempt_at=self.now
        )

    @rule(owner=st.sampled_from(OWNERS))
    def claim(self, owner: str) -> None:
        expected = self.expected_claim()
        claim = self.run(self.store.claim_next(owner, lease_seconds=LEASE, now=self.now))
        if expected is None:
            assert claim is None
            return
        assert claim is not None and claim.message.id == expected.id
        assert claim.owner == owner and claim.message.state == "sending"
        # Never a message with an unsettled earlier one (checked against the db too).
        earlier = self.run(self.store.all_messages(expected.cid))
        assert all(p.state in SETTLED for p in earlier if p.role == "user" and p.seq < expected.seq)
        # The context is exactly the delivered turns before it.
        turns: list[dict[str, str]] = []
        for p in self.in_conv(expected.cid):
            if p.seq < expected.seq and p.state == "delivered":
                turns += [
                    {"role": "user", "content": p.text},
                    {"role": "assistant", "content": f"reply to {p.id}"},
                ]
        assert claim.history == turns
        expected.state, expected.owner = "sending", owner
        expected.lease_expires = self.now + LEASE

    @precondition(lambda self: any(m.state == "sending" for m in self.msgs.values()))
    @rule(index=st.integers(0, 50), owner=st.sampled_from(OWNERS))
    def complete(self, index: int, owner: str) -> None:
        m = self.pick(index, {"sending"})
        assert m is not None
        reply = self.run(self.store.complete(m.id, owner, f"reply to {m.id}"))
        if m.owner != owner:
            assert reply is None  # not the lease holder: no second reply, ever
            return
        assert reply is not None and reply.seq == m.seq + REPLY_OFFSET
        m.state, m.owner, m.lease_expires = "delivered", None, None

    @precondition(lambda self: any(m.state == "sending" for m in self.msgs.values()))
    @rule(
        index=st.integers(0, 50),
        owner=st.sampled_from(OWNERS),
        charge=st.booleans(),
        delay=st.sampled_from([0.0, 1.0, 30.0]),
    )
    def release(self, index: int, owner: str, charge: bool, delay: float) -> None:
        m = self.pick(index, {"sending"})
        assert m is not None
        out = self.run(
            self.store.release(
                m.id,
                owner,
                error="transient",
                next_attempt_at=self.now + delay,
                charge_attempt=charge,
                max_attempts=MAX_ATTEMPTS,
            )
        )
        if m.owner != owner:
            assert out is None
            return
        m.attempts += int(charge)
        m.state = "failed" if m.attempts >= MAX_ATTEMPTS else "queued"
        m.owner = m.lease_expires = None
        m.next_attempt_at = self.now + delay
        assert out is not None and out.state == m.state and out.attempts == m.attempts

    @precondition(lambda self: bool(self.msgs))
    @rule(index=st.integers(0, 50), owner=st.sampled_from((*OWNERS, None)))
    def fail(self, index: int, owner: str | None) -> None:
        m = self.pick(index)
        assert m is not None
        out = self.run(self.store.fail(m.id, owner, "permanent"))
        if m.state not in OUTBOX_STATES or (owner is not None and m.owner != owner):
            assert out is None
            return
        assert out is not None and out.state == "failed" and out.error == "permanent"
        m.state, m.owner, m.lease_expires = "failed", None, None

    @precondition(lambda self: bool(self.msgs))
    @rule(index=st.integers(0, 50))
    def retry(self, index: int) -> None:
        m = self.pick(index)
        assert m is not None
        if m.state in ("sending", "delivered"):
            with pytest.raises(StoreError):
                self.run(self.store.retry(m.id))
            return
        out = self.run(self.store.retry(m.id))
        assert out.state == "queued" and out.attempts == 0
        assert out.next_attempt_at is not None and out.next_attempt_at <= self.now
        m.state, m.attempts, m.owner, m.lease_expires = "queued", 0, None, None
        m.next_attempt_at = out.next_attempt_at

    @precondition(lambda self: bool(self.msgs))
    @rule(index=st.integers(0, 50))
    def cancel(self, index: int) -> None:
        m = self.pick(index)
        assert m is not None
        if m.state == "sending" and m.lease_expires is not None and m.lease_expires > self.now:
            # A live sender is asked to stop; it finishes the cancel itself.
            assert self.run(self.store.cancel(m.id, now=self.now)).state == "sending"
            return
        if m.state not in ("queued", "failed", "expired", "sending"):
            with pytest.raises(StoreError):
                self.run(self.store.cancel(m.id, now=self.now))
            return
        assert self.run(self.store.cancel(m.id, now=self.now)).state == "cancelled"
        m.owner, m.lease_expires = None, None
        m.state = "cancelled"

    @rule(max_age=st.sampled_from([0.0, 5.0, 50.0]))
    def expire(self, max_age: float) -> None:
        self._expire(max_age)

    @precondition(lambda self: bool(self.msgs))
    @rule(index=st.integers(0, 50))
    def expire_older_than(self, index: int) -> None:
        """Expire with a max_age that just reaches one message (in whatever state)."""
        m = self.pick(index)
        assert m is not None
        self._expire(max(self.now - m.created_at - 1e-3, 1e-3))

    def _expire(self, max_age: float) -> None:
        expired = self.run(self.store.expire_old(max_age, now=self.now))
        expected = (
            set()
            if max_age <= 0
            else {
                m.id
                for m in self.msgs.values()
                if m.state == "queued" and m.created_at < self.now - max_age
            }
        )
        assert {e.id for e in expired} == expected
        for i in expected:
            self.msgs[i].state = "expired"

    @rule(owner=st.sampled_from(OWNERS))
    def release_all(self, owner: str) -> None:
        n = self.run(self.store.release_all(owner))
        mine = [m for m in self.msgs.values() if m.owner == owner]
        assert n == len(mine)
        for m in mine:
            m.state, m.owner, m.lease_expires = "queued", None, None

    @rule(dt=st.sampled_from([0.5, 2.0, 11.0, 40.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def states_are_allowed(self) -> None:
        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute("SELECT role, state FROM messages").fetchall()
        for role, state in rows:
            assert state in (USER_STATES if role == "user" else ("complete",)), (role, state)

    @invariant()
    def at_most_one_sending_per_conversation(self) -> None:
        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute(
                "SELECT conversation_id, COUNT(*) FROM messages "
                "WHERE role = 'user' AND state = 'sending' GROUP BY conversation_id"
            ).fetchall()
        assert all(n <= 1 for _, n in rows), rows

    @invariant()
    def delivered_have_exactly_one_reply(self) -> None:
        with sqlite3.connect(self.db_path) as conn:
            rows = conn.execute(
                "SELECT u.id, u.state, (SELECT COUNT(*) FROM messages a "
                " WHERE a.conversation_id = u.conversation_id AND a.role = 'assistant' "
                " AND (a.reply_to = u.id OR a.seq = u.seq + ?)) AS replies "
                "FROM messages u WHERE u.role = 'user'",
                (REPLY_OFFSET,),
            ).fetchall()
        for mid, state, replies in rows:
            assert replies == (1 if state == "delivered" else 0), (mid, state, replies)

    @invariant()
    def messages_match_model(self) -> None:
        for m in self.msgs.values():
            self.check_message(m)

    @invariant()
    def counts_match_model(self) -> None:
        counts = self.run(self.store.counts())
        expected = {s: 0 for s in USER_STATES}
        for m in self.msgs.values():
            expected[m.state] += 1
        assert counts == expected

    @invariant()
    def outbox_matches_model(self) -> None:
        items = self.run(self.store.queue_items())
        assert {i.message.id: i.message.state for i in items} == {
            m.id: m.state for m in self.msgs.values() if m.state in OUTBOX_STATES
        }
        for item in items:
            m = self.msgs[item.message.id]
            assert item.lease_owner == m.owner
            assert item.message.attempts == m.attempts
        waiting = [
            m
            for m in self.msgs.values()
            if m.state in ("queued", "sending")
            and not any(
                p.seq < m.seq and p.state in ("failed", "expired") for p in self.in_conv(m.cid)
            )
        ]
        assert self.run(self.store.waiting_count()) == len(waiting)


QueueMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueModel = QueueMachine.TestCase
