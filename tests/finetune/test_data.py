"""The fine-tuning data layer on tiny fixtures: every shape, every file type, every bad-row case."""

from __future__ import annotations

from pathlib import Path

import pytest

from medchat.errors import DataError, UsageError
from medchat.finetune import data as D

HERE = Path(__file__).parent / "data"


def load(name: str, **kw) -> D.Dataset:
    return D.load_dataset(str(HERE / name), **kw)


# -- shapes and file types ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["o1.json", "o1.jsonl", "o1.parquet"])
def test_medical_o1_files(name):
    ds = load(name)
    assert ds.shape == "medical-o1"
    assert len(ds.examples) == 3
    assert ds.examples[0] == D.Example("What causes scurvy?", "Collagen needs vitamin C.", "Vitamin C deficiency.")
    assert ds.source.kind == "file" and ds.source.revision.startswith("sha256:")


@pytest.mark.parametrize("name", ["o1_bom.csv", "o1_nobom.csv"])
def test_csv_with_and_without_bom(name):
    ds = load(name)
    assert ds.shape == "medical-o1"
    assert [e.question for e in ds.examples] == ["What causes scurvy?", "First-line drug for anaphylaxis?"]


def test_key_case_tolerated_and_extra_keys_ignored():
    ds = load("o1.jsonl")
    assert ds.examples[1].answer == "Intramuscular adrenaline."  # row with an extra "source" key
    assert ds.examples[2].reasoning == "Pneumococcus is the commonest."  # lower-case keys


def test_alpaca_shape_joins_instruction_and_input():
    ds = load("alpaca.jsonl")
    assert ds.shape == "alpaca"
    assert ds.examples[0] == D.Example("What is the antidote for paracetamol overdose?", "", "Acetylcysteine.")
    assert ds.examples[1].question == "Answer the question.\n\nWhat does ferritin measure?"


def test_messages_shape_splits_think_tags():
    ds = load("messages.jsonl")
    assert ds.shape == "messages"
    assert ds.examples[0] == D.Example("Why is the chest barrel-shaped in COPD?", "Air trapping.", "Hyperinflation.")
    assert ds.examples[1] == D.Example("What is gout?", "", "Urate crystal arthritis.")


def test_sharegpt_shape():
    ds = load("sharegpt.json")
    assert ds.shape == "sharegpt"
    assert ds.examples[0] == D.Example("What is croup?", "", "Viral laryngotracheobronchitis.")


def test_columns_mapping():
    ds = load("custom.jsonl", columns="question=prompt, reasoning=why, answer=reply")
    assert ds.shape == "columns"
    assert ds.examples[0] == D.Example("What is SIADH?", "ADH excess retains water.", "Inappropriate ADH secretion.")


@pytest.mark.parametrize("text, message", [
    ("question=prompt", "must name answer"),
    ("question=prompt,answer", "expected ROLE=COLUMN"),
    ("question=a,answer=b,cot=c", "unknown role"),
])
def test_bad_columns_flag(text, message):
    with pytest.raises(UsageError, match=message):
        D.parse_columns(text)


def test_columns_naming_a_missing_key_reports_the_row():
    with pytest.raises(DataError, match=r"row 1: missing key 'nope'"):
        load("custom.jsonl", columns="question=nope,answer=reply")


def test_bundled_sample_is_medical_o1_and_big_enough():
    ds = D.load_dataset("sample")
    assert ds.shape == "medical-o1" and ds.source.kind == "sample"
    assert 60 <= len(ds.examples) <= 120
    assert all(e.reasoning and e.answer for e in ds.examples)
    assert sum(bool(e.options and e.gold) for e in ds.examples) >= 8  # for the report card's accuracy


# -- bad rows and bad files: one clear error, naming the row and the key ---------------------------

@pytest.mark.parametrize("name, message", [
    ("bad_missing_key.jsonl", r"row 2: missing key 'Complex_CoT'"),
    ("bad_empty_value.jsonl", r"row 3: key 'Response' is empty"),
    ("bad_null.jsonl", r"row 1: key 'Question' is empty \(null\)"),
    ("bad_type.jsonl", r"row 2: key 'Question' must be text, got list"),
    ("bad_nan.jsonl", r"row 2: key 'Question' is nan \(a missing value\?\), not text"),
    ("bad_number.jsonl", r"row 1: key 'output' must be text, got the number 70"),
    ("bad_json_line.jsonl", r"line 2: not valid JSON"),
    ("bad_not_object.jsonl", r"line 1: expected a JSON object, got list"),
    ("empty.jsonl", r"no rows \(the file is empty\)"),
    ("empty.csv", r"no rows"),
    ("bad_shape.jsonl", r"unrecognised row shape: row 1 has keys \['text'\]"),
    ("bad_messages.jsonl", r"row 1: messages has no assistant reply"),
    ("bad_role.jsonl", r"row 1: conversations\[1\] has unknown from 'narrator'"),
    ("bad_utf8.csv", r"not UTF-8 text"),
    ("bad.json", r"expected a JSON array of rows"),
    ("broken.json", r"not valid JSON"),
    ("bad.parquet", r"not a readable Parquet file"),
    ("notes.txt", r"unsupported file type '.txt'"),
])
def test_bad_files_are_refused_with_a_clear_message(name, message):
    with pytest.raises(DataError, match=message):
        load(name)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        D.load_dataset(str(tmp_path / "rows.jsonl"))
    with pytest.raises(DataError, match="is a folder"):
        D.load_dataset(str(tmp_path))


def test_hub_id_offline_and_not_cached_is_one_clear_error():
    # conftest sets HF_HUB_OFFLINE=1: nothing is cached under this id.
    with pytest.raises(DataError, match="not in the local cache"):
        D.load_dataset("nobody-here/no-such-medical-set", offline=True)


def test_classify():
    assert D.classify("sample") == "sample"
    assert D.classify("FreedomIntelligence/medical-o1-reasoning-SFT") == "hub"
    with pytest.raises(DataError):
        D.classify("not a valid id!")


# -- multiple choice ---------------------------------------------------------------------------------

def test_multiple_choice_from_question_lines_and_leading_letter():
    ex = load("o1.jsonl").examples[2]
    assert [k for k, _ in ex.options] == ["A", "B", "C"] and ex.gold == "B"


def test_multiple_choice_from_explicit_fields():
    ex = load("mc_options.jsonl", columns="question=question,answer=answer").examples[0]
    assert ex.options == (("A", "Amlodipine"), ("B", "Propranolol")) and ex.gold == "B"


@pytest.mark.parametrize("answer, letter", [
    ("B. Propranolol", "B"), ("(A) amlodipine", "A"), ("The answer is B because", "B"),
    ("Propranolol, a non-selective beta-blocker", "B"), ("I am not sure", ""),
])
def test_predicted_letter(answer, letter):
    assert D.predicted_letter(answer, (("A", "Amlodipine"), ("B", "Propranolol"))) == letter


# -- row selection -----------------------------------------------------------------------------------

def test_selection_is_seeded_disjoint_and_recorded():
    a = D.select_rows(81, samples=16, eval_rows=4, seed=1)
    b = D.select_rows(81, samples=16, eval_rows=4, seed=1)
    assert a == b and len(a.train) == 16 and len(a.eval) == 4
    assert not set(a.train) & set(a.eval)
    assert D.select_rows(81, samples=16, eval_rows=4, seed=2).train != a.train


def test_first_n_keeps_the_first_rows_and_holds_out_others():
    s = D.select_rows(50, samples=10, first=True, eval_rows=3)
    assert s.train == tuple(range(10)) and all(i >= 10 for i in s.eval)


def test_fraction_and_all_rows():
    assert len(D.select_rows(100, fraction=0.1).train) == 10
    tiny = D.select_rows(81, fraction=0.005)  # 0.4 rows: one row, said so, never "all of them"
    assert len(tiny.train) == 1 and "rounds to none" in tiny.note
    assert len(D.select_rows(10, eval_rows=2).train) == 8


def test_prefer_eval_fills_half_of_the_held_out_rows():
    s = D.select_rows(100, eval_rows=4, prefer_eval=[97, 98, 99], seed=5)
    assert len(set(s.eval) & {97, 98, 99}) == 2


def test_too_few_rows():
    s = D.select_rows(10, samples=16, eval_rows=4)
    assert len(s.train) == 6 and "only 6" in s.note
    with pytest.raises(DataError, match="leaves no rows"):
        D.select_rows(4, eval_rows=4)


# -- formatting and the render check (a character-level tokenizer stands in for a real one) ----------

class CharTokenizer:
    """Each character is a token; no chat template (so chat_template style falls back to r1-medical)."""

    eos_token = "</s>"
    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(map(chr, ids))


EX = D.Example("Why does CKD cause anaemia?", "Less erythropoietin.", "Reduced EPO production.")


@pytest.mark.parametrize("style, prefill", [("r1-medical", True), ("task-query-answer", False)])
def test_format_uses_the_chat_prompt_and_think_tags(style, prefill):
    [row] = D.format_examples(CharTokenizer(), style, "sys", [EX])
    assert row.completion.endswith("Reduced EPO production.</s>")
    assert ("<think>" in row.completion) is not prefill
    assert "</think>" in row.completion
    facts = D.render_check(CharTokenizer(), style, "sys", EX, max_len=4096)
    assert facts["prefills_think"] is prefill
    assert facts["completion_tokens"] == len(row.completion)


def test_no_reasoning_style_has_no_think_tags():
    [row] = D.format_examples(CharTokenizer(), "medical-qa", "", [EX])
    assert "think>" not in row.completion and row.prompt.endswith("### Medical Answer:\n")


def test_render_check_refuses_when_no_completion_tokens_remain():
    with pytest.raises(DataError, match="no completion tokens remain"):
        D.render_check(CharTokenizer(), "r1-medical", "", EX, max_len=100)


def test_render_check_refuses_when_prompt_tokens_merge_into_the_completion():
    class Merging(CharTokenizer):
        def __call__(self, text, add_special_tokens=True):  # "\n<" becomes one token
            ids, i = [], 0
            while i < len(text):
                if text.startswith("\n<", i):
                    ids.append(0)
                    i += 2
                else:
                    ids.append(ord(text[i]))
                    i += 1
            return {"input_ids": ids}

    with pytest.raises(DataError, match="merge with the completion"):
        D.render_check(Merging(), "task-query-answer", "", EX, max_len=4096)


def test_distribution():
    assert D.distribution([5, 1, 3]) == {"min": 1, "p50": 3, "p90": 5, "max": 5, "mean": 3}
    assert D.distribution([]) == {}
