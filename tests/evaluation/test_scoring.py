"""The scoring self-test: strict extraction from the answer only, failures counted wrong, statistics."""

from __future__ import annotations

import pytest

from medchat.evaluation.benchmarks import Item, mcq_prompt
from medchat.evaluation.contamination import find_contaminated, normalise
from medchat.evaluation.extract import extract_decision, extract_letter
from medchat.evaluation.run import Reply, score_side
from medchat.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_ci

OPTS = (("A", "Naloxone"), ("B", "Flumazenil"), ("C", "Atropine"), ("D", "Protamine"))


def items(golds: str) -> list[Item]:
    return [Item(str(i), f"q{i}", mcq_prompt(f"q{i}", OPTS), g, OPTS) for i, g in enumerate(golds)]


@pytest.mark.parametrize("answer,letter", [
    ("B", "B"), ("(B)", "B"), ("**B.**", "B"), ("B. Flumazenil", "B"), ("B) Flumazenil reverses it", "B"),
    ("The answer is B.", "B"), ("Answer: (C)", "C"), ("The correct option is D - protamine", "D"),
    ("So \\boxed{A}", "A"), ("Flumazenil", "B"), ("flumazenil.", "B"),
    ("A 45-year-old would need naloxone", ""),  # the article "A", not a choice
    ("The answer is B, or maybe C. Answer: C", ""),  # two different letters: not readable
    ("The answer is E", ""),  # not an option
    ("Flumazenil or naloxone", ""),  # no fuzzy matching
    ("", ""),
])
def test_extract_letter(answer, letter):
    assert extract_letter(answer, OPTS) == letter


@pytest.mark.parametrize("answer,decision", [
    ("Yes.", "yes"), ("no, it does not", "no"), ("The answer is maybe", "maybe"), ("**Maybe**", "maybe"),
    ("Answer: yes", "yes"), ("It is unclear", ""), ("Yes. The answer is no.", ""),
])
def test_extract_decision(answer, decision):
    assert extract_decision(answer) == decision


def test_gold_letters_score_everything():
    golds = "ABCDBA"
    summary, extracted, correct = score_side(items(golds), [Reply("r", f"The answer is {g}.", 5, 3, "stop")
                                                            for g in golds])
    assert summary["accuracy"] == 1.0 and summary["extraction_failures"] == 0 and all(correct)
    assert summary["closed_rate"] == 1.0 and extracted == list(golds)


def test_no_letter_scores_nothing_and_every_row_is_a_failure():
    golds = "ABCD"
    summary, _, _ = score_side(items(golds), [Reply("I think it is B", "I am not sure.", 5, 3, "stop")] * 4)
    assert summary["accuracy"] == 0.0 and summary["extraction_failure_rate"] == 1.0


def test_a_letter_only_in_the_reasoning_does_not_count():
    golds = "BB"
    replies = [Reply("The answer is B. B. Flumazenil.", "", 40, 0, "length_in_reasoning"),
               Reply("Clearly B.", "Hard to say.", 10, 3, "stop")]
    summary, extracted, _ = score_side(items(golds), replies)
    assert extracted == ["", ""] and summary["accuracy"] == 0.0 and summary["extraction_failures"] == 2
    assert summary["cut_in_reasoning_rate"] == 0.5 and summary["closed_rate"] == 0.5


def test_mcnemar_exact_matches_the_binomial():
    base = [True] * 10 + [False] * 10
    same = list(base)
    assert mcnemar_exact(base, same) == 1.0
    tuned = [True] * 10 + [True] * 8 + [False] * 2  # 8 rows only the adapter got right, none the other way
    assert mcnemar_exact(base, tuned) == pytest.approx(2 / 2**8)
    # b=1, c=6: two-sided p = 2 * (C(7,0)+C(7,1)) / 2**7 = 0.125
    assert mcnemar_exact([True] + [False] * 6, [False] + [True] * 6) == pytest.approx(0.125)


def test_bootstrap_intervals_hold_the_estimate_and_repeat():
    outcomes = [True] * 30 + [False] * 70
    lo, hi = bootstrap_ci(outcomes)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_ci(outcomes) == (lo, hi)
    dlo, dhi = paired_bootstrap_ci([False] * 100, outcomes)
    assert dlo < 0.3 < dhi and dlo > 0
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_contamination_exact_and_near_duplicates():
    trained = ["Which drug reverses benzodiazepine sedation in an overdose patient arriving at the emergency room?",
               "What causes anaemia in chronic kidney disease?"]
    questions = [
        "which drug REVERSES benzodiazepine sedation, in an overdose patient arriving at the emergency room",  # same
        "Which drug reverses benzodiazepine sedation in an overdose patient arriving at the emergency room "
        "after a party?",  # near-duplicate
        "Which artery is occluded with ST elevation in II, III and aVF?",  # clean
    ]
    found = find_contaminated(questions, trained)
    assert found[0].kind == "exact" and found[1].kind == "near" and 2 not in found
    assert normalise("A,  b!") == "a b"
