"""A random LoRA adapter (PEFT format) for a model folder, written straight from its config.json: no
weights are loaded, so an 8B-shape adapter takes seconds on any machine.

r 16, alpha 16, every linear layer of a Llama-family model; A ~ N(0, 1/sqrt(in)), B ~ N(0, --b-std) so
the adapter changes the model's tokens. The adapter records MODEL_DIR as its base model.

usage: python benchmarks/make_adapter.py MODEL_DIR OUT_DIR [--r 16] [--seed 0]
"""

from __future__ import annotations

import json
from pathlib import Path

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("adapter_dir", metavar="OUT_DIR")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--b-std", type=float, default=0.01, help="spread of the B matrices (0 = PEFT's no-op init)")
    args = p.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    cfg = json.loads((Path(args.model) / "config.json").read_text())
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or hidden // heads
    shapes = {  # (in, out) of each linear layer
        "self_attn.q_proj": (hidden, heads * head_dim), "self_attn.k_proj": (hidden, kv * head_dim),
        "self_attn.v_proj": (hidden, kv * head_dim), "self_attn.o_proj": (heads * head_dim, hidden),
        "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter), "mlp.down_proj": (inter, hidden),
    }
    gen = torch.Generator().manual_seed(args.seed)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for name, (n_in, n_out) in shapes.items():
            key = f"base_model.model.model.layers.{layer}.{name}"
            tensors[f"{key}.lora_A.weight"] = (torch.randn(args.r, n_in, generator=gen) / n_in**0.5).to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = (torch.randn(n_out, args.r, generator=gen) * args.b_std).to(torch.bfloat16)
    out = Path(args.adapter_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(Path(args.model).resolve()),
        "r": args.r, "lora_alpha": args.r, "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
        "target_modules": sorted({n.split(".")[-1] for n in shapes}), "inference_mode": True,
    }, indent=2))
    rec = harness.recorder("make_adapter", args)
    rec.emit(adapter=str(out), tensors=len(tensors), megabytes=round((out / "adapter_model.safetensors").stat().st_size / 2**20, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
