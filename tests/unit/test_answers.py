"""Offline answers: the matching must be precise first, then forgiving.

A wrong offline answer (the reply to a different question) is worse than
none, so the labelled set below is weighted towards hard look-alikes, and the
precision bar is higher than the recall bar.
"""

from __future__ import annotations

import random
import time

import pytest

from chat_tui.answers import AnswerIndex, OfflineAnswer, normalize, score
from chat_tui.store import PastQuestion

THRESHOLD = 85.0

# (stored question, new question): the stored reply answers the new question.
PARAPHRASES: list[tuple[str, str]] = [
    ("What is the capital of France?", "what's the capital of france"),
    ("What is the capital of France?", "Capital of France?"),
    ("What is the capital of France?", "Can you tell me the capital of France, please?"),
    ("What is the capital of France?", "France's capital?"),
    ("What is the capital of France?", "whats the captial of france"),  # typo
    ("What is the capital of France?", "Hey, thanks! What is the capital of France?"),
    ("How do I reverse a list in Python?", "how to reverse a list in python"),
    ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),  # reordered
    ("How do I reverse a list in Python?", "how do i reverse lists in pyhton"),  # plural, typo
    (
        "How do I reverse a list in Python?",
        "Could you please explain how to reverse a Python list?",
    ),
    ("convert celsius to fahrenheit", "How do I convert Celsius to Fahrenheit?"),
    ("convert celsius to fahrenheit", "convert celcius into fahrenheit"),
    # "to" after "how long"/"where" is grammar, not a direction.
    ("How long should I boil an egg for a runny yolk?", "how long to boil an egg for a runny yolk"),
    ("where can I buy train tickets in Lisbon", "where to buy train tickets in Lisbon"),
    ("What's the difference between TCP and UDP?", "difference between UDP and TCP"),
    ("python vs java", "Java vs. Python"),
    ("Why is the sky blue?", "why is the sky blue??"),
    ("How many legs does a spider have?", "How many legs do spiders have?"),
    ("What is 2+2?", "what is 2 + 2"),
    ("What is 2+2?", "What's 2 plus 2?"),
    ("Who wrote Pride and Prejudice?", "who wrote pride & prejudice"),
    ("How do I exit vim?", "How can I exit Vim, please?"),
    ("Recommend a book about Roman history", "recommend some books about roman history"),
    ("How do I center a div in CSS?", "how to center a div in css"),
    ("When was the Eiffel Tower built?", "when was the eiffel tower built"),
    ("I'd like to know how to make pancakes", "How do you make pancakes?"),
    ("Hi! What is the boiling point of water?", "boiling point of water"),
    ("How do I sort a dictionary by value in Python?", "Python: sort dictionary by values"),
    ("Where is the Louvre?", "Where’s the Louvre?"),  # typographic apostrophe
    ("What are the symptoms of the flu?", "what are flu symptoms"),
    ("How do I say hello in French?", "how do you say hello in french"),
    ("Isn't Python slow?", "isnt python slow"),
    ("How much is 1,000 + 250?", "how much is 1000 + 250"),
    ("What is the population of Australia?", "population of australia thank you"),
    ("How do I exit vim?", "Could you exlpain how to exit vim, pleaes?"),  # mistyped filler
    # Checked only after the scheme was written (a held-out sample); the first
    # three need synonyms or world knowledge and are known misses.
    ("How do I exit vim?", "how do I quit vim"),
    ("What is the capital of France?", "What is the capital city of France?"),
    ("How tall is Mount Everest?", "what is the height of mount everest"),
    ("What are the benefits of exercise?", "what are the benefits of exercising"),
    ("How do I install numpy?", "installing numpy"),
    ("How do I delete a branch in git?", "git delete branch"),
    ("What is a closure in JavaScript?", "explain closures in javascript"),
    ("how many days in a leap year", "how many days are there in a leap year?"),
    ("Whats the best way to learn Rust", "best way to learn rust?"),
]
KNOWN_MISSES = {
    ("How do I exit vim?", "how do I quit vim"),
    ("What is the capital of France?", "What is the capital city of France?"),
    ("How tall is Mount Everest?", "what is the height of mount everest"),
}

# (stored question, new question): the stored reply must NOT be offered.
LOOK_ALIKES: list[tuple[str, str]] = [
    # different entities
    ("What is the capital of France?", "What is the capital of Spain?"),
    ("What is the capital of Iran?", "What is the capital of Iraq?"),
    ("What is the population of Austria?", "What is the population of Australia?"),
    ("Why is the sky blue?", "Why is the sea blue?"),
    ("How do I undo a git commit?", "How do I undo a git push?"),
    ("What is the time complexity of quicksort?", "What is the time complexity of mergesort?"),
    ("How do I say hello in French?", "How do I say goodbye in French?"),
    ("Translate hello into French", "Translate hello into Spanish"),
    # different languages / libraries / versions
    ("How do I reverse a list in Python?", "How do I reverse a list in Rust?"),
    ("How do I reverse a list in Python?", "How do I reverse a list in Cython?"),
    ("How do I reverse a list in C++?", "How do I reverse a list in C?"),
    ("How do I reverse a list in C#?", "How do I reverse a list in C++?"),
    ("How do I reverse a list in Python?", "How do I reverse a string in Python?"),
    ("How do I install MySQL?", "How do I install MSSQL?"),
    ("How do I install Python 2?", "How do I install Python 3?"),
    # numbers
    ("what is 2+2", "what is 2+3"),
    ("what is 2+2", "what is 2-2"),
    ("What is the square root of 144?", "What is the square root of 169?"),
    ("Who is the president of France?", "Who was the president of France in 1990?"),
    # negation and qualifiers (decided: a different question)
    ("is python slow", "is python not slow"),
    ("How do I sort a list in Python?", "How do I sort a list in Python without sorted()?"),
    ("how to make pancakes", "how to make pancakes without eggs"),
    ("Should I stretch before running?", "Should I stretch after running?"),
    ("When was the Eiffel Tower built?", "Where was the Eiffel Tower built?"),
    # same words, order changes the meaning (decided: direction words make order matter)
    ("convert celsius to fahrenheit", "convert fahrenheit to celsius"),
    ("convert celsius to fahrenheit", "convert from fahrenheit to celsius"),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("flights from Paris to London", "flights from London to Paris"),
    ("flights to Paris", "flights from Paris"),
    ("what is 10 - 3", "what is 3 - 10"),
    ("divide 10 by 2", "divide 2 by 10"),
    ("Is Python faster than Java?", "Is Python slower than Java?"),
    ("I wonder about Woman", "I wander about Woman"),  # a real word is not a typo of a stop word
    # held-out sample, checked after the scheme was written
    ("dog bites man", "man bites dog"),  # known false match: no direction word to see
    ("How do I delete a git branch?", "How do I create a git branch?"),
    ("How do I delete a local git branch?", "How do I delete a remote git branch?"),
    ("python 3.10 features", "python 3.11 features"),
    ("What is the best laptop for students?", "What is the worst laptop for students?"),
    ("how to lose weight", "how to gain weight"),
    ("Is coffee bad for you?", "Is coffee good for you?"),
    ("what is a list in python", "what is a tuple in python"),
    ("how to center a div horizontally", "how to center a div vertically"),
    ("what is the capital of north korea", "what is the capital of south korea"),
    ("What is the weather today?", "What is the weather tomorrow?"),
]
KNOWN_FALSE_MATCHES = {("dog bites man", "man bites dog")}


def _mark_known(pairs: list[tuple[str, str]], known: set[tuple[str, str]], why: str) -> list:
    return [
        pytest.param(*pair, marks=pytest.mark.xfail(strict=True, reason=why))
        if pair in known
        else pair
        for pair in pairs
    ]


def pq(
    question: str,
    *,
    message_id: int = 1,
    asked_at: float = 1_800_000_000.0,
    title: str = "Trip to Paris",
    answer: str = "Paris.",
    conversation_id: int = 1,
) -> PastQuestion:
    return PastQuestion(
        message_id=message_id,
        conversation_id=conversation_id,
        conversation_title=title,
        question=question,
        answer=answer,
        asked_at=asked_at,
    )


def _predicted_match(stored: str, asked: str) -> bool:
    """Through the real index, so prefilter and rescoring are both exercised."""
    index = AnswerIndex.build([pq(stored)], threshold=THRESHOLD)
    return index.best(asked) is not None


def test_labelled_set_is_big_enough() -> None:
    assert len(PARAPHRASES) >= 20
    assert len(LOOK_ALIKES) >= 20


def test_precision_and_recall_on_labelled_pairs() -> None:
    tp = sum(_predicted_match(a, b) for a, b in PARAPHRASES)
    fn = len(PARAPHRASES) - tp
    fp = sum(_predicted_match(a, b) for a, b in LOOK_ALIKES)
    tn = len(LOOK_ALIKES) - fp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn)
    print(
        f"\noffline answers @ threshold {THRESHOLD:.0f}: precision={precision:.3f} "
        f"recall={recall:.3f} (tp={tp} fp={fp} tn={tn} fn={fn}; "
        f"{len(PARAPHRASES)} paraphrases, {len(LOOK_ALIKES)} look-alikes)"
    )
    missed = [(a, b, round(score(a, b), 1)) for a, b in PARAPHRASES if not _predicted_match(a, b)]
    wrong = [(a, b, round(score(a, b), 1)) for a, b in LOOK_ALIKES if _predicted_match(a, b)]
    assert precision >= 0.95, wrong
    assert recall >= 0.8, missed


@pytest.mark.parametrize(
    ("stored", "asked"),
    _mark_known(
        LOOK_ALIKES,
        KNOWN_FALSE_MATCHES,
        "bag of content words: subject/object order without a direction word",
    ),
)
def test_each_look_alike_scores_below_threshold(stored: str, asked: str) -> None:
    # Beyond the precision bar: a regression on one named pair is worth seeing.
    assert score(stored, asked) < THRESHOLD
    assert score(asked, stored) < THRESHOLD  # the scheme is symmetric in effect


@pytest.mark.parametrize(
    ("stored", "asked"),
    _mark_known(PARAPHRASES, KNOWN_MISSES, "needs synonyms, which the scheme does not know"),
)
def test_each_paraphrase_matches(stored: str, asked: str) -> None:
    assert score(stored, asked) >= THRESHOLD
    assert score(asked, stored) >= THRESHOLD


# -- normalize -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is the capital of France?", "what is the capital of france"),
        ("what's the capital of france", "what is the capital of france"),
        ("  WHAT’S   the\tcapital\nof France!!! ", "what is the capital of france"),
        ("France's capital", "france capital"),
        ("I can't, won't, don't", "i can not will not do not"),
        ("You're, I've, we'll, I'm, she'd", "you are i have we will i am she would"),
        ("whats up dont", "what is up do not"),
        ("C++ vs C# vs C", "c++ vs c# vs c"),
        ("What is 2+2?", "what is 2 + 2"),
        ("2 plus 2 minus 1", "2 + 2 - 1"),
        ("pi is 3.14, e is 2.72.", "pi is 3.14 e is 2.72"),
        ("1,000,000 people", "1000000 people"),
        ("e-mail x-ray", "e mail x ray"),
        ("snake_case_name", "snake case name"),
        ("Ünïcödé ＦＵＬＬＷＩＤＴＨ", "ünïcödé fullwidth"),
        ("", ""),
        ("?!... ", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_is_idempotent() -> None:
    for a, b in PARAPHRASES + LOOK_ALIKES:
        for text in (a, b):
            assert normalize(normalize(text)) == normalize(text)


# -- the index -------------------------------------------------------------------------------


def test_empty_index_returns_none() -> None:
    index = AnswerIndex()
    assert len(index) == 0
    assert index.best("What is the capital of France?") is None
    assert AnswerIndex.build([]).best("anything") is None


def test_blank_question_returns_none() -> None:
    index = AnswerIndex.build([pq("What is the capital of France?")])
    assert index.best("") is None
    assert index.best("  ?! ") is None


def test_match_carries_source_and_score() -> None:
    record = pq("What is the capital of France?", answer="Paris.")
    found = AnswerIndex.build([record]).best("what's the capital of france")
    assert isinstance(found, OfflineAnswer)
    assert found.source == record
    assert found.score == 100.0


def test_threshold_is_respected() -> None:
    stored, asked = "What is the capital of France?", "whats the captial of france"
    s = score(stored, asked)
    assert THRESHOLD <= s < 100  # a typo: a match, but not a perfect one
    strict = AnswerIndex.build([pq(stored)], threshold=s + 0.5)
    assert strict.best(asked) is None
    lenient = AnswerIndex.build([pq(stored)], threshold=s)
    found = lenient.best(asked)
    assert found is not None and found.score == pytest.approx(s)
    # And a look-alike's score is far below the default threshold.
    assert AnswerIndex.build([pq(stored)]).best("What is the capital of Spain?") is None


def test_threshold_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        AnswerIndex(threshold=101)
    with pytest.raises(ValueError):
        AnswerIndex(threshold=-1)


def test_newest_wins_among_identical_questions() -> None:
    records = [
        pq("What is the capital of France?", message_id=1, asked_at=100.0, answer="old"),
        pq("what is the capital of france", message_id=3, asked_at=300.0, answer="newest"),
        pq("WHAT IS THE CAPITAL OF FRANCE!", message_id=2, asked_at=200.0, answer="middle"),
    ]
    index = AnswerIndex.build(records)
    assert len(index) == 1  # one distinct normalised question
    found = index.best("capital of France?")
    assert found is not None and found.source.answer == "newest"


def test_newest_wins_among_equal_scores_with_different_wording() -> None:
    index = AnswerIndex.build(
        [
            pq("Capital of France?", message_id=5, asked_at=500.0, answer="newest"),
            pq("What's the capital of France, please?", message_id=1, asked_at=100.0, answer="old"),
        ]
    )
    assert len(index) == 2
    found = index.best("what is the capital of france")
    assert found is not None and found.score == 100.0 and found.source.answer == "newest"


def test_better_score_beats_newer() -> None:
    index = AnswerIndex.build(
        [
            pq("How do I reverse a list in Python?", message_id=1, asked_at=100.0, answer="exact"),
            pq("how do I reverse lists in pyhton", message_id=2, asked_at=200.0, answer="typo"),
        ]
    )
    found = index.best("How do I reverse a list in Python?")
    assert found is not None and found.source.answer == "exact"


def test_exclude_message_id_skips_own_record() -> None:
    own = pq("What is the capital of France?", message_id=7, asked_at=700.0)
    index = AnswerIndex.build([own])
    assert index.best(own.question, exclude_message_id=7) is None
    assert index.best(own.question, exclude_message_id=8) is not None
    # An older identical question still answers when the newest is excluded.
    index.add(pq("what is the capital of France", message_id=3, asked_at=300.0, answer="older"))
    found = index.best(own.question, exclude_message_id=7)
    assert found is not None and found.source.message_id == 3
    found = index.best(own.question)
    assert found is not None and found.source.message_id == 7


def test_add_joins_the_index() -> None:
    index = AnswerIndex.build([pq("What is the capital of France?", message_id=1)])
    assert index.best("How do I exit vim?") is None
    index.add(pq("How do I exit Vim?", message_id=2, answer=":q"))
    assert len(index) == 2
    found = index.best("how can I exit vim please")
    assert found is not None and found.source.answer == ":q"


def test_question_of_only_stop_words_matches_itself_only() -> None:
    index = AnswerIndex.build([pq("How are you?", message_id=1, answer="Fine.")])
    found = index.best("how are you")
    assert found is not None and found.source.answer == "Fine."
    assert index.best("Who are you?") is None
    assert index.best("How are you doing in Paris?") is None


def test_lookup_equals_brute_force_scoring() -> None:
    """The prefilter is lossless: best() finds what scoring every record would."""
    rng = random.Random(7)
    langs = ["Python", "Rust", "Go", "Java", "C++", "C#", "Ruby"]
    actions = ["reverse", "sort", "copy", "flatten", "filter", "merge"]
    objects = ["list", "string", "dictionary", "set", "array"]
    extras = ["", " please", " quickly", " without loops", " in place"]

    def question() -> str:
        text = (
            f"How do I {rng.choice(actions)} a {rng.choice(objects)} in "
            f"{rng.choice(langs)}{rng.choice(extras)}?"
        )
        if rng.random() < 0.3:
            text = text.lower().replace("ow do i", "ow to")
        return text

    records = [pq(question(), message_id=i, asked_at=float(i)) for i in range(1, 600)]
    index = AnswerIndex.build(records)
    for _ in range(60):
        asked = question()
        found = index.best(asked)
        scored = [(score(r.question, asked), r.asked_at, r) for r in records]
        top = max(scored, key=lambda t: (t[0], t[1]))
        if top[0] < THRESHOLD:
            assert found is None
        else:
            assert found is not None
            assert found.score == pytest.approx(top[0])
            assert found.source.asked_at == top[1]


# -- the label -------------------------------------------------------------------------------


def _date(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def test_label_names_source_date_and_score() -> None:
    ts = 1_795_000_000.0
    answer = OfflineAnswer(pq("q", title="Trip to Paris", asked_at=ts), 92.4)
    label = answer.label()
    assert label.startswith("Offline answer")
    assert "Trip to Paris" in label
    assert _date(ts) in label
    assert "92%" in label


def test_label_never_rounds_up_to_a_better_match() -> None:
    assert "match 85%" in OfflineAnswer(pq("q"), 85.99).label()


def test_label_has_no_control_characters_even_from_a_hostile_title() -> None:
    title = "\x1b[2J\x1b]0;pwned\x07Trip\r\nto\x1b[31m Paris\u202e\x9b1m\tok\x00"
    label = OfflineAnswer(pq("q", title=title), 90.0).label()
    assert "Trip" in label and "Paris" in label
    for ch in label:
        code = ord(ch)
        assert code >= 0x20 and not 0x7F <= code <= 0x9F, repr(label)
        assert not (0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069), repr(label)
    assert "pwned" not in label
    assert "\n" not in label


def test_label_of_untitled_and_very_long_titles() -> None:
    assert "untitled" in OfflineAnswer(pq("q", title=""), 90.0).label()
    long_label = OfflineAnswer(pq("q", title="x" * 500), 90.0).label()
    assert len(long_label) < 150
