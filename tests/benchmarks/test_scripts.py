"""The benchmark suite (benchmarks/): every script answers --help without a GPU and without importing
torch, and the shared harness names, times and records results as its README says."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
SHELL_SCRIPTS = sorted(BENCHMARKS.glob("*.sh"))
MODEL_LIBRARIES = {"torch", "transformers", "peft", "trl", "unsloth", "bitsandbytes", "torchao"}

sys.path.insert(0, str(BENCHMARKS))
import harness  # noqa: E402


def imported(stderr: str) -> set[str]:
    """Modules named by `python -X importtime` (one per line: self | cumulative | module)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@functools.lru_cache(maxsize=None)
def help_run(script: Path) -> subprocess.CompletedProcess:
    """`python -X importtime SCRIPT --help`, once per script for both tests."""
    return subprocess.run([sys.executable, "-X", "importtime", str(script), "--help"], capture_output=True,
                          text=True, timeout=120, cwd=BENCHMARKS.parent)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_answers_help(script):
    run = help_run(script)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_imports_no_model_library(script):
    """So that --help is instant and works where torch is not installed (the GPU kit's scripts included)."""
    heavy = imported(help_run(script).stderr) & MODEL_LIBRARIES
    assert not heavy, f"{script.name} --help imports {sorted(heavy)}: import them inside main()"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_every_shell_script_answers_help(script):
    run = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "usage" in run.stdout, run.stdout + run.stderr


def test_results_dir_is_named_by_date_and_device(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    assert harness.results_dir("h100", "2026-11-27") == tmp_path / "2026-11-27-h100"
    assert (tmp_path / "2026-11-27-h100").is_dir()
    assert harness.results_dir("cpu", create=False).name == f"{harness.today()}-cpu"


@pytest.mark.parametrize("name,label", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
                                        ("NVIDIA A100-SXM4-80GB", "a100"), ("NVIDIA L40S", "l40s"),
                                        ("NVIDIA GeForce RTX 4090", "4090")])
def test_device_label_names_the_gpu_model(name, label):
    assert harness.device_label({"kind": "cuda", "name": name}) == label
    assert harness.device_label({"kind": "cpu", "name": name}) == "cpu"


def test_a_record_carries_figures_settings_command_device_and_versions(tmp_path, capsys):
    p = harness.parser("A probe.\n\nMore words.")
    p.add_argument("model")
    args = p.parse_args(["/tmp/m", "--out", str(tmp_path / "r.jsonl"), "--note", "call 3"])
    rec = harness.recorder("probe", args)
    rec.emit(tok_s=12.5, device="overwritten?")
    rec.emit(tok_s=13.0)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(harness.MARK)
    record = json.loads(line[len(harness.MARK):])
    assert record["bench"] == "probe" and record["tok_s"] == 12.5
    assert record["result_device"] == "overwritten?"  # a figure never hides the environment's keys
    assert record["settings"] == {"note": "call 3", "model": "/tmp/m"}
    assert record["command"].startswith("python ")
    assert record["device"]["kind"] in ("cpu", "cuda") and record["device"]["cpu_count"]
    assert record["versions"]["python"] and "utc" in record
    saved = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["tok_s"] for r in saved] == [12.5, 13.0]


def test_save_appends_to_the_scripts_file_in_the_results_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    p = harness.parser(None)
    rec = harness.recorder("probe", p.parse_args(["--save"]), echo=False)
    rec.emit(x=1)
    assert capsys.readouterr().out == ""
    (folder,) = tmp_path.iterdir()
    assert folder.name == f"{harness.today()}-{harness.device_label(rec.records[0]['device'])}"
    assert json.loads((folder / "probe.jsonl").read_text())["x"] == 1


def test_timings_run_warmups_untimed_and_need_no_torch():
    calls = []
    times = harness.timings(lambda: calls.append(1), runs=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)
    with harness.clock() as c:
        assert c.elapsed() >= 0
    assert c.seconds >= 0
    assert harness.per_second(100, 2.0) == 50.0 and harness.per_second(1, 0) == 0.0


@pytest.mark.slow
def test_a_tiny_random_model_goes_through_a_probe(tmp_path):
    """make_model.py + cpu_ab.py on a two-layer random model: the records they write."""
    model, out = tmp_path / "tiny", tmp_path / "records.jsonl"

    def run(*argv: str) -> None:
        r = subprocess.run([sys.executable, *argv, "--out", str(out)], capture_output=True, text=True,
                           timeout=600, cwd=BENCHMARKS.parent)
        assert r.returncode == 0, r.stderr[-2000:]

    run(str(BENCHMARKS / "make_model.py"), str(model), "tiny", "--fit-vocab")
    run(str(BENCHMARKS / "cpu_ab.py"), str(model), "4", "1")
    made, ab = (json.loads(x) for x in out.read_text().splitlines())
    assert made["bench"] == "make_model" and made["made"] == "tiny" and made["fit_vocab"]["zeroed_rows_from"]
    assert ab["bench"] == "cpu_ab" and ab["new_tokens"] == 4 and ab["generate"] > 0 and ab["loop-exact"] > 0
    assert ab["settings"]["model"] == str(model) and ab["device"]["torch_threads"] >= 1
