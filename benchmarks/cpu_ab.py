"""CPU decode, interleaved A/B in one process (so that load from other jobs hits every variant alike):
transformers generate vs medchat's loop -- bfloat16 weights with transformers' exact ops, and int8
weights (one scale per row, aten's weight-only kernel; what the chat uses on the CPU), with exact or
fused ops -- on one model folder.

Reports decode tok/s (median of ROUNDS, after one warm-up of each), the loop/generate ratios, and how
many leading greedy tokens each loop shares with generate.

usage: python benchmarks/cpu_ab.py MODEL_DIR [NEW_TOKENS] [ROUNDS]
       python benchmarks/cpu_ab.py "$(medchat pull)" 64 3       (the embedded SmolLM2-135M)
"""

from __future__ import annotations

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("new_tokens", metavar="NEW_TOKENS", type=int, nargs="?", default=64)
    p.add_argument("rounds", metavar="ROUNDS", type=int, nargs="?", default=3)
    args = p.parse_args(argv)
    rec = harness.recorder("cpu_ab", args)

    import torch
    from transformers import AutoTokenizer

    from medchat.config import GenerationSettings
    from medchat.models.fastdecode import FastDecoder

    n = args.new_tokens
    ids = harness.chat_prompt_ids(AutoTokenizer.from_pretrained(args.model),
                                  "Why does iron deficiency cause anaemia?")
    hf = harness.load_model(args.model, device="cpu")
    loops = {
        "loop-exact": FastDecoder(harness.load_model(args.model, device="cpu")),
        "loop-int8": FastDecoder(harness.load_model(args.model, device="cpu"), quantize="int8"),
        "loop-int8-fused": FastDecoder(harness.load_model(args.model, device="cpu"), quantize="int8",
                                       fused_ops=True),
    }
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=n)
    x = torch.tensor([ids])
    out: dict[str, list[int]] = {}

    def run_hf() -> None:
        with torch.inference_mode():
            res = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False)
        out["generate"] = res[0, len(ids):].tolist()

    def run(name: str) -> None:
        dec = loops[name]
        dec._cached_ids = []  # a full prefill every time, as generate does
        out[name] = list(dec.generate(ids, greedy))

    variants = {"generate": run_hf, **{k: (lambda k=k: run(k)) for k in loops}}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name] += harness.timings(fn)
    res = {k: harness.per_second(n, harness.median(v), 2) for k, v in times.items()}
    for k in loops:
        res[f"{k}_vs_generate".replace("-", "_")] = round(res[k] / res["generate"], 2)
        res[f"{k}_tokens_agreeing".replace("-", "_")] = harness.agree(out[k], out["generate"])
    rec.emit(new_tokens=n, rounds=args.rounds, threads=torch.get_num_threads(), **res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
