"""benchmarks/recipes.py's pieces that need no model: which shape stands in for each recipe's base, how
many rows a run needs, the check of a run's settings against its recipe, and the table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import recipes as bench  # noqa: E402

from medchat.finetune.recipes import find_recipe  # noqa: E402


@pytest.mark.parametrize("letter,shape", [("A", "8b"), ("B", "8b"), ("C", "qwen1.5b"), ("D", "8b"), ("E", "3b")])
def test_every_recipe_runs_on_its_bases_shape(letter, shape):
    recipe = find_recipe(letter)
    assert bench.shape_for(recipe.values["model"]) == shape
    assert bench.rows_kind(recipe) == {"C": "medical-o1-zh", "E": "alpaca"}.get(letter, "medical-o1-en")


def test_rows_cover_the_steps_under_the_recipes_own_selection():
    assert bench.rows_needed({"samples": 500, "batch_size": 2, "grad_accum": 4}, 12) == 500
    assert bench.rows_needed({"samples": 500, "batch_size": 2, "grad_accum": 4}, 100) == 800
    # E takes a tenth of its rows: 30 steps of 6 x 2 rows need 3,600 rows, and a margin
    assert bench.rows_needed({"fraction": 0.1, "batch_size": 6, "grad_accum": 2}, 30) == 3780


def test_steps_are_one_number_or_per_recipe():
    assert bench.parse_steps("2") == dict.fromkeys("ABCDE", 2)
    assert bench.parse_steps("a=5,C=7") == {**bench.DEFAULT_STEPS, "A": 5, "C": 7}
    with pytest.raises(SystemExit):
        bench.parse_steps("F=3")


def test_a_run_differs_from_its_recipe_only_where_the_benchmark_says_so(tmp_path):
    recipe = find_recipe("E")
    settings = json.loads(json.dumps(recipe.values))
    settings["model"] = "/tmp/l3b"
    settings["finetune"].update(dataset="/tmp/rows.json", max_steps=30, eval_rows=0, report_to="none")
    manifest = {"settings": settings}
    assert bench.settings_check(recipe.values, manifest, bench.OVERRIDDEN) == []
    settings["finetune"]["lora_r"] = 16
    settings["finetune"]["learning_rate"] = 2e-4
    assert bench.settings_check(recipe.values, manifest, bench.OVERRIDDEN) == [
        "finetune.lora_r: recipe 64, run 16", "finetune.learning_rate: recipe 5e-05, run 0.0002"]
    ft = recipe.values["finetune"]
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"r": 64, "lora_alpha": 128, "lora_dropout": 0.0, "use_rslora": True, "target_modules": ft["target_modules"][::-1]}))
    assert bench.adapter_check(tmp_path, ft) == []
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"r": 64, "lora_alpha": 128, "lora_dropout": 0.0, "use_rslora": False, "target_modules": ["q_proj", "v_proj"]}))
    assert len(bench.adapter_check(tmp_path, ft)) == 2


def test_the_table_has_a_row_per_recipe_failed_ones_with_their_reason():
    ok = {"recipe": "C", "shape": "qwen1.5b", "steps": 60, "steady_tok_s": 12345.6, "peak_gib": 3.21, "wall_s": 151.0,
          "status": "ok", "backend": "unsloth", "batching": "padding_free", "settings_diffs": [],
          "used": {"lora_r": 16, "lora_alpha": 16, "use_rslora": False, "learning_rate": 2e-4, "lr_scheduler": "linear",
                   "max_seq_length": 2048, "batch_size": 1, "grad_accum": 4, "prompt_style": "r1-medical",
                   "quantize": "4bit", "target_modules": list(bench.harness.LORA_TARGETS)},
          "written": {"adapter_mib": 70.1, "adapter_files": ["a", "b"], "merged": {"mib": 3400.0, "files": []}, "gguf": []},
          "merged_check": {"loaded": True, "architecture": "Qwen2ForCausalLM", "qkv_bias": True}}
    failed = {"recipe": "E", "shape": "3b", "steps_asked": 30, "status": "failed", "why": "exit 1", "wall_s": 20.0,
              "stderr_tail": "medchat: error: something"}
    text = bench.table([ok, failed])
    lines = text.splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| C | qwen1.5b | 60 | 12,346 | 3.2 | 16 / 16 / off | 0.0002, linear | 2048 | 1 × 4 | r1-medical |" in lines[2]
    assert "merged 3,400 MiB" in lines[2] and "merged loads (Qwen2ForCausalLM, q/k/v bias True)" in lines[2]
    assert lines[3].startswith("| E | 3b | 30 | – |") and lines[3].endswith("| failed |")
    assert "E: exit 1" in bench.footnotes([ok, failed]) and "medchat: error: something" in bench.footnotes([failed])
