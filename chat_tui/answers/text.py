"""Text analysis of a question: its normalised form and its content tokens.

The scheme, tuned for precision (see the package docstring), in two steps:

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
"""

# ruff: noqa: SIM905 - the word lists read better as one string of words than one per line

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz.distance import OSA

__all__ = ["Analysis", "analyze", "content_key", "normalize", "tokenize"]

# -- normalisation ---------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_CONTRACTION = re.compile(r"\b(\w+)'(t|s|re|ve|ll|m|d)\b")
_IS_BEFORE_S = frozenset("what where who when why how it that there here he she this which".split())
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
    return " ".join(tokenize(text))


def tokenize(text: str) -> list[str]:
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
    (
        "a an the "  # articles
        "is are was were be been being am do does did doing done have has had "
        "i me my mine myself we us our ours you your yours u ur "  # pronouns
        "it its itself this that these those there here "
        "what which how "
        "of in on at for with about as by "  # prepositions that rarely carry the meaning
        "and or so if then "
        "please pls plz kindly "  # politeness
        "can could would will shall should may might must "
        "tell know explain show give want wanna need like help ask wonder wondering curious "
        "ok okay just some any way ways possible really actually exactly also "
        "let quick question vs versus"
    ).split()
)
# Dropped only at the start or end of a question: "Hi! What is..." / "...? Thanks",
# but "translate hello into French" keeps its "hello".
_GREETING_WORDS = "hi hello hey thanks thank thx ty cheers".split()
# After these, "to" is grammar ("how to", "want to"), not a direction.
_TO_FILLER = frozenset(
    (
        "how want wanna like need way ways going able have has had try trying possible "
        "ought used supposed got love "
        # "how long to boil", "best way to", "where to buy": still grammar, not direction.
        "long much best easiest fastest quickest where when what"
    ).split()
)
_DIRECTIONS = frozenset("to from than over - / ^ by".split())
_DIRECTION_ONLY = frozenset({"by"})  # too common to be a content token
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
    "string spring during bring thing nothing something anything everything".split()
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
class Analysis:
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


def analyze(norm: str) -> Analysis:
    content, directions = _split(norm.split())
    return Analysis(tuple(content), tuple(directions))


def content_key(tokens: list[str]) -> str:
    """The prefilter key: sorted content tokens (fuzz.ratio on it = token_sort_ratio)."""
    return " ".join(sorted(_split(tokens)[0]))
