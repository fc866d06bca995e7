"""Write a random-init Llama model and its small tokenizer to a folder, for speed and memory benchmarks.

Random weights cost the same FLOPs and bytes as trained ones. Shapes: 8b (Llama-3.1-8B /
DeepSeek-R1-Distill-Llama-8B: 16 GB in bfloat16, made on the GPU when there is one), qwen1.5b
(DeepSeek-R1-Distill-Qwen-1.5B, a Qwen2 with q/k/v biases), 3b (Llama-3.2-3B, tied output layer) and
tiny (two small layers, for trying a script on a CPU). The weights are seeded (--seed); ../shared/gpu/mkmodel.py, which
made the models behind the committed figures, drew the same N(0, 0.02) unseeded. --fit-vocab also runs
fit_vocab.py, so that greedy decoding yields text the chat engine can stream.

usage: python benchmarks/make_model.py /tmp/l8b 8b [--fit-vocab]
       python benchmarks/make_model.py /tmp/q15 qwen1.5b --fit-vocab
       python benchmarks/make_model.py /tmp/tiny tiny --fit-vocab
"""

from __future__ import annotations

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("folder", help="folder to write (created)")
    p.add_argument("shape", nargs="?", default="8b", choices=sorted(harness.SHAPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="where to draw the weights (default: cuda when available, else cpu)")
    p.add_argument("--fit-vocab", action="store_true", help="then zero the rows the tokenizer cannot decode")
    p.add_argument("--unit-norms", action="store_true",
                   help="RMSNorm weights 1, as in trained models (an adapter's effect then shows in the logits)")
    args = p.parse_args(argv)
    rec = harness.recorder("make_model", args)
    rec.emit(**harness.make_model(args.folder, args.shape, device=args.device, seed=args.seed, fit=args.fit_vocab,
                                         unit_norms=args.unit_norms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
