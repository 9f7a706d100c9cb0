"""The OpenAI-compatible chat-completions client (httpx), and what its failures mean.

A package of the endpoint's seams; everything is imported from here:

* ``errors``: the failure classes and classifying every failure once;
* ``transport``: the HTTP client, TCP keepalive, the proxy, the connection pool;
* ``linkcheck``: cheap checks that the link to the endpoint is alive;
* ``reply`` and ``stream``: reading a reply (whole or streamed) within its caps;
* ``side``: the reachability probe, the model list, small JSON side requests;
* ``client``: ``Endpoint``, which sends a chat request and watches its link.
"""

from __future__ import annotations

from .client import Endpoint
from .errors import (
    AUTH_STATUS,
    TRANSIENT_STATUS,
    AuthError,
    DeliveryError,
    PermanentError,
    TransientError,
    UnreachableError,
    classify_error_object,
    classify_status,
)
from .linkcheck import LINK_CHECK_AFTER, LINK_CHECK_EVERY, LINK_CHECK_TIMEOUT
from .reply import CAP_MARKER, DeltaCallback, Reply, ThinkSplitter, Usage, read_usage
from .side import ProbeResult
from .transport import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    keepalive_options,
    proxy_for,
)

__all__ = [
    "AUTH_STATUS",
    "CAP_MARKER",
    "KEEPALIVE_COUNT",
    "KEEPALIVE_IDLE",
    "KEEPALIVE_INTERVAL",
    "LINK_CHECK_AFTER",
    "LINK_CHECK_EVERY",
    "LINK_CHECK_TIMEOUT",
    "TRANSIENT_STATUS",
    "AuthError",
    "DeliveryError",
    "DeltaCallback",
    "Endpoint",
    "PermanentError",
    "ProbeResult",
    "Reply",
    "ThinkSplitter",
    "TransientError",
    "UnreachableError",
    "Usage",
    "classify_error_object",
    "classify_status",
    "keepalive_options",
    "proxy_for",
    "read_usage",
]
