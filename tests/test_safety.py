"""Red-flag symptom detection: the emergency notice shown above an answer."""

from __future__ import annotations

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
