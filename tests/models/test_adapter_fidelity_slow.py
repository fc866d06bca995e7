"""The fast decode loop runs a trained adapter as it was trained (benchmarks/RESULTS.md §5).

The bundled demo adapter (trained by `medchat finetune` on the embedded model); its effect on the logits (with − without)
through the decode loop against PEFT's on the same weights. The 16-bit path must keep it (the load-time
probe's figure); an int4 base with the LoRA unmerged — the CUDA default, its rounding reproduced exactly
on the CPU — must keep at least INT4_FLOOR, below the 0.737 the benchmark measured for that arrangement.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
KEPT_16BIT = 0.99  # the benchmark: 0.997-0.998 in bf16; float32 on the CPU does better
INT4_FLOOR = 0.65  # int4 base + LoRA unmerged: 0.737 measured; int4 merged (before this path) 0.642
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def trained_adapter():
    """The bundled demo adapter: trained by `medchat finetune` on the embedded model (its manifest has the
    command), all seven projections, r 8."""
    from medchat.store.adapters import DEMO_ADAPTER, bundled_adapter

    return bundled_adapter(DEMO_ADAPTER)


def test_load_time_probe_reports_the_16bit_path_keeping_the_adapter(embedded_model, trained_adapter):
    from medchat.config import load_settings
    from medchat.engine.backends import open_local

    said = []
    settings = load_settings({"model": "smollm2", "decoder": "fast", "quantize": "none",
                              "adapter": str(trained_adapter)})
    backend = open_local(settings, said.append)
    assert backend.info.decoder.startswith("medchat decode loop")
    assert backend.info.adapter_fidelity >= KEPT_16BIT and not backend.info.adapter_warning
    assert any(line.startswith("adapter effect kept") for line in said)


def test_int4_base_with_the_lora_unmerged_keeps_the_measured_share(embedded_model_dir, trained_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medchat.engine.backends.fast import probe_ids
    from medchat.models import fidelity
    from medchat.models.fastdecode import FastDecoder
    from medchat.models.lora import read_lora

    spec = importlib.util.spec_from_file_location(
        "adapter_fidelity", Path(__file__).parents[2] / "benchmarks" / "adapter_fidelity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.load_torch()

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    ids = probe_ids(tokenizer, "chat_template")
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    reference = fidelity.reference_effect(PeftModel.from_pretrained(model, str(trained_adapter)).eval(), ids)

    rounded = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, module in rounded.named_modules():
            if name.rsplit(".", 1)[-1] in ALL_LINEAR:  # what the CUDA kernel multiplies by
                module.weight.copy_(bench.int4_tinygemm(module.weight.data)["weight"].float())
    decoder = FastDecoder(rounded, adapter=read_lora(trained_adapter, n_layers=rounded.config.num_hidden_layers))
    kept = fidelity.effect_cosine(reference, fidelity.decoder_effect(decoder, ids))
    assert INT4_FLOOR <= kept < fidelity.WARN_BELOW  # kept, and still flagged by the probe's threshold
