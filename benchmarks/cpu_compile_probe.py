"""Does torch.compile (inductor, C++ on the CPU) speed up medchat's int8 decode step? Builds the int8
loop with fused ops, compiles its decode step for one attention length (ATTN_LEN, masked like the CUDA
graph buckets), reports the compile time and the eager vs compiled step time (median of ROUNDS,
interleaved). Needs a C++ compiler; the compiled code is cached by inductor in /tmp/torchinductor_$USER.

usage: python benchmarks/cpu_compile_probe.py MODEL_DIR [THREADS] [ATTN_LEN] [ROUNDS]
       TORCHINDUCTOR_COMPILE_THREADS=1 python benchmarks/cpu_compile_probe.py "$(medchat pull)" 1 256 15
"""

from __future__ import annotations

import time

import harness


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("threads", metavar="THREADS", type=int, nargs="?", default=1)
    p.add_argument("attn_len", metavar="ATTN_LEN", type=int, nargs="?", default=256)
    p.add_argument("rounds", metavar="ROUNDS", type=int, nargs="?", default=15)
    args = p.parse_args(argv)
    rec = harness.recorder("cpu_compile_probe", args)

    import torch
    from transformers import AutoTokenizer

    from medchat.config import GenerationSettings
    from medchat.models.fastdecode import FastDecoder

    torch.set_num_threads(args.threads)
    ids = harness.chat_prompt_ids(AutoTokenizer.from_pretrained(args.model),
                                  "Why does iron deficiency cause anaemia?")
    dec = FastDecoder(harness.load_model(args.model, device="cpu"), quantize="int8", fused_ops=True)
    list(dec.generate(ids, GenerationSettings(temperature=0.0, max_new_tokens=2)))
    position, length = len(ids) + 2, args.attn_len
    start = time.perf_counter()
    compiled = torch.compile(dec._step, dynamic=False)
    with torch.inference_mode():
        dec._pos.fill_(position)
        compiled(length, True)
    compile_s = time.perf_counter() - start
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, fn in (("eager", dec._step), ("compiled", compiled)):
                dec._pos.fill_(position)
                start = time.perf_counter()
                fn(length, True)
                times[name].append(time.perf_counter() - start)
    rec.emit(compile_s=round(compile_s, 1), **{f"{k}_step_ms": round(harness.median(v) * 1000, 2)
                                              for k, v in times.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
