"""`medchat serve` and `medchat export --merged` on the real embedded model (SmolLM2-135M) with a real
LoRA adapter that was trained (a few optimizer steps) to answer one question with reasoning."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import openai
import pytest

pytestmark = pytest.mark.slow

def start_server(*args: str) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "medchat", "serve", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines: list[str] = []
    for line in proc.stderr:  # the model loads, then one line names the URL
        lines.append(line.rstrip())
        if m := re.search(r" at (http://\S+/v1) ", line):
            threading.Thread(target=lambda: lines.extend(ln.rstrip() for ln in proc.stderr), daemon=True).start()
            return proc, m.group(1), lines
    proc.wait()
    raise AssertionError("medchat serve did not start:\n" + "\n".join(lines))


def test_openai_client_against_medchat_serve_with_the_embedded_model(embedded_model, memorized_adapter):
    m = memorized_adapter
    proc, url, lines = start_server("--model", "smollm2", "--adapter", str(m.path),
                                    "--temperature", "0", "--max-new-tokens", "40")
    try:
        api = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=None)  # speed: benchmarks/
        assert [m.id for m in api.models.list().data] == ["six-sevens", "smollm2"]
        question = [{"role": "user", "content": m.question}]

        reply = api.chat.completions.create(model="six-sevens", messages=question)
        assert reply.choices[0].message.reasoning_content.strip() == m.reasoning  # "\n" before </think> stays
        assert reply.choices[0].message.content == m.answer
        assert reply.choices[0].finish_reason == "stop"
        assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens_details.reasoning_tokens > 0

        chunks = list(api.chat.completions.create(model="six-sevens", messages=question, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas).strip() == m.reasoning
        assert "".join(d.content or "" for d in deltas) == m.answer
        assert len(deltas) > 6  # token by token, not one blob

        base = api.chat.completions.create(model="smollm2", messages=question, max_tokens=12)
        assert base.choices[0].message.content != m.answer  # the bare base model, adapter switched off
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    assert lines[-1] == "medchat: stopped serving"
    assert not any("Traceback" in line for line in lines)


def test_export_merged_folder_loads_without_peft_and_answers_like_the_adapter(embedded_model, memorized_adapter, tmp_path):
    m = memorized_adapter
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medchat.export.merged import export_merged

    target = tmp_path / "merged"
    out = export_merged(str(m.path), target, model="smollm2")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "medchat-export.json"} <= names
    assert "adapter_config.json" not in names and not any(n.endswith(".bin") for n in names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    parity = json.loads((out / "medchat-export.json").read_text())["parity"]
    assert parity["passed"]  # the gate loaded it back and compared it (a near-tie may differ, reported)

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert model.dtype == torch.bfloat16
    assert not any("lora" in name for name, _ in model.named_parameters())
    prompt = tok.apply_chat_template([{"role": "user", "content": m.question}], tokenize=False, add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        generated = model.generate(**enc, max_new_tokens=30, do_sample=False)
    text = tok.decode(generated[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip() == f"<think>\n{m.reasoning}\n</think>\n{m.answer}"
