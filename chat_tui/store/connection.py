"""The store's connection: opening, configuring, migrating and closing the
database, and the guards every query runs under.

Durability decisions (see docs/architecture.md, "One path for every message"):

* WAL with ``synchronous=FULL``: a laptop losing power is a power loss, and a
  message the UI shows as queued must survive it.
* Every write runs in ``BEGIN IMMEDIATE`` so two processes never deadlock on a
  read-to-write upgrade; ``busy_timeout`` makes them wait for each other.
* One connection per process, guarded by an asyncio lock: aiosqlite runs
  statements on one thread, and two coroutines must never interleave the
  statements of their transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Self

import aiosqlite

from .errors import StoreError
from .schema import MIGRATIONS


def _secure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)


class StoreConnection:
    """The connection and its guards, shared by the parts of the store (``Store``)."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self.closed = False
        self._identity = _file_identity(path)  # (device, inode) of the file we opened

    # -- opening and closing ------------------------------------------------

    @classmethod
    async def open(cls, path: Path | str) -> Self:
        path = Path(path)
        try:
            _secure_dir(path.parent)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {path.parent}: {exc.strerror}"
            ) from None
        if not path.exists():
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            except OSError as exc:
                raise StoreError(f"cannot create database {path}: {exc.strerror}") from None
        try:
            db = await aiosqlite.connect(path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        db.row_factory = sqlite3.Row
        store = cls(db, path)
        try:
            await store._configure()
            await store._migrate()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StoreError(_explain_db_error(path, exc)) from None
        except StoreError:
            # e.g. a newer schema: close, or aiosqlite's thread keeps the process alive.
            await db.close()
            raise
        with contextlib.suppress(OSError):
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(path) + suffix)
                if p.exists():
                    os.chmod(p, 0o600)
        return store

    async def _configure(self) -> None:
        await self._db.execute("PRAGMA busy_timeout = 10000")
        await self._db.execute("PRAGMA foreign_keys = ON")
        row = await (await self._db.execute("PRAGMA journal_mode = WAL")).fetchone()
        if row is None or str(row[0]).lower() != "wal":
            # e.g. a read-only directory: WAL needs to create -wal/-shm files.
            raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={row and row[0]})")
        await self._db.execute("PRAGMA synchronous = FULL")

    async def _migrate(self) -> None:
        version = await self._scalar("PRAGMA user_version")
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} was written by a newer chat-tui (schema {version}); "
                "upgrade chat-tui to open it"
            )
        for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with self._lock:
                # executescript commits first; wrap the script in our own
                # transaction so a crash mid-migration leaves the old version.
                await self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {target};\nCOMMIT;"
                )

    async def close(self) -> None:
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(sqlite3.Error):
                # Fold the WAL back so the database file stands alone. Only if
                # nobody is writing: don't make the exit wait out busy_timeout.
                await self._db.execute("PRAGMA busy_timeout = 0")
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._db.close()

    def file_replaced(self) -> str | None:
        """None while the path still names the file we opened; else what happened, in
        plain words (deleted, or replaced by another file). Writes after that would
        go to a file nobody else sees."""
        now = _file_identity(self.path)
        if self._identity is None or now == self._identity:
            return None
        if now is None:
            return f"the database {self.path} was deleted while chat-tui was running"
        return f"the database {self.path} was replaced by another file while chat-tui was running"

    # -- helpers --------------------------------------------------------------

    async def _scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = await (await self._db.execute(sql, tuple(params))).fetchone()
        return None if row is None else row[0]

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"the database {self.path} is closed")

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            self._check_open()
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(_explain_db_error(self.path, exc)) from None

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            self._check_open()
            try:
                # BEGIN sits inside the rollback guard: aiosqlite runs a queued
                # statement even when its await is cancelled, so a cancelled
                # BEGIN would otherwise leave a transaction (and the write lock)
                # open for every later write of this process.
                await self._db.execute("BEGIN IMMEDIATE")
                yield self._db
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                raise StoreError(_explain_db_error(self.path, exc)) from None
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                raise
            try:
                await self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(self._db.execute("ROLLBACK"))
                raise StoreError(_explain_db_error(self.path, exc)) from None

    # -- small values the program remembers (caches), change detection ------------

    async def set_meta(self, key: str, value: str) -> None:
        async with self._write() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def get_meta(self, key: str) -> str | None:
        async with self._read():
            return await self._scalar("SELECT value FROM meta WHERE key = ?", (key,))

    async def data_version(self) -> int:
        """Changes when another connection commits: cheap cross-process polling."""
        async with self._read():
            return await self._scalar("PRAGMA data_version")


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _explain_db_error(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"the database {path} is locked by another program; try again or close it"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"the database {path} is damaged or not a chat-tui database ({text}); "
            "it was left untouched — move it aside to start fresh"
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text or "WAL" in text:
        return f"cannot write the database {path} ({text}); check that its folder is writable"
    if "disk" in text and "full" in text:
        return (
            f"the disk holding {path} is full; free some space (what was saved before stays saved)"
        )
    return f"database error in {path}: {text}"
