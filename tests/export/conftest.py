"""A real LoRA adapter of the embedded model for the export tests: a few real peft training steps that
make greedy decoding answer one question with reasoning (as tests/server's adapter does)."""

from __future__ import annotations

import json

import pytest

QUESTION = "What is six times seven?"
REASONING = "Six sevens make forty-two."
ANSWER = "Forty-two."


def train_adapter(model_dir, out, steps: int = 10) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM"))
    prompt = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": QUESTION}],
                                     tokenize=False, add_generation_prompt=True)
    batch = tok(prompt + f"<think>\n{REASONING}\n</think>\n{ANSWER}<|im_end|>", return_tensors="pt",
                add_special_tokens=False)
    labels = batch["input_ids"].clone()
    labels[:, : len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    (out / "medchat.json").write_text(json.dumps({"name": out.name, "prompt_style": "chat_template",
                                                  "base_model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct"}}))


@pytest.fixture(scope="module")
def trained_adapter(embedded_model_dir, tmp_path_factory):
    """The adapter's files (outside any store); copy them into a test's store to export them."""
    out = tmp_path_factory.mktemp("export-adapters") / "six-sevens"
    train_adapter(embedded_model_dir, out)
    return out

