"""`medchat serve`, `medchat export` and `medchat ask --endpoint` at the command line (no real model)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from serve_fakes import ANSWER, REASONING, RepeatingFakeBackend

from medchat.cli.main import main
from medchat.server.background import serve_in_thread


def medchat(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medchat", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=timeout)


def test_ask_endpoint_uses_a_running_server(capsys):
    with serve_in_thread(RepeatingFakeBackend()) as server:
        main(["ask", "--endpoint", server.base_url, "--json", "What is 6 x 7?"])
    out = json.loads(capsys.readouterr().out)
    assert (out["reasoning"], out["answer"], out["backend"], out["model"]) == (REASONING, ANSWER, "endpoint", "fake-model")


def test_ask_endpoint_streams_reasoning_to_stderr_and_answer_to_stdout(capsys):
    with serve_in_thread(RepeatingFakeBackend()) as server:
        main(["ask", "--endpoint", server.base_url.removesuffix("/v1"), "What is 6 x 7?"])
    captured = capsys.readouterr()
    assert captured.out.strip() == ANSWER
    assert REASONING in captured.err


def test_ask_endpoint_with_a_key_and_without(capsys):
    from medchat.server import ServerConfig

    with serve_in_thread(RepeatingFakeBackend(), config=ServerConfig(api_key="k")) as server:
        main(["ask", "--endpoint", server.base_url, "--api-key", "k", "--json", "q"])
        assert json.loads(capsys.readouterr().out)["answer"] == ANSWER
        with pytest.raises(SystemExit) as exit_info:
            main(["ask", "--endpoint", server.base_url, "q"])
    assert exit_info.value.code == 7
    err = capsys.readouterr().err.strip()
    assert err.startswith("medchat: error: ") and "401" in err and "\n" not in err


def test_unreachable_endpoint_is_one_line_and_exit_7():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = medchat("ask", "--endpoint", f"http://127.0.0.1:{port}/v1", "hi")
    assert r.returncode == 7
    assert r.stderr.strip().splitlines() == [
        f"medchat: error: cannot reach http://127.0.0.1:{port}/v1: connection refused (is the server running?)"
    ]


def test_serve_on_a_busy_port_fails_at_once_before_loading_a_model():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = medchat("serve", "--port", str(port), "--model", "no-such-model", timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip() == f"medchat: error: cannot listen on 127.0.0.1:{port}: the port is already in use (try --port)"


def test_serve_help_lists_the_serving_flags():
    r = medchat("serve", "--help")
    assert r.returncode == 0
    for flag in ("--host", "--port", "--api-key", "--adapter", "--served-model-name", "--max-queue"):
        assert flag in r.stdout
    assert "--endpoint" not in r.stdout  # serve always loads a local model


@pytest.fixture
def fake_adapter(tmp_path):
    folder = tmp_path / "my-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def test_export_refuses_a_non_empty_folder_before_loading_anything(fake_adapter, tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    r = medchat("export", "--adapter", str(fake_adapter), "--merged", str(target))
    assert r.returncode == 2
    assert r.stderr.strip() == f"medchat: error: {target} is not empty; choose a new --merged folder (an export never overwrites)"
    assert (target / "keep.txt").read_text() == "mine"


def test_export_names_a_missing_adapter(tmp_path):
    r = medchat("export", "--adapter", "nope", "--merged", str(tmp_path / "out"))
    assert r.returncode == 4 and r.stderr.startswith("medchat: error: no adapter named 'nope'")
    assert not (tmp_path / "out").exists()


def test_export_chat_template_writes_the_adapters_prompt_style(fake_adapter, tmp_path):
    (fake_adapter / "medchat.json").write_text(json.dumps({"prompt_style": "r1-medical"}))
    target = tmp_path / "r1.jinja"
    r = medchat("export", "--adapter", str(fake_adapter), "--chat-template", str(target))
    assert r.returncode == 0 and r.stdout.strip() == str(target)
    assert "### Question:" in target.read_text() and "<think>" in target.read_text()
    again = medchat("export", "--adapter", str(fake_adapter), "--chat-template", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_export_needs_something_to_export(fake_adapter):
    r = medchat("export", "--adapter", str(fake_adapter))
    assert r.returncode == 2 and "--merged DIR, --gguf FILE, --chat-template FILE and/or --verify PATH" in r.stderr
