"""`medchat eval` refuses bad input with one line, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FIX = Path(__file__).parents[1] / "evaluation" / "fixtures"


def medchat(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDCHAT_HOME": str(home), "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run([sys.executable, "-m", "medchat", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("content, says", [
    ('{"prompt": "hi", "completion": "there"}\n', "unrecognised benchmark shape: row 1 has keys ['completion', 'prompt']"),
    ('{"question": "q", "opa": "x", "opb": "y", "cop": "z"}\n', "row 1: key 'cop' must be an option number"),
    ('{"question": "q", "choices": ["x", "y"], "answer": 7}\n', "row 1: key 'answer' 7 is not an option"),
    ("not json\n", "line 1: not valid JSON"),
])
def test_bad_benchmark_files_give_one_line(tmp_path, content, says):
    bad = tmp_path / "bench.jsonl"
    bad.write_text(content)
    r = medchat("eval", "--model", "smollm2", "--benchmark", str(bad), home=tmp_path / "home")
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("medchat: error: "), r.stderr
    assert says in lines[0] and "Traceback" not in r.stderr


def test_eval_needs_a_model_or_adapter_and_labels_only_for_pubmedqa(tmp_path):
    r = medchat("eval", "--benchmark", str(FIX / "medqa_test.jsonl"), home=tmp_path)
    assert r.returncode == 2 and "give --adapter NAME" in r.stderr
    r = medchat("eval", "--model", "smollm2", "--benchmark", str(FIX / "medqa_test.jsonl"),
                "--labels", str(FIX / "test_ground_truth.json"), home=tmp_path)
    assert r.returncode == 2 and "--labels is for PubMedQA" in r.stderr
