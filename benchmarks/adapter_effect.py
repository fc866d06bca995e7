"""Does the fast decode path keep a LoRA adapter's effect? Compared on next-token logits, where a
random-init model can answer (its greedy text hardly depends on an adapter).

For one prompt, the last position's logits from: transformers with the adapter attached (PEFT,
unmerged) and disabled, and FastDecoder with the adapter folded in and without it, in bf16 and in
int4. Reports each path's relative error against transformers, and the cosine between the
adapter's effect (logits with minus without) seen by transformers and by each fast path.
The model's RMSNorm weights are set to 1 in memory (as in trained models; mkmodel draws them
around 0.02, which makes every layer, and so every adapter, nearly invisible in the output).

usage: python benchmarks/adapter_effect.py MODEL_DIR
"""

import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from medchat.models.fastdecode import FastDecoder

MODEL = sys.argv[1]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
tok = AutoTokenizer.from_pretrained(MODEL)
IDS = tok("### user:\nWhy does iron deficiency lead to anaemia?\n### assistant:\n<think>\n")["input_ids"]


BUILD_S: list = []


def load(adapter: bool):
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, device_map={"": 0} if DEV == "cuda" else None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
    if adapter:
        torch.manual_seed(0)
        cfg = LoraConfig(r=16, lora_alpha=16, init_lora_weights=False,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, cfg)
    return model.eval()


def nf4_logits():
    """The generate path's 4-bit load (bitsandbytes nf4, double quant) with the same adapter."""
    from transformers import BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16, device_map={"": 0},
                                                 quantization_config=q)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
    torch.manual_seed(0)
    cfg = LoraConfig(r=16, lora_alpha=16, init_lora_weights=False,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg).eval()
    x = torch.tensor([IDS], device=DEV)
    with torch.inference_mode():
        with_a = model(x).logits[0, -1].float()
        with model.disable_adapter():
            without = model(x).logits[0, -1].float()
    return with_a, without


def fast_logits(model, quantize):
    t0 = time.time()
    fd = FastDecoder(model, quantize=quantize, cuda_graphs=False)
    BUILD_S.append(round(time.time() - t0, 1))
    fd._ensure_capacity(len(IDS) + 1)
    with torch.inference_mode():
        return fd._forward(torch.tensor(IDS, device=fd.device), torch.arange(len(IDS), device=fd.device),
                           len(IDS)).float()


with torch.inference_mode():
    m = load(True)
    x = torch.tensor([IDS], device=DEV)
    hf_lora = m(x).logits[0, -1].float()
    with m.disable_adapter():
        hf_plain = m(x).logits[0, -1].float()
del m
torch.cuda.empty_cache() if DEV == "cuda" else None
out = {}
import medchat.models.fastdecode as fastdecode  # noqa: E402

for quantize in ("none", "int4", "int4-hqq", "nf4-generate-path") if DEV == "cuda" else ("none",):
    if quantize == "nf4-generate-path":
        with_a, without = nf4_logits()
    else:
        fastdecode.INT4_ALGORITHM = "hqq" if quantize.endswith("hqq") else "tinygemm"
        w = "int4" if quantize.startswith("int4") else "none"
        with_a = fast_logits(load(True), w)
        torch.cuda.empty_cache() if DEV == "cuda" else None
        without = fast_logits(load(False), w)
    torch.cuda.empty_cache() if DEV == "cuda" else None
    effect_hf, effect_fast = hf_lora - hf_plain, with_a - without
    out[quantize] = {
        "rel_err_vs_hf_with_adapter": round(float((with_a - hf_lora).norm() / hf_lora.norm()), 4),
        "adapter_effect_size_rel": round(float(effect_hf.norm() / hf_lora.norm()), 4),
        "effect_cosine": round(float(torch.nn.functional.cosine_similarity(effect_hf, effect_fast, dim=0)), 4),
        "same_top1_as_hf_with_adapter": int(with_a.argmax()) == int(hf_lora.argmax()),
        "fast_build_s": BUILD_S[-1] if BUILD_S and quantize != "nf4-generate-path" else None,
    }
    print("RESULT " + json.dumps({"weights": quantize, **out[quantize]}), flush=True)
