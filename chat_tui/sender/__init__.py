"""The sender: claims queued messages in order and delivers them, one path for all.

* ``loop``: ``Sender``, the user's side (submit, retry, cancel, stop) and the
  loop that claims and starts attempts;
* ``attempt``: one delivery attempt: stream, store (keeping a reply in memory
  until the disk frees), a stopped reply, a failure settled by its class;
* ``request``: the request fitted to the model's context window, trimmed on overflow;
* ``stops``: the lease kept while a reply streams, and stops asked by other processes;
* ``supervisor``: trouble reported and waited out; the loop restarted if it dies.
"""

from __future__ import annotations

from .loop import (
    EXPIRY_SWEEP,
    IDLE_RECHECK,
    PENDING_ENDPOINTS_RECHECK,
    Sender,
    SubmitResult,
    make_owner_id,
)
from .request import USAGE_OPTION_KEY
from .stops import STOP_ACTIONS, STOP_POLL
from .supervisor import (
    RESTART_CAP,
    RESTART_FIRST,
    TROUBLE_CAP,
    TROUBLE_FIRST,
    describe_store_error,
    supervise,
)

__all__ = [
    "EXPIRY_SWEEP",
    "IDLE_RECHECK",
    "PENDING_ENDPOINTS_RECHECK",
    "RESTART_CAP",
    "RESTART_FIRST",
    "STOP_ACTIONS",
    "STOP_POLL",
    "TROUBLE_CAP",
    "TROUBLE_FIRST",
    "USAGE_OPTION_KEY",
    "Sender",
    "SubmitResult",
    "describe_store_error",
    "make_owner_id",
    "supervise",
]
