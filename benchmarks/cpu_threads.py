"""CPU decode under the machine's other load, interleaved in one process: plain transformers generate and
medchat's int8 loop, each at 1 and at 2 torch threads (``torch.set_num_threads`` between runs).

Run it twice to compare OpenMP's wait policies, which torch reads when it loads:
``OMP_WAIT_POLICY=PASSIVE`` (medchat's default since 2026-11-28: waiting threads sleep) and
``OMP_WAIT_POLICY=`` (libgomp's default: waiting threads spin, holding a core that other jobs need).

Reports tok/s per variant for NEW_TOKENS greedy tokens *including* the prompt's prefill (median of ROUNDS
after one warm-up each) and the load average.

usage: python benchmarks/cpu_threads.py MODEL_DIR [NEW_TOKENS] [ROUNDS]
       OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_threads.py "$(medchat pull)" 32 3
"""

from __future__ import annotations

import os
import time

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("new_tokens", metavar="NEW_TOKENS", type=int, nargs="?", default=32)
    p.add_argument("rounds", metavar="ROUNDS", type=int, nargs="?", default=3)
    args = p.parse_args(argv)
    rec = harness.recorder("cpu_threads", args)

    import torch
    from transformers import AutoTokenizer

    from medchat.config import GenerationSettings
    from medchat.models.fastdecode import FastDecoder

    n = args.new_tokens
    ids = harness.chat_prompt_ids(AutoTokenizer.from_pretrained(args.model),
                                  "Why does iron deficiency cause anaemia?")
    hf = harness.load_model(args.model, device="cpu")
    dec = FastDecoder(harness.load_model(args.model, device="cpu"), quantize="int8")
    x = torch.tensor([ids])
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=n)

    def run_hf() -> None:
        with torch.inference_mode():
            hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False)

    def run_loop() -> None:
        dec._cached_ids = []  # a full prefill every time, as generate does
        list(dec.generate(ids, greedy))

    variants = {f"{name}@{t}t": (fn, t) for name, fn in (("generate", run_hf), ("loop-int8", run_loop))
                for t in (1, 2)}
    for fn, t in variants.values():  # warm-up
        torch.set_num_threads(t)
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, (fn, t) in variants.items():
            torch.set_num_threads(t)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    res = {k: harness.per_second(n, harness.median(v), 1) for k, v in times.items()}
    for t in (1, 2):
        res[f"loop_vs_generate_{t}t"] = round(res[f"loop-int8@{t}t"] / res[f"generate@{t}t"], 2)
    rec.emit(new_tokens=n, rounds=args.rounds, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(unset)"),
             load_average_after=[round(v, 2) for v in os.getloadavg()], **res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
