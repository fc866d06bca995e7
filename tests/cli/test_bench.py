"""`medchat bench` pieces that need no model: ratios, the table, the generated training rows."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from medchat.bench.measure import ratios
from medchat.bench.rows import make_rows
from medchat.bench.table import print_table


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
