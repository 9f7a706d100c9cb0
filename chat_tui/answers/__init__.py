"""Offline answers: reuse the reply to a past question when the endpoint is away.

While the endpoint cannot be reached, a submitted question is matched against
every past user question that got a reply (all conversations, see
``Store.past_questions``).  A match at or above the threshold is shown at once
as a clearly labelled offline answer; the question itself stays queued.

Showing the reply to a *different* question would be worse than showing
nothing, so the scheme below is built for precision first: trivial differences
(case, punctuation, contractions, articles, politeness, plurals, word order,
small typos) must still match, while look-alikes that share most of their words
("capital of France" / "capital of Spain", "reverse a list in Python" / "... in
Rust", "2+2" / "2+3") must not.

* ``text``: a question's normalised form and its content tokens;
* ``index``: the scoring, and the index of past questions (``AnswerIndex``);
* ``service``: ``OfflineAnswers``, which builds the index on first use, keeps it
  fresh by listening for stored replies, and stores a match as a notice.

The matching modules import rapidfuzz, which takes time to load: their names are
imported here on first use, so the core (which makes the service) does not
pay for it at start-up.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .service import OfflineAnswers

if TYPE_CHECKING:
    from .index import DEFAULT_THRESHOLD, AnswerIndex, OfflineAnswer, score
    from .text import normalize

__all__ = [
    "DEFAULT_THRESHOLD",
    "AnswerIndex",
    "OfflineAnswer",
    "OfflineAnswers",
    "normalize",
    "score",
]

_LAZY = {
    "DEFAULT_THRESHOLD": "index",
    "AnswerIndex": "index",
    "OfflineAnswer": "index",
    "score": "index",
    "normalize": "text",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
