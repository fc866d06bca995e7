"""`medchat eval` on the embedded model: every benchmark shape, the batched path and the thinking budget,
base vs a real (random) LoRA adapter recorded in its manifest and model card. Few rows, few tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medchat.cli.main import cli

pytestmark = pytest.mark.slow
FIX = Path(__file__).parent / "fixtures"
KEYS = ["benchmark", "rows", "skipped", "contaminated", "think_budget", "base", "adapter", "paired"]


def run_eval(*args: str):
    result = CliRunner().invoke(cli, ["eval", *args, "--json", "--offline", "--max-new-tokens", "6",
                                      "--think-budget", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name, shape, rows", [
    ("medqa_test.jsonl", "medqa", 5), ("medmcqa_dev.json", "medmcqa", 4), ("ori_pqal.json", "pubmedqa", 3),
    ("mmlu_clinical.jsonl", "mmlu", 3), ("medical_o1_mcq.jsonl", "medical-o1", 2),
])
def test_every_shape_base_model(embedded_model, name, shape, rows):
    out = run_eval("--model", "smollm2", "--benchmark", str(FIX / name), "--rows", "20")
    assert list(out)[:8] == KEYS and out["rows"] == rows and out["shape"] == shape
    base = out["base"]
    for key in ("accuracy", "ci95", "extraction_failures", "closed_rate", "cut_in_reasoning_rate"):
        assert key in base
    assert base["scored"] == rows and out["adapter"] is None and out["paired"] is None
    lines = Path(out["rows_file"]).read_text().splitlines()
    assert len(lines) == rows and {"prompt", "gold", "base"} <= set(json.loads(lines[0]))


@pytest.fixture(scope="module")
def float32_backend(embedded_model_dir):
    """The embedded model in float32: a left-padded batch then gives exactly batch 1's greedy tokens (in
    bfloat16 the padded batch's different summation order can flip a near tie)."""
    from medchat.engine.backends.base import BackendInfo
    from medchat.engine.backends.hf import HFBackend
    from medchat.models.catalog import EMBEDDED, EMBEDDED_ID, ResolvedModel
    from medchat.models.loading import load_hf_model

    resolved = ResolvedModel(EMBEDDED, EMBEDDED_ID, str(embedded_model_dir))
    model, tok = load_hf_model(resolved, device="cpu", dtype="float32")
    return HFBackend(model, tok, resolved, BackendInfo(backend="hf", model=EMBEDDED, device="cpu"))


def test_batched_matches_one_at_a_time_and_budget_closes_reasoning(float32_backend):
    from medchat.chatformat.messages import Message
    from medchat.engine.batched import BatchSettings

    embedded_backend = float32_backend
    convs = [[Message("user", q)] for q in ("What is anaemia?", "Name one cause of chest pain in adults.", "Hi")]
    together = embedded_backend.generate_batch(convs, BatchSettings(10, -1, 3))
    alone = embedded_backend.generate_batch(convs, BatchSettings(10, -1, 1))
    assert [r.answer for r in together] == [r.answer for r in alone]
    style = embedded_backend.prompt_style
    try:
        embedded_backend.prompt_style = "r1-medical"  # the prompt opens <think>
        budgeted = embedded_backend.generate_batch(convs, BatchSettings(24, 4, 3))
    finally:
        embedded_backend.prompt_style = style
    for r in budgeted:
        assert r.budget_hit and r.reasoning_tokens == 4 and r.finish_reason != "length_in_reasoning"


@pytest.fixture(scope="module")
def float32_fast_backend(embedded_model_dir):
    """The embedded model in medchat's decode loop, float32 weights (the path `medchat eval` takes)."""
    from medchat.config import load_settings
    from medchat.engine.backends.fast import open_fast
    from medchat.models.catalog import EMBEDDED, EMBEDDED_ID, ResolvedModel

    resolved = ResolvedModel(EMBEDDED, EMBEDDED_ID, str(embedded_model_dir))
    settings = load_settings({"model": EMBEDDED, "quantize": "none", "dtype": "float32", "decoder": "fast",
                              "device": "cpu", "offline": True})
    backend, why = open_fast(settings, resolved, "cpu", None, lambda _m: None)
    assert backend is not None, why
    return backend


def test_slots_give_the_replies_of_one_row_at_a_time(float32_fast_backend):
    """Rows in slots (refilled, compacted) answer exactly as the same loop does one row at a time."""
    from medchat.chatformat.messages import Message
    from medchat.engine.batched import BatchSettings

    backend = float32_fast_backend
    questions = ("What is anaemia?", "Name one cause of chest pain in adults.", "Hi", "What does insulin do?")
    convs = [[Message("user", q)] for q in questions]
    for style, budget in (("chat_template", -1), ("r1-medical", 4)):
        backend.prompt_style = style
        together = backend.generate_batch(convs, BatchSettings(20, budget, 3))
        assert together == backend.generate_batch(convs, BatchSettings(20, budget, 1))
        if budget > 0:
            assert all(r.budget_hit and r.reasoning_tokens == budget for r in together)


@pytest.fixture
def stored_adapter(embedded_model_dir, medchat_home):
    """A random r8 LoRA adapter for SmolLM2 in the store, with a manifest naming its training rows."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from medchat.models.catalog import EMBEDDED, EMBEDDED_ID
    from medchat.store import adapters
    from medchat.store.manifest import Manifest, write_manifest

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=False, task_type="CAUSAL_LM"))
    folder = adapters.store_dir() / "demo"
    model.save_pretrained(folder)
    write_manifest(folder, Manifest.model_validate({
        "name": "demo", "base_model": {"id": EMBEDDED_ID, "name": EMBEDDED}, "prompt_style": "chat_template",
        "dataset": {"id": "sample", "kind": "sample", "train_indices": [0, 1, 2], "eval_indices": [5]}}))
    return folder


def test_adapter_paired_with_contamination_manifest_and_card(embedded_model, stored_adapter, tmp_path):
    trained = json.loads((Path(__file__).parents[2] / "medchat/data/medical_cot_sample.jsonl")
                         .read_text().splitlines()[0])["Question"]
    bench = tmp_path / "medqa.jsonl"
    rows = [json.loads(x) for x in (FIX / "medqa_test.jsonl").read_text().splitlines()[:3]]
    rows.append(dict(rows[0], question=trained))  # a training question inside the benchmark
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_eval("--adapter", "demo", "--benchmark", str(bench))
    assert out["contaminated"] == 1 and out["rows"] == 3
    assert set(out["paired"]) == {"difference", "ci95", "mcnemar_p"} and out["adapter"]["scored"] == 3
    manifest = json.loads((stored_adapter / "medchat.json").read_text())
    assert manifest["evaluations"][-1]["benchmark_name"] == "medqa.jsonl"
    card = (stored_adapter / "README.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card and "base_model:" in card
    assert "not medical advice" in card
    listed = CliRunner().invoke(cli, ["adapters", "list"])
    assert "medqa.jsonl" in listed.output and "n=3" in listed.output
    shown = CliRunner().invoke(cli, ["adapters", "show", "demo"])
    assert "medqa.jsonl (3 rows)" in shown.output


def test_adapter_on_its_own_held_out_rows(embedded_model, stored_adapter):
    out = run_eval("--adapter", "demo")  # no --benchmark: the held-out rows the manifest records
    assert out["benchmark"] == "heldout" and out["rows"] == 1 and out["contaminated"] == 0
    assert out["base"]["rows"] == 1 and out["adapter"]["scored"] == 0 and out["paired"] is None
