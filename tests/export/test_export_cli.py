"""`medchat export --gguf / --verify` refusals that come before any model loads (no real model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def medchat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medchat", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


@pytest.fixture
def adapter(tmp_path):
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medchat: error: "), r.stderr
    return lines[0].removeprefix("medchat: error: ")


def test_k_quants_say_how_to_make_them_in_one_line(adapter, tmp_path):
    r = medchat("export", "--adapter", str(adapter), "--gguf", str(tmp_path / "x.gguf"), "--quant", "q4_k_m")
    assert r.returncode == 2
    line = one_error_line(r)
    assert "llama-quantize" in line and "--quant f16" in line and "--verify" in line
    assert not list(tmp_path.glob("*.gguf"))


def test_an_existing_file_or_modelfile_is_never_overwritten(adapter, tmp_path):
    (tmp_path / "x.gguf").write_text("mine")
    r = medchat("export", "--adapter", str(adapter), "--gguf", str(tmp_path / "x.gguf"))
    assert r.returncode == 2 and "already exists" in one_error_line(r)
    (tmp_path / "y.Modelfile").write_text("mine")
    r = medchat("export", "--adapter", str(adapter), "--gguf", str(tmp_path / "y.gguf"))
    assert r.returncode == 2 and "y.Modelfile already exists" in one_error_line(r)
    assert (tmp_path / "x.gguf").read_text() == "mine" and not (tmp_path / "y.gguf").exists()


def test_gguf_needs_the_gguf_suffix(adapter, tmp_path):
    r = medchat("export", "--adapter", str(adapter), "--gguf", str(tmp_path / "x.bin"))
    assert r.returncode == 2 and "ending in .gguf" in one_error_line(r)


def test_verify_refuses_a_file_that_is_not_gguf_before_loading_the_model(adapter, tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 20)
    r = medchat("export", "--adapter", str(adapter), "--verify", str(junk))
    assert r.returncode != 0 and one_error_line(r).startswith(f"{junk} is not a readable GGUF file")
