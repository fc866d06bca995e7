"""Does the fast decode path keep a LoRA adapter's effect? Compared on next-token logits, where a
random-init model can answer (its greedy text hardly depends on an adapter).

For one prompt, the last position's logits from: transformers with the adapter attached (PEFT,
unmerged) and disabled, and FastDecoder with the adapter folded in and without it, in bf16 and (on
CUDA) in int4, int4 with HQQ scales, and the generate path's own bitsandbytes nf4 load. Reports each
path's relative error against transformers, and the cosine between the adapter's effect (logits with
minus without) seen by transformers and by each fast path. The model's RMSNorm weights are set to 1 in
memory (as in trained models; a random init draws them around 0.02, which makes every layer, and so
every adapter, nearly invisible in the output). One RESULT line per weight format.

usage: python benchmarks/adapter_effect.py MODEL_DIR
"""

from __future__ import annotations

import harness

PROMPT = "### user:\nWhy does iron deficiency lead to anaemia?\n### assistant:\n<think>\n"


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    args = p.parse_args(argv)
    rec = harness.recorder("adapter_effect", args)

    import torch
    from transformers import AutoTokenizer

    import medchat.models.fastdecode as fastdecode

    cuda = torch.cuda.is_available()
    ids = AutoTokenizer.from_pretrained(args.model)(PROMPT)["input_ids"]

    def load(adapter: bool, **kw):
        model = harness.load_model(args.model, unit_norms=True, **kw)
        return harness.random_lora(model, seed=0).eval() if adapter else model

    def hf_logits(model) -> tuple:
        """(with the adapter, without it) through transformers + PEFT."""
        x = torch.tensor([ids], device=model.device)
        with torch.inference_mode():
            with_a = model(x).logits[0, -1].float()
            with model.disable_adapter():
                without = model(x).logits[0, -1].float()
        return with_a, without

    def fast_logits(model, weights: str) -> tuple:
        with harness.clock() as build:
            fd = fastdecode.FastDecoder(model, quantize=weights, cuda_graphs=False)
        fd._ensure_capacity(len(ids) + 1)
        with torch.inference_mode():
            logits = fd._forward(torch.tensor(ids, device=fd.device), torch.arange(len(ids), device=fd.device),
                                 len(ids)).float()
        return logits, round(build.seconds, 1)

    hf_lora, hf_plain = hf_logits(load(True))
    harness.empty_cache()
    algorithm = fastdecode.INT4_ALGORITHM
    for weights in ("none", "int4", "int4-hqq", "nf4-generate-path") if cuda else ("none",):
        build_s = None
        if weights == "nf4-generate-path":  # the generate path's 4-bit load (nf4, double quant), same adapter
            from transformers import BitsAndBytesConfig

            q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
            with_a, without = hf_logits(load(True, quantization_config=q))
        else:
            fastdecode.INT4_ALGORITHM = "hqq" if weights.endswith("hqq") else algorithm
            w = "int4" if weights.startswith("int4") else "none"
            with_a, _ = fast_logits(load(True), w)
            harness.empty_cache()
            without, build_s = fast_logits(load(False), w)  # the build without the adapter, as reported before
            fastdecode.INT4_ALGORITHM = algorithm
        harness.empty_cache()
        effect_hf, effect_fast = hf_lora - hf_plain, with_a - without
        rec.emit(
            weights=weights,
            rel_err_vs_hf_with_adapter=round(float((with_a - hf_lora).norm() / hf_lora.norm()), 4),
            adapter_effect_size_rel=round(float(effect_hf.norm() / hf_lora.norm()), 4),
            effect_cosine=round(float(torch.nn.functional.cosine_similarity(effect_hf, effect_fast, dim=0)), 4),
            same_top1_as_hf_with_adapter=int(with_a.argmax()) == int(hf_lora.argmax()),
            fast_build_s=build_s,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
