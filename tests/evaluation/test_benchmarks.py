"""Benchmark readers on fixtures in the public files' shapes (MedQA jsonl, MedMCQA dev.json, PubMedQA
ori_pqal.json + ground truth, MMLU rows, medical-o1 rows with options)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.cli.eval import load_benchmark
from medchat.errors import DataError, UsageError
from medchat.evaluation.benchmarks import detect_shape, sample, to_items

FIX = Path(__file__).parent / "fixtures"


def load(name: str, labels: str | None = None):
    return load_benchmark(str(FIX / name), FIX / labels if labels else None, "", "test", True)


def test_medqa_shape_with_five_options():
    bench = load("medqa_test.jsonl")
    assert bench.shape == "medqa" and len(bench.items) == 5 and bench.skipped == 0
    assert [it.gold for it in bench.items] == ["B", "C", "A", "D", "C"]
    assert "E. Atropine" in bench.items[3].prompt and bench.digest.startswith("sha256:")


def test_medmcqa_original_release_is_one_based():
    bench = load("medmcqa_dev.json")  # JSON lines despite .json, like the real dev.json
    assert bench.shape == "medmcqa"
    assert [it.gold for it in bench.items] == ["A", "C", "B", "D"]
    assert any("1-4" in n for n in bench.notes)


def test_medmcqa_hub_copy_is_zero_based_and_skips_hidden_answers():
    rows = [{"question": "q1", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 0},
            {"question": "q2", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 3},
            {"question": "q3", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": -1}]
    bench = to_items(rows, "medmcqa", "hub", source_kind="hub")
    assert [it.gold for it in bench.items] == ["A", "D"] and bench.skipped == 1
    # Only 1-3 seen: the convention follows where the rows came from, and is reported.
    ambiguous = [dict(rows[0], cop=2)]
    assert to_items(ambiguous, "medmcqa", "f", source_kind="hub").items[0].gold == "C"
    assert to_items(ambiguous, "medmcqa", "f", source_kind="file").items[0].gold == "B"
    with pytest.raises(DataError, match="0 to 4"):
        to_items([dict(rows[0], cop=0), dict(rows[0], cop=4)], "medmcqa", "f")


def test_pubmedqa_object_keyed_by_pmid_and_labels_file():
    bench = load("ori_pqal.json")
    assert bench.shape == "pubmedqa" and [it.gold for it in bench.items] == ["yes", "no", "maybe"]
    assert bench.items[0].id == "21645374" and "Context:" in bench.items[0].prompt
    assert all(it.kind == "yesno" for it in bench.items)
    labelled = load("ori_pqal.json", "test_ground_truth.json")
    assert [it.gold for it in labelled.items] == ["yes", "no", "maybe"]


def test_pubmedqa_labels_decide_and_missing_pmids_are_skipped(tmp_path):
    labels = tmp_path / "gt.json"
    labels.write_text(json.dumps({"21645374": "no"}))
    bench = load_benchmark(str(FIX / "ori_pqal.json"), labels, "", "test", True)
    assert [it.gold for it in bench.items] == ["no"] and bench.skipped == 2


def test_mmlu_and_medical_o1_shapes():
    mmlu = load("mmlu_clinical.jsonl")
    assert mmlu.shape == "mmlu" and [it.gold for it in mmlu.items] == ["B", "B", "C"]
    o1 = load("medical_o1_mcq.jsonl")
    assert o1.shape == "medical-o1" and [it.gold for it in o1.items] == ["B", "C"] and o1.skipped == 1


def test_wrong_shapes_give_one_line(tmp_path):
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"text": "hello", "label": 1}\n')
    with pytest.raises(DataError, match="unrecognised benchmark shape: row 1 has keys \\['label', 'text'\\]"):
        load_benchmark(str(bad), None, "", "test", True)
    broken = tmp_path / "medqa.jsonl"
    broken.write_text('{"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}\n'
                      '{"question": "q2", "options": {"A": "x", "B": "y"}, "answer_idx": "F"}\n')
    with pytest.raises(DataError, match="row 2: key 'answer_idx' is 'F'"):
        load_benchmark(str(broken), None, "", "test", True)
    with pytest.raises(UsageError, match="--labels is for PubMedQA"):
        load_benchmark(str(FIX / "medqa_test.jsonl"), FIX / "test_ground_truth.json", "", "test", True)
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.jsonl"), None, "", "test", True)


def test_detect_and_sample_are_stable():
    rows = [{"question": f"q{i}", "choices": ["a", "b"], "answer": 0} for i in range(10)]
    assert detect_shape(rows, "x") == "mmlu"
    items = to_items(rows, "mmlu", "x").items
    assert sample(items, 4, 1) == sample(items, 4, 1) and len(sample(items, 4, 1)) == 4
    assert sample(items, None, 1) == items
