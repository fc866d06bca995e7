"""`medchat bench`: the pieces that need no model (ratios, the table, the generated training rows), and
one slow run end to end on a tiny random model."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from medchat.bench.measure import ratios
from medchat.bench.rows import make_rows
from medchat.cli.bench import print_table


def test_ratios_compare_the_engine_with_each_reference():
    fig = {"engine": {"decode_tok_s": 250.0, "ttft_s": 0.1}, "generate": {"decode_tok_s": 25.0, "ttft_s": 0.05},
           "unsloth": {"error": "no GPU"}}
    assert ratios(fig) == {"engine_vs_generate_decode": 10.0, "generate_vs_engine_ttft": 0.5}


def test_table_shows_failures_in_one_line(capsys):
    print_table({"device": {"name": "cpu"}, "settings": {"model": "m"}, "backend_info": {"decoder": "d"},
                 "figures": {"startup_help_s": 0.1, "engine": {"ttft_s": 0.2, "decode_tok_s": 9.0, "completion_tokens": 8},
                             "generate": {"error": "boom"}}, "ratios": {}})
    out = capsys.readouterr().out
    assert "plain model.generate" in out and "failed: boom" in out and "9.0" in out


class WordTokenizer:
    """One token per whitespace-separated word (enough to test the length law)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_generated_rows_have_medical_o1_shape_and_realistic_lengths(tmp_path):
    path = tmp_path / "rows.jsonl"
    lengths = make_rows(path, WordTokenizer(), n=200)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 200 and set(rows[0]) == {"Question", "Complex_CoT", "Response"}
    assert all(r["Question"] and r["Complex_CoT"] and r["Response"] for r in rows)
    assert 700 <= statistics.median(lengths) <= 900 and 1300 <= max(lengths) <= 1600


def test_bench_help_lists_its_flags():
    r = subprocess.run([sys.executable, "-m", "medchat", "bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--model", "--adapter", "--backend", "--decoder", "--train", "--json"):
        assert flag in r.stdout


@pytest.mark.slow
def test_bench_measures_a_tiny_model_with_an_adapter_in_worker_processes(tmp_path):
    """`medchat bench --json` end to end on a random two-layer model (benchmarks/make_model.py) with a
    random LoRA adapter: the engine and plain-generate workers (`python -m medchat.bench.worker`) run,
    the reference worker attaches the adapter through the loading core, and the ratios come out."""
    root = Path(__file__).resolve().parents[2]
    model, adapter = tmp_path / "tiny", tmp_path / "adapter"
    made = subprocess.run([sys.executable, str(root / "benchmarks" / "make_model.py"), str(model), "tiny",
                           "--fit-vocab"], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    lora = ("import sys; sys.path.insert(0, sys.argv[3]); import harness; "
            "harness.random_lora(harness.load_model(sys.argv[1], device='cpu')).save_pretrained(sys.argv[2])")
    made = subprocess.run([sys.executable, "-c", lora, str(model), str(adapter), str(root / "benchmarks")],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "medchat", "bench", "--model", str(model), "--adapter", str(adapter),
                        "--max-new-tokens", "6", "--json"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    engine, generate = result["figures"]["engine"], result["figures"]["generate"]
    assert "error" not in engine and "error" not in generate, (engine, generate)
    assert engine["completion_tokens"] == 6 and engine["decode_tok_s"] > 0 and generate["decode_tok_s"] > 0
    assert result["backend_info"]["adapter"] == str(adapter)
    assert set(result["ratios"]) == {"engine_vs_generate_decode", "generate_vs_engine_ttft"}
    assert result["device"]["cuda"] is False and result["versions"]["torch"]
