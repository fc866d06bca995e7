"""Red-flag symptom detection: the emergency notice shown above an answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from medchat.safety import DISCLAIMER, notice_text, red_flag, red_flags


@pytest.mark.parametrize(
    "text, category",
    [
        ("I have crushing chest pain and I'm short of breath", "cardiac"),
        ("My dad has chest tightness and is sweating a lot", "cardiac"),
        ("pressure in my chest radiating to my left arm", "cardiac"),
        ("I think I'm having a heart attack", "cardiac"),
        ("her face is drooping on one side", "stroke"),
        ("sudden weakness in my left arm and slurred speech", "stroke"),
        ("He can't speak properly since this morning", "stroke"),
        ("worst headache of my life, came on suddenly", "stroke"),
        ("I keep thinking about suicide", "suicide"),
        ("I want to kill myself", "suicide"),
        ("sometimes I cut myself when I'm stressed", "suicide"),
        ("I don't want to live anymore", "suicide"),
        ("my throat is swelling after eating peanuts", "anaphylaxis"),
        ("lips swollen and trouble breathing after a bee sting, is this anaphylaxis?", "anaphylaxis"),
        ("the bleeding won't stop after I cut my hand", "bleeding"),
        ("I've been vomiting blood", "bleeding"),
        ("my friend is unconscious and not breathing", "unresponsive"),
        ("I took a whole bottle of paracetamol", "poisoning"),
        ("my child swallowed bleach", "poisoning"),
        ("fever and a stiff neck with a headache", "meningitis"),
        ("CHEST PAIN\nand\nshortness   of breath", "cardiac"),  # case and line breaks
    ],
)
def test_red_flag_categories(text, category):
    flag = red_flag(text)
    assert flag is not None, text
    assert category in {f.category for f in red_flags(text)}
    assert "emergency" in flag.notice.lower() or "988" in flag.notice


@pytest.mark.parametrize(
    "text",
    [
        "What is hypertension?",
        "How does metformin work in type 2 diabetes?",
        "I have a mild cough and a runny nose",
        "no chest pain, but some shortness of breath when running",  # negated chest pain
        "Chest pain after lifting weights yesterday, no other symptoms",  # chest pain alone
        "What is the normal range of potassium?",
        "I had a stroke of luck with my exams",
        "I took too many breaks today",
        "Explain the difference between type 1 and type 2 diabetes",
    ],
)
def test_ordinary_questions_have_no_notice(text):
    assert red_flag(text) is None
    assert notice_text(text) is None


def test_suicide_comes_first_and_all_categories_are_listed():
    text = "I want to die and I have chest pain with shortness of breath"
    flags = red_flags(text)
    assert [f.category for f in flags][:2] == ["suicide", "cardiac"]
    assert notice_text(text).count("\n") == 1


def test_disclaimer_says_information_not_advice():
    assert "medical information, not medical advice" in DISCLAIMER


# The triage set: written from public triage guidance (NHS 111, Manchester Triage System discriminators,
# poison-centre advice) before the rules were tuned; see the file's header.
TRIAGE_SET = Path(__file__).parent / "fixtures" / "red_flags.tsv"


def triage_rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in TRIAGE_SET.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, category, text = line.split("\t")
            assert kind in {"emergency", "ordinary"}, line
            rows.append((kind, category, text))
    return rows


def test_the_triage_set_is_large_and_varied_enough():
    rows = triage_rows()
    emergencies = [r for r in rows if r[0] == "emergency"]
    assert len(rows) >= 200 and len(emergencies) >= 120 and len(rows) - len(emergencies) >= 80
    assert len({category for _, category, _ in emergencies}) >= 15
    assert len({text for _, _, text in rows}) == len(rows)  # no duplicates inflating the figures


def test_recall_and_false_alarms_on_the_triage_set():
    rows = triage_rows()
    missed = [text for kind, _, text in rows if kind == "emergency" and not red_flags(text)]
    alarms = [text for kind, _, text in rows if kind == "ordinary" and red_flags(text)]
    emergencies = sum(kind == "emergency" for kind, _, _ in rows)
    recall = 1 - len(missed) / emergencies
    false_alarm_rate = len(alarms) / (len(rows) - emergencies)
    assert recall >= 0.95, f"recall {recall:.1%}; missed: {missed}"
    assert false_alarm_rate <= 0.10, f"false alarms {false_alarm_rate:.1%}: {alarms}"


@pytest.mark.parametrize("text, category", [
    # The categories an outside set found missing.
    ("i took 20 paracetamol about an hour ago", "poisoning"),
    ("my 6 week old baby has a temperature of 38.5", "infant"),
    ("my baby is floppy and wont feed", "infant"),
    ("i'm 8 weeks pregnant with bad pain on one side and bleeding", "pregnancy"),
    ("my lips and fingertips have turned blue", "breathing"),
    ("she is gasping for air", "breathing"),
    ("sudden tearing pain in my chest going through to my back", "cardiac"),
    ("my son has been fitting for 6 minutes", "seizure"),
    ("my 2yo swallowed a button battery", "poisoning"),
    ("drank drain cleaner by accident", "poisoning"),
    ("i cut my wrists and it wont stop bleeding", "suicide"),
    ("black tarry poo for 2 days and i feel dizzy when i stand", "bleeding"),
    ("I've been vomiting blood", "bleeding"),
    ("got stung by a bee 10 mins ago, hives everywhere and feel faint", "anaphylaxis"),
    ("heart racing really fast and i fainted", "heart-rhythm"),
])
def test_the_categories_once_missed_are_caught(text, category):
    assert category in {f.category for f in red_flags(text)}, text


@pytest.mark.parametrize("text", [
    "How does aspirin prevent heart attacks?",
    "A 65-year-old man presents with crushing chest pain radiating to the left arm. What is the most likely diagnosis?",
    "Which of the following is the first-line treatment of anaphylaxis? A) IV hydrocortisone B) IM adrenaline",
    "my grandfather had a heart attack 10 years ago, should I get my cholesterol checked?",
    "I had anaphylaxis to penicillin as a child, can I take amoxicillin?",
    "Markdown exports put each reasoning in a collapsed <details> block",
])
def test_questions_about_medicine_and_the_past_raise_no_alarm(text):
    assert red_flags(text) == [], text


def test_every_category_has_a_notice_that_says_what_to_do():
    from medchat.safety import NOTICES, SIGNS

    assert set(SIGNS) == set(NOTICES)
    for category in SIGNS:
        title, advice = NOTICES[category]
        assert "emergency" in (title + advice).lower() or "988" in advice, category
