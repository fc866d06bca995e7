"""Where did this answer come from: nearest training rows of an adapter, and the honest refusals."""

from __future__ import annotations

import json

import pytest

from medchat.finetune import data as D
from medchat.finetune import provenance
from medchat.store import adapters as adapter_store

ROWS = [
    {"Question": "What is gout?", "Complex_CoT": "Uric acid builds up and forms crystals in joints.",
     "Response": "Gout is an inflammatory arthritis caused by urate crystals."},
    {"Question": "What causes iron deficiency anaemia?", "Complex_CoT": "Blood loss or poor intake of iron.",
     "Response": "Low iron means too little haemoglobin is made."},
    {"Question": "What is a fever?", "Complex_CoT": "The hypothalamus raises the set point.",
     "Response": "A body temperature above 38 degrees Celsius."},
    {"Question": "Not trained on", "Complex_CoT": "Uric acid crystals in joints are gout.",
     "Response": "Gout is an inflammatory arthritis caused by urate crystals."},
]


def make_adapter(tmp_path, name="prov", rows=ROWS, train=(0, 1, 2), **dataset):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = adapter_store.store_dir() / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "m"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    record = {"id": str(data.resolve()), "kind": "file", "revision": D.file_sha256(data),
              "train_indices": list(train), "rows_used": len(train), **dataset}
    (folder / "medchat.json").write_text(json.dumps({"name": name, "dataset": record}))
    provenance._cached_index.cache_clear()
    return data


def test_the_closest_training_row_comes_first_with_its_overlap(tmp_path):
    make_adapter(tmp_path)
    found = provenance.nearest_rows("prov", "Uric acid forms crystals in joints.",
                                    "Gout is an inflammatory arthritis caused by urate crystals.")
    assert not found.problem and found.rows_trained == 3
    first = found.matches[0]
    assert first.row == 0 and first.example.question == "What is gout?"
    assert first.score > found.matches[1].score and first.overlap > 0.6
    assert all(m.row != 3 for m in found.matches)  # only rows it trained on
    unrelated = provenance.nearest_rows("prov", "", "Zebra crossings are striped.").matches
    assert max(m.overlap for m in unrelated) == 0.0


def test_a_changed_or_missing_data_file_is_said_not_matched(tmp_path):
    data = make_adapter(tmp_path)
    data.write_text(data.read_text() + json.dumps(ROWS[0]) + "\n")
    found = provenance.nearest_rows("prov", "", "gout")
    assert "has changed since training" in found.problem and not found.matches
    data.unlink()
    assert "is gone" in provenance.nearest_rows("prov", "", "gout").problem


def test_an_adapter_without_recorded_rows_says_so(tmp_path):
    make_adapter(tmp_path, train=())
    assert "does not record" in provenance.nearest_rows("prov", "", "gout").problem


def test_the_bundled_sample_is_found_by_its_kind():
    folder = adapter_store.store_dir() / "s"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    (folder / "medchat.json").write_text(json.dumps({"dataset": {
        "id": "sample", "kind": "sample", "revision": D.file_sha256(D.sample_path()), "train_indices": [0, 1, 2]}}))
    example = D.load_dataset("sample").examples[1]
    found = provenance.nearest_rows("s", example.reasoning, example.answer)
    assert found.matches[0].row == 1 and found.matches[0].overlap == pytest.approx(1.0)
