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

Normalisation (:func:`normalize`)
---------------------------------
NFKC, casefold, typographic apostrophes made plain, contractions expanded
("what's" → "what is", "can't" → "can not", also the apostrophe-less "whats",
"dont"...), possessive "'s" dropped, thousands separators removed, "plus" /
"minus" turned into ``+`` / ``-``, and the text cut into tokens: numbers
(``3.14``), words (keeping ``c++`` and ``c#`` whole, since they are different
languages from ``c``) and the operators ``+ - * / = < > ^ %`` (so "2+2" and
"2 + 2" agree, and "2+2" and "2-2" do not).  Everything else is punctuation and
goes; tokens are joined by single spaces.

Content tokens
--------------
From the normalised tokens, stop words are dropped: articles, auxiliaries,
pronouns, "what/which/how", prepositions that rarely carry the question's
meaning, and politeness ("please", "can you tell me", "I'd like to know"),
also when two letters of a long one are swapped ("exlpain", "pleaes").
Kept on purpose, because they change the answer: negation ("not", "no",
"never", "without"), "who/where/when/why", "before/after", numbers, operators
and direction words ("to", "from", "than", "over").  "to" is dropped only when
it follows a word that makes it grammatical filler ("how to", "want to", "way
to"...).  "by" only marks a direction ("divide 10 by 2") and "vs" is filler
("python vs java" = "java vs python").  Greetings and thanks are dropped only
at the start or end ("Hi! ...", "... thanks"), so "translate hello into
French" keeps its "hello".  The rest get a light suffix stemmer (plural
"s"/"ies", "-ing", "-ed", a final "e"/"y") so "lists" = "list", "cities" =
"city", "installing" = "install", "created" = "create"; a few irregular
plurals are mapped.  Synonyms are not known ("exit" ≠ "quit"): a miss costs
the user one queued question, a wrong synonym would cost a wrong answer.

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

Measured (``tests/test_answers.py``, threshold 85, 42 paraphrases and 44
look-alikes, partly held out): precision 0.975, recall 0.93.  ``benchmarks/answers_lookup.py``
measures build time, lookup latency and memory at 100,000 questions.
"""

from __future__ import annotations

import gc
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from chat_tui.sanitize import sanitize
from chat_tui.store import PastQuestion

__all__ = ["DEFAULT_THRESHOLD", "AnswerIndex", "OfflineAnswer", "normalize", "score"]

DEFAULT_THRESHOLD = 85.0

UNMATCHED_PENALTY = 20.0
TYPO_PENALTY = 3.0
SWAP_PENALTY = 50.0
# Rescoring a candidate costs tens of microseconds in Python; past this many
# distinct keys (only reachable with a very low threshold) lookup stops early.
MAX_RESCORED_KEYS = 256
_TITLE_MAX = 60

# -- normalisation ---------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_CONTRACTION = re.compile(r"\b(\w+)'(t|s|re|ve|ll|m|d)\b")
_IS_BEFORE_S = frozenset(
    [
        "what",
        "where",
        "who",
        "when",
        "why",
        "how",
        "it",
        "that",
        "there",
        "here",
        "he",
        "she",
        "this",
        "which",
    ]
)
_N_T_SPECIAL = {"can": "can not", "won": "will not", "shan": "shall not", "ain": "is not"}
_SUFFIXES = {"re": " are", "ve": " have", "ll": " will", "m": " am", "d": " would"}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WORD_HYPHEN = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")
_TOKEN = re.compile(r"\d+(?:\.\d+)*|[^\W_]+(?:\+\+|#)?|[+\-*/=<>^%]")
_ASCII_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)*|[a-z0-9]+(?:\+\+|#)?|[+\-*/=<>^%]")  # faster
# Contractions typed without the apostrophe, and words that mean an operator.
_TOKEN_MAP = {
    "whats": "what is",
    "wheres": "where is",
    "whos": "who is",
    "hows": "how is",
    "thats": "that is",
    "theres": "there is",
    "lets": "let us",
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "isnt": "is not",
    "arent": "are not",
    "wasnt": "was not",
    "werent": "were not",
    "cant": "can not",
    "cannot": "can not",
    "couldnt": "could not",
    "wouldnt": "would not",
    "shouldnt": "should not",
    "wont": "will not",
    "havent": "have not",
    "hasnt": "has not",
    "im": "i am",
    "ive": "i have",
    "youre": "you are",
    "plus": "+",
    "minus": "-",
    "into": "to",
}


def _expand_contraction(m: re.Match[str]) -> str:
    word, suffix = m.group(1), m.group(2)
    if suffix == "t":
        if word in _N_T_SPECIAL:
            return _N_T_SPECIAL[word]
        return f"{word[:-1]} not" if word.endswith("n") else word
    if suffix == "s":
        if word == "let":
            return "let us"
        return f"{word} is" if word in _IS_BEFORE_S else word  # else a possessive
    return word + _SUFFIXES[suffix]


def normalize(text: str) -> str:
    """Canonical form of a question, so trivial differences compare equal.

    Case, whitespace, punctuation, typographic quotes and contractions are
    evened out; numbers, operators and ``c++``/``c#`` survive because they
    change what is being asked.  See the module docstring for every rule.
    """
    return " ".join(_tokens(text))


def _tokens(text: str) -> list[str]:
    """The tokens of :func:`normalize`, unjoined, so ``add`` need not split them again."""
    if text.isascii():
        text = text.lower()  # NFKC and casefold are identities on ASCII but cost time
        if "`" in text:
            text = text.replace("`", "'")
        pattern = _ASCII_TOKEN
    else:
        text = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
        pattern = _TOKEN
    if "'" in text:
        text = _CONTRACTION.sub(_expand_contraction, text)
    if "," in text:
        text = _THOUSANDS.sub("", text)
    if "-" in text:
        text = _WORD_HYPHEN.sub(" ", text)
    tokens = pattern.findall(text)
    if not _TOKEN_MAP.keys().isdisjoint(tokens):
        tokens = " ".join([_TOKEN_MAP.get(t, t) for t in tokens]).split()
    return tokens


# -- content tokens --------------------------------------------------------------------------

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "done",
        "i",
        "me",
        "my",
        "mine",
        "myself",
        "we",
        "us",
        "our",
        "ours",
        "you",
        "your",
        "yours",
        "u",
        "ur",
        "it",
        "its",
        "itself",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "how",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "about",
        "as",
        "by",
        "and",
        "or",
        "so",
        "if",
        "then",
        "please",
        "pls",
        "plz",
        "kindly",
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "tell",
        "know",
        "explain",
        "show",
        "give",
        "want",
        "wanna",
        "need",
        "like",
        "help",
        "ask",
        "wonder",
        "wondering",
        "curious",
        "ok",
        "okay",
        "just",
        "some",
        "any",
        "way",
        "ways",
        "possible",
        "really",
        "actually",
        "exactly",
        "also",
        "have",
        "has",
        "had",
        "let",
        "quick",
        "question",
        "vs",
        "versus",
    ]
)
# Dropped only at the start or end of a question: "Hi! What is..." / "...? Thanks",
# but "translate hello into French" keeps its "hello".
_GREETING_WORDS = ["hi", "hello", "hey", "thanks", "thank", "thx", "ty", "cheers"]
# After these, "to" is grammar ("how to", "want to"), not a direction.
_TO_FILLER = frozenset(
    [
        "how",
        "want",
        "wanna",
        "like",
        "need",
        "way",
        "ways",
        "going",
        "able",
        "have",
        "has",
        "had",
        "try",
        "trying",
        "possible",
        "ought",
        "used",
        "supposed",
        "got",
        "love",
        # "how long to boil", "best way to", "where to buy": still grammar, not direction.
        "long",
        "much",
        "best",
        "easiest",
        "fastest",
        "quickest",
        "where",
        "when",
        "what",
    ]
)
_DIRECTIONS = frozenset(["to", "from", "than", "over", "-", "/", "^", "by"])
_DIRECTION_ONLY = frozenset(["by"])  # too common to be a content token
_IRREGULAR = {
    "children": "child",
    "people": "person",
    "men": "man",
    "women": "woman",
    "mice": "mouse",
    "feet": "foot",
    "teeth": "tooth",
    "geese": "goose",
    "indices": "index",
    "matrices": "matrix",
    "vertices": "vertex",
}


# "-ing" words that are not a verb plus "-ing".
_NOT_ING = frozenset(
    [
        "string",
        "spring",
        "during",
        "bring",
        "thing",
        "nothing",
        "something",
        "anything",
        "everything",
    ]
)


def _undouble(stem: str) -> str:
    """Drop a doubled final consonant left by a suffix: stopp → stop, runn → run.

    "install" and "add" stay whole, so they still equal their unsuffixed forms.
    """
    if len(stem) >= 4 and stem[-1] == stem[-2] and stem[-1] not in "aeiouylsfz":
        return stem[:-1]
    return stem


def _stem(tok: str) -> str:
    """Fold plural and final-e/y variants together, consistently on both sides.

    The stems need not be words ("cities" and "city" both become "citi"); they
    only have to agree.  The rules are few and conservative because a stemmer
    that merges different words ("string" → "str") would create false matches.
    """
    if not tok.isalpha() or len(tok) < 3:
        return tok
    if tok in _IRREGULAR:
        return _IRREGULAR[tok]
    if len(tok) >= 4:
        if tok.endswith("ies"):
            tok = tok[:-3] + "i"
        elif tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
            tok = tok[:-1]
        elif tok.endswith("ing") and len(tok) >= 6 and tok not in _NOT_ING:
            tok = _undouble(tok[:-3])  # "installing" = "install", "making" = "make"
        elif tok.endswith("ed") and len(tok) >= 5 and not tok.endswith("eed"):
            tok = _undouble(tok[:-2])  # "created" = "create", not "need" = "ne"
    if len(tok) >= 3 and tok[-1] in "ey":
        tok = tok[:-1] if tok[-1] == "e" else tok[:-1] + "i"
    return tok


_GREETINGS = frozenset(_stem(w) for w in _GREETING_WORDS)


@dataclass(frozen=True, slots=True)
class _Analysis:
    """Content tokens in question order, and where each direction word sits."""

    content: tuple[str, ...]
    directions: tuple[tuple[str, int], ...]  # (word, how many content tokens precede it)

    @property
    def key(self) -> str:
        return " ".join(sorted(self.content))


_STOP_WORD, _DIRECTION, _DIRECTION_ONLY_WORD, _TO = 0, 1, 2, 3
# One dict lookup classifies a token; anything absent is a content word.
_KIND: dict[str, int] = {w: _STOP_WORD for w in _STOP}
_KIND.update({w: _DIRECTION for w in _DIRECTIONS})
_KIND.update({w: _DIRECTION_ONLY_WORD for w in _DIRECTION_ONLY})
_KIND["to"] = _TO
_STEMS: dict[str, str] = {}
_STEMS_MAX = 200_000


# Long stop words by their letters, to spot a fast-typing swap ("exlpain", "pleaes").
_STOP_ANAGRAMS: dict[str, list[str]] = {}
for _w in _STOP:
    if len(_w) >= 6:
        _STOP_ANAGRAMS.setdefault("".join(sorted(_w)), []).append(_w)


def _new_stem(tok: str) -> str:
    """Stem a word seen for the first time, or "" if it is a mistyped stop word.

    Only a swap of two neighbouring letters in a stop word of 6+ letters
    counts: substitutions would turn real words into stop words ("wander",
    "realty").  Such a token is added to ``_KIND`` so later lookups skip it.
    """
    if len(tok) >= 6:
        similar = _STOP_ANAGRAMS.get("".join(sorted(tok)))
        if similar and any(OSA.distance(tok, w, score_cutoff=1) == 1 for w in similar):
            _KIND[tok] = _STOP_WORD
            return ""
    if len(_STEMS) >= _STEMS_MAX:
        _STEMS.clear()
    stem = _STEMS[tok] = _stem(tok)
    return stem


def _split(tokens: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Content tokens in order and direction positions; the hot loop of ``build``."""
    content: list[str]
    directions: list[tuple[str, int]] = []
    if _DIRECTIONS.isdisjoint(tokens):  # the common case, as a comprehension
        stems, kinds = _STEMS, _KIND
        content = [stems.get(t) or _new_stem(t) for t in tokens if t not in kinds]
    else:
        content = _split_directions(tokens, directions)
    if "" in content:  # a mistyped stop word, seen for the first time
        content = _drop_empty(content, directions)
    if content and (content[0] in _GREETINGS or content[-1] in _GREETINGS):
        start, end = 0, len(content)
        while start < end and content[start] in _GREETINGS:
            start += 1
        while end > start and content[end - 1] in _GREETINGS:
            end -= 1
        content = content[start:end]
        directions = [(w, min(max(i - start, 0), len(content))) for w, i in directions]
    return content, directions


def _drop_empty(content: list[str], directions: list[tuple[str, int]]) -> list[str]:
    """Remove "" tokens, moving direction positions back to match."""
    for n, (word, i) in enumerate(directions):
        directions[n] = (word, i - content[:i].count(""))
    return [c for c in content if c]


def _split_directions(tokens: list[str], directions: list[tuple[str, int]]) -> list[str]:
    content: list[str] = []
    prev: str | None = None
    for tok in tokens:
        kind = _KIND.get(tok)
        if kind is None:
            content.append(_STEMS.get(tok) or _new_stem(tok))
        elif kind == _DIRECTION or (kind == _TO and prev is not None and prev not in _TO_FILLER):
            directions.append((tok, len(content)))
            content.append(tok)
        elif kind == _DIRECTION_ONLY_WORD:
            directions.append((tok, len(content)))
        prev = tok
    return content


def _analyze(norm: str) -> _Analysis:
    content, directions = _split(norm.split())
    return _Analysis(tuple(content), tuple(directions))


def _content_key(tokens: list[str]) -> str:
    """The prefilter key: sorted content tokens (fuzz.ratio on it = token_sort_ratio)."""
    return " ".join(sorted(_split(tokens)[0]))


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


def _direction_reversed(a: _Analysis, b: _Analysis) -> bool:
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


def _score(q: _Analysis, c: _Analysis, base: float | None = None) -> float:
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
    qa, qb = _analyze(na), _analyze(nb)
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
        tokens = _tokens(question.question)
        norm = " ".join(tokens)
        if not norm:
            return
        entry = self._entries.get(norm)
        if entry is not None:
            entry.offer(question)
            return
        entry = self._entries[norm] = _Entry(norm, question)
        key = _content_key(tokens)
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
        q = _analyze(norm)
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
                s = _score(q, _analyze(entry.norm), base)
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
