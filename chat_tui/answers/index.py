"""The index of past questions, and how closely two questions match.

Scoring (0–100)
---------------
``base`` is ``fuzz.ratio`` of the two sorted content-token strings, i.e.
``token_sort_ratio`` on stop-word-free text: reorderings and politeness cost
nothing, a typo costs a few points.  Then penalties:

* ``-20`` for every content token (either side, counted as a multiset) that has
  no equal and no *typo-close* token on the other side.  Typo-close means: both
  alphabetic, same first letter, and an optimal-string-alignment distance of 1
  for words of 6+ letters, 2 for 9+, or a swap of two letters for 5-letter
  words.  Short words, numbers and names like ``c++`` must be equal.  One
  different entity therefore costs 40 points (one unmatched token per side) on
  top of the lower ratio, which puts every "same template, different entity"
  pair far below any sensible threshold.
* ``-3`` for every typo-close (not equal) pair, so a typo never scores 100.
* ``-50`` when a *direction* is reversed: for a direction word ("to", "from",
  "than", "over", "by", ``-``, ``/``, ``^``) present in both questions, some shared
  token comes before it in one and after it in the other while another shared
  token moves the opposite way.

Word order matters only through those direction words: "convert celsius to
fahrenheit" and "convert fahrenheit to celsius" ask for inverse formulas and do
*not* match, nor do "is python faster than java" / "is java faster than
python" or "10 - 3" / "3 - 10", while "France's capital" = "the capital of
France" and "python vs java" = "java vs python" do.  Negation is a content
token, so "is python slow" and "is python not slow" do not match (the honest
answers differ in emphasis, and a wrong offline answer is the costly error).
Known limitation: without a direction word, order is invisible, so "dog bites
man" matches "man bites dog" (a general order penalty would also reject real
reorderings such as "Roman history book recommendations").

Questions with no content tokens at all ("how are you?") are compared with
``fuzz.ratio`` on the normalised text, among themselves only.

Because every penalty is non-negative, ``base`` is an upper bound of the final
score.  Lookup uses that: a rapidfuzz ``process.extract`` over the distinct
sorted content keys (bucketed by length, since ``ratio >= t`` bounds the length
ratio) with ``score_cutoff=threshold`` is a lossless prefilter, and candidates
are rescored in decreasing ``base`` order until ``base`` falls below the best
final score found (at most ``MAX_RESCORED_KEYS`` keys, which only a very low
threshold can reach).  Identical normalised questions are stored once, keeping
the newest (and the runner-up, so ``exclude_message_id`` can skip the newest).

Measured (``tests/unit/test_answers.py``, threshold 85, 42 paraphrases and 44
look-alikes, partly held out): precision 0.975, recall 0.93.  ``benchmarks/answers_lookup.py``
measures build time, lookup latency and memory at 100,000 questions.
"""

from __future__ import annotations

import gc
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from ..sanitize import sanitize
from ..store import PastQuestion
from .text import Analysis, analyze, content_key, normalize, tokenize

__all__ = ["DEFAULT_THRESHOLD", "AnswerIndex", "OfflineAnswer", "score"]

DEFAULT_THRESHOLD = 85.0

UNMATCHED_PENALTY = 20.0
TYPO_PENALTY = 3.0
SWAP_PENALTY = 50.0
# Rescoring a candidate costs tens of microseconds in Python; past this many
# distinct keys (only reachable with a very low threshold) lookup stops early.
MAX_RESCORED_KEYS = 256
_TITLE_MAX = 60

# -- scoring ---------------------------------------------------------------------------------


def _typo_close(a: str, b: str) -> bool:
    """Whether two different tokens are plausibly one word mistyped.

    Deliberately strict: short words, numbers and tokens like ``c++`` never
    qualify, and the first letter must agree, so "python"/"cython" or
    "iran"/"iraq" stay different words.
    """
    if a[0] != b[0] or not (a.isalpha() and b.isalpha()):
        return False
    shortest = min(len(a), len(b))
    if shortest >= 9:
        return OSA.distance(a, b, score_cutoff=2) <= 2
    if shortest >= 6:
        return OSA.distance(a, b, score_cutoff=1) <= 1
    if shortest == 5 and len(a) == len(b) and sorted(a) == sorted(b):
        return OSA.distance(a, b, score_cutoff=1) <= 1  # two neighbours swapped
    return False


def _token_penalty(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    ca, cb = Counter(a), Counter(b)
    rest_a = list((ca - cb).elements())
    rest_b = list((cb - ca).elements())
    if not rest_a and not rest_b:
        return 0.0
    typos = 0
    for tok in rest_a:
        for i, other in enumerate(rest_b):
            if _typo_close(tok, other):
                typos += 1
                del rest_b[i]
                break
    unmatched = len(rest_a) - typos + len(rest_b)
    return unmatched * UNMATCHED_PENALTY + typos * TYPO_PENALTY


def _direction_reversed(a: Analysis, b: Analysis) -> bool:
    """Whether shared tokens swap sides around a direction word present in both."""
    for word, i in a.directions:
        for other_word, j in b.directions:
            if word != other_word:
                continue
            a_before, a_after = set(a.content[:i]), set(a.content[i:])
            b_before, b_after = set(b.content[:j]), set(b.content[j:])
            moved_back = (a_before - a_after) & (b_after - b_before)
            moved_forward = (a_after - a_before) & (b_before - b_after)
            if moved_back and moved_forward:
                return True
    return False


def _score(q: Analysis, c: Analysis, base: float | None = None) -> float:
    """The full scheme; ``base`` may be passed in when the prefilter already computed it."""
    if base is None:
        base = fuzz.ratio(q.key, c.key)
    result = base - _token_penalty(q.content, c.content)
    if _direction_reversed(q, c):
        result -= SWAP_PENALTY
    return max(0.0, result)


def score(a: str, b: str) -> float:
    """Similarity of two questions (0–100) under the module's scheme.

    Public so tests and tuning can look at a pair without building an index.
    """
    na, nb = normalize(a), normalize(b)
    qa, qb = analyze(na), analyze(nb)
    if not qa.content or not qb.content:
        return fuzz.ratio(na, nb) if not qa.content and not qb.content else 0.0
    return _score(qa, qb)


# -- the index -------------------------------------------------------------------------------


def _newer(a: PastQuestion, b: PastQuestion) -> bool:
    return (a.asked_at, a.message_id) > (b.asked_at, b.message_id)


@dataclass(frozen=True, slots=True)
class OfflineAnswer:
    """A past reply offered while offline, with what it came from and how well it fits."""

    source: PastQuestion
    score: float  # 0–100

    def label(self) -> str:
        """One line saying this is an offline answer, from where, when, and how close.

        The title is user/model-supplied text shown in the terminal, so it is
        sanitized and flattened to one line; the score is rounded down so the
        label never claims a better match than was found.
        """
        title = " ".join(sanitize(self.source.conversation_title).split()) or "untitled"
        if len(title) > _TITLE_MAX:
            title = title[: _TITLE_MAX - 1].rstrip() + "…"
        date = time.strftime("%Y-%m-%d", time.localtime(self.source.asked_at))
        pct = math.floor(self.score)
        return f"Offline answer · from “{title}” · {date} · match {pct}%"


class _Entry:
    """One distinct normalised question: its newest record and the one before it."""

    __slots__ = ("norm", "previous", "record")

    def __init__(self, norm: str, record: PastQuestion) -> None:
        self.norm = norm
        self.record = record
        self.previous: PastQuestion | None = None

    def offer(self, record: PastQuestion) -> None:
        if record.message_id == self.record.message_id:
            self.record = record
        elif _newer(record, self.record):
            self.previous, self.record = self.record, record
        elif self.previous is None or _newer(record, self.previous):
            self.previous = record

    def usable(self, exclude_message_id: int | None) -> PastQuestion | None:
        if exclude_message_id is None or self.record.message_id != exclude_message_id:
            return self.record
        return self.previous


class AnswerIndex:
    """Past questions that got a reply, searchable by meaning-preserving fuzziness.

    Held in memory and fed once from the store, then kept current with
    :meth:`add` as replies arrive, so a lookup while offline never touches the
    database and answers in milliseconds even with 100,000 past questions.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 <= threshold <= 100.0:
            raise ValueError(f"threshold must be between 0 and 100, not {threshold}")
        self.threshold = float(threshold)
        self._entries: dict[str, _Entry] = {}  # normalised question -> entry
        self._groups: dict[str, list[_Entry]] = {}  # content key -> entries
        self._buckets: dict[int, list[str]] = {}  # key length -> distinct keys

    @classmethod
    def build(
        cls, questions: Iterable[PastQuestion], threshold: float = DEFAULT_THRESHOLD
    ) -> AnswerIndex:
        """An index of all ``questions`` (typically ``await store.past_questions()``).

        The cyclic garbage collector is paused meanwhile: building allocates
        hundreds of thousands of small objects, none in a reference cycle, and
        each allocation burst would otherwise trigger collections that rescan
        the whole growing index (about 40% of the build time at 100,000
        questions).  Reference counting still frees everything as usual.
        """
        index = cls(threshold)
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for q in questions:
                index.add(q)
        finally:
            if was_enabled:
                gc.enable()
        return index

    def add(self, question: PastQuestion) -> None:
        """Index a newly delivered question; a repeat of a known one keeps the newest."""
        tokens = tokenize(question.question)
        norm = " ".join(tokens)
        if not norm:
            return
        entry = self._entries.get(norm)
        if entry is not None:
            entry.offer(question)
            return
        entry = self._entries[norm] = _Entry(norm, question)
        key = content_key(tokens)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = [entry]
            if key:
                self._buckets.setdefault(len(key), []).append(key)
        else:
            group.append(entry)

    def __len__(self) -> int:
        """How many distinct (normalised) questions are indexed."""
        return len(self._entries)

    def best(self, text: str, *, exclude_message_id: int | None = None) -> OfflineAnswer | None:
        """The best past answer for ``text`` at or above the threshold, or None.

        Among equal scores the newest question wins, since its reply is the
        most likely to be current.  ``exclude_message_id`` skips one record,
        so a question already in the index never answers itself.
        """
        norm = normalize(text)
        if not norm or not self._entries:
            return None
        q = analyze(norm)
        if not q.content:
            return self._best_without_content(norm, exclude_message_id)

        best: tuple[float, float, int] | None = None
        found: OfflineAnswer | None = None
        for base, key in self._candidates(q.key)[:MAX_RESCORED_KEYS]:
            if best is not None and base < best[0]:
                break  # base bounds the final score: nothing further can win
            for entry in self._groups[key]:
                record = entry.usable(exclude_message_id)
                if record is None:
                    continue
                s = _score(q, analyze(entry.norm), base)
                if s < self.threshold:
                    continue
                rank = (s, record.asked_at, record.message_id)
                if best is None or rank > best:
                    best, found = rank, OfflineAnswer(record, s)
        return found

    def _candidates(self, key: str) -> list[tuple[float, str]]:
        """Distinct content keys whose ratio to ``key`` reaches the threshold, best first."""
        cutoff = self.threshold
        n = len(key)
        if cutoff > 0:
            # ratio = 2*matches/(n+m) >= cutoff/100 implies this window on m.
            lo = math.ceil(n * cutoff / (200.0 - cutoff) - 1e-9)
            hi = math.floor(n * (200.0 - cutoff) / cutoff + 1e-9)
        else:
            lo, hi = 0, 1 << 30
        found: list[tuple[float, str]] = []
        for length, keys in self._buckets.items():
            if lo <= length <= hi:
                for choice, s, _ in process.extract(
                    key,
                    keys,
                    scorer=fuzz.ratio,
                    processor=None,
                    score_cutoff=cutoff,
                    limit=None,
                ):
                    found.append((s, choice))
        found.sort(key=lambda item: item[0], reverse=True)
        return found

    def _best_without_content(
        self, norm: str, exclude_message_id: int | None
    ) -> OfflineAnswer | None:
        """Questions of only stop words ("how are you?") match each other by plain ratio."""
        best: tuple[float, float, int] | None = None
        found: OfflineAnswer | None = None
        for entry in self._groups.get("", ()):
            record = entry.usable(exclude_message_id)
            if record is None:
                continue
            s = fuzz.ratio(norm, entry.norm, score_cutoff=self.threshold)
            if s < self.threshold or s == 0:
                continue
            rank = (s, record.asked_at, record.message_id)
            if best is None or rank > best:
                best, found = rank, OfflineAnswer(record, s)
        return found
