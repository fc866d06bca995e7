"""The engine on the real embedded model (SmolLM2-135M): streaming, multi-turn, cancel, adapters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings, load_settings
from medchat.engine.events import AnswerDelta, GenerationDone, ReasoningDelta
from medchat.engine.session import ChatSession, stream_events
from medchat.errors import AdapterError

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(temperature=0, max_new_tokens=24)


def medchat(*args, input=None):
    return subprocess.run([sys.executable, "-m", "medchat", *args], capture_output=True, text=True,
                          env=dict(os.environ), input=input, timeout=600)


def test_ask_streams_an_answer(embedded_model):
    r = medchat("ask", "--model", "smollm2", "--adapter", "none", "--max-new-tokens", "16", "--temperature", "0",
                "Why does iron deficiency cause anaemia?")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 10


def test_ask_json_from_stdin(embedded_model):
    r = medchat("ask", "--model", "smollm2", "--adapter", "none", "--json", "--max-new-tokens", "8", "-",
                input="What is a fever?\n")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"reasoning", "answer", "model", "adapter", "adapter_fidelity", "backend", "prompt_tokens",
                         "completion_tokens", "seconds", "tok_per_s", "finish_reason"}
    assert data["model"] == "smollm2" and data["backend"] == "hf" and data["completion_tokens"] == 8
    assert data["finish_reason"] == "length" and data["answer"]


def test_unavailable_model_falls_back_to_embedded_with_one_line(embedded_model):
    r = medchat("ask", "--model", "r1-qwen-1.5b", "--max-new-tokens", "4", "hi")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if "using the embedded smollm2" in line]
    assert len(notes) == 1 and "unsloth/DeepSeek-R1-Distill-Qwen-1.5B" in notes[0]


def test_stream_is_token_by_token_and_counts_add_up(embedded_backend):
    msgs = [Message("user", "List three symptoms of anaemia.")]
    events = list(stream_events(embedded_backend, msgs, GREEDY))
    done = events[-1]
    assert isinstance(done, GenerationDone) and 10 <= done.stats.completion_tokens <= 24
    deltas = [e for e in events if isinstance(e, (AnswerDelta, ReasoningDelta))]
    # about one event per token, not per word or per reply
    assert len(deltas) >= 0.6 * done.stats.completion_tokens
    assert "".join(e.text for e in deltas) == done.reasoning + done.answer


def test_multi_turn_uses_the_first_answer(embedded_backend):
    session = ChatSession(embedded_backend, GREEDY, "You are a medical assistant.")
    list(session.send("What is anaemia?"))
    first = session.turns[0].answer
    list(session.send("Name one cause of it."))
    prompt = embedded_backend.render(session.messages())
    assert first.strip() and first.strip() in prompt and prompt.count("<|im_start|>user") == 2
    assert session.turns[1].answer.strip()


def test_cancel_stops_within_a_second(embedded_backend):
    settings = GenerationSettings(temperature=0, max_new_tokens=2000)
    cancel = threading.Event()
    stream = stream_events(embedded_backend, [Message("user", "Describe the heart in detail.")], settings, cancel)
    for event in stream:
        if isinstance(event, AnswerDelta):
            break
    t0 = time.perf_counter()
    cancel.set()
    rest = list(stream)
    elapsed = time.perf_counter() - t0
    assert isinstance(rest[-1], GenerationDone) and rest[-1].stats.finish_reason == "cancelled"
    assert rest[-1].stats.completion_tokens < 200
    assert elapsed < 1.5


@pytest.fixture
def trained_adapter(embedded_model_dir, tmp_path):
    """A real LoRA adapter: a few optimizer steps on one medical sentence."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    batch = tok("<think>\nIron builds haemoglobin.\n</think>\nIron deficiency limits haemoglobin.", return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(4):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path / "iron-adapter"
    model.save_pretrained(out)
    return out


def test_adapter_loads_and_changes_output(embedded_model, trained_adapter):
    from medchat.engine.backends import open_local

    backend = open_local(load_settings({"model": "smollm2", "adapter": "none"}), lambda _m: None)
    msgs = [Message("user", "Why does iron deficiency cause anaemia?")]
    before = list(stream_events(backend, msgs, GREEDY))[-1].answer
    backend.set_adapter(str(trained_adapter))
    assert backend.info.adapter == str(trained_adapter)
    after = list(stream_events(backend, msgs, GREEDY))
    assert isinstance(after[-1], GenerationDone)
    assert (after[-1].reasoning + after[-1].answer) != before
    backend.set_adapter(None)  # back to the bare base model
    assert list(stream_events(backend, msgs, GREEDY))[-1].answer == before


def test_adapter_for_another_base_is_refused_before_loading(embedded_model, trained_adapter):
    from medchat.engine.backends import open_local

    config = trained_adapter / "adapter_config.json"
    data = json.loads(config.read_text())
    data["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B-Instruct"
    config.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match="trained for meta-llama/Llama-3.1-8B-Instruct.*SmolLM2-135M-Instruct"):
        open_local(load_settings({"model": "smollm2", "adapter": str(trained_adapter)}), lambda _m: None)
    r = medchat("ask", "--model", "smollm2", "--adapter", str(trained_adapter), "hi")
    assert r.returncode == 4 and "trained for meta-llama" in r.stderr and "Traceback" not in r.stderr
