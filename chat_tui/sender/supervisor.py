"""When the sender hits trouble: say so, wait a little, go on; restart it if it dies.

The loop catches every error itself (docs/architecture.md "A sick disk"): it
reports it as a ``DeliveryProblem`` event, waits ``TROUBLE_FIRST`` doubling to
``TROUBLE_CAP``, and goes on. Should it still end with an error, ``supervise``
logs it, shows it and starts it again, so delivery never stops until the
process does (or the database file was replaced: writing on would be lost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..events import DeliveryProblem, SenderEvent
from ..store import StoreReplaced

if TYPE_CHECKING:
    from .loop import Sender

log = logging.getLogger(__name__)

# After the database refused a write (locked, disk full) or the loop hit a bug: wait
# this long, doubling up to TROUBLE_CAP, before trying again. Short, so delivery
# resumes within seconds of the fault clearing.
TROUBLE_FIRST = 0.25
TROUBLE_CAP = 2.0
RESTART_FIRST = 0.5  # seconds before a sender that died is started again, doubling…
RESTART_CAP = 10.0  # …up to this


def describe_store_error(exc: Exception) -> str:
    return f"cannot write the database: {exc}; retrying"


class Problems:
    """What keeps the sender from going on, by the part that has it; the listeners
    hear the latest one (None once every part is clear)."""

    def __init__(self, emit: Callable[[SenderEvent], None]) -> None:
        self._emit = emit
        self._by_where: dict[str, str] = {}  # where → what keeps the sender from going on
        self._shown: str | None = None  # what was last told to the listeners

    def report(self, where: str, text: str | None) -> None:
        if text is None:
            self._by_where.pop(where, None)
        else:
            self._by_where[where] = text
        shown = next(reversed(self._by_where.values()), None)
        if shown == self._shown:
            return
        self._shown = shown
        self._emit(DeliveryProblem(shown))


async def supervise(sender: Sender, *, until_empty: bool = False) -> None:
    """Run the sender's loop, restarting it (with a growing pause) if it ends with an error."""
    delay = RESTART_FIRST
    restarts = 0
    while True:
        try:
            await sender.run(until_empty=until_empty)
            return
        except StoreReplaced:
            raise  # a restart would write to the same lost file
        except Exception as exc:
            restarts += 1
            log.exception("the sender stopped (restart %d in %.1f s)", restarts, delay)
            sender.report_problem(
                "supervisor",
                f"the sender stopped ({type(exc).__name__}: {exc}); restarting",
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_CAP)
            sender.report_problem("supervisor", None)
