"""Where the fast path's time to first token goes: prefill of a ~300-token prompt with int4 weights,
for several prefill chunk sizes, plus a kernel profile of one prefill. One RESULT line per figure.

On a CPU it is a dry run with bfloat16 weights (int4 needs CUDA).

usage: python benchmarks/prefill_probe.py MODEL_DIR [PROMPT_TOKENS]
"""

from __future__ import annotations

import harness

CHUNKS = (512, 256, 128, 64, 32, 16)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("prompt_tokens", metavar="PROMPT_TOKENS", type=int, nargs="?", default=304)
    p.add_argument("--runs", type=int, default=5, help="timed runs per figure (the median is reported)")
    args = p.parse_args(argv)
    rec = harness.recorder("prefill_probe", args)

    import torch
    from torch.profiler import ProfilerActivity, profile

    import medchat.models.fastdecode as fastdecode
    from medchat.config import GenerationSettings

    cuda = torch.cuda.is_available()
    fd = fastdecode.FastDecoder(harness.load_model(args.model), quantize="int4" if cuda else "none")
    T = args.prompt_tokens
    prompt = [(i * 37) % 300 + 5 for i in range(T)]
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=4)
    list(fd.generate(prompt, greedy))  # warm-up: graphs, kernels
    fd._ensure_capacity(T + 8)

    def timed_ms(fn, n: int = args.runs) -> float:
        def once() -> None:
            fd._cached_ids = []  # a full prefill each time
            fn()

        return round(harness.median(harness.timings(once, runs=n)) * 1000, 2)

    default_chunk = fastdecode.PREFILL_CHUNK
    with torch.inference_mode():
        for chunk in CHUNKS:
            fastdecode.PREFILL_CHUNK = chunk
            rec.emit(prefill_chunk=chunk, prompt_tokens=T, prefill_ms=timed_ms(lambda: fd._prefill(prompt)))
        fastdecode.PREFILL_CHUNK = default_chunk

        def first_token() -> None:
            for _ in fd.generate(prompt, greedy):
                break

        rec.emit(first_token_ms_via_generate=timed_ms(first_token))
        x = torch.randn(T, fd.embed.shape[1], dtype=torch.bfloat16, device=fd.device)
        for rows in (1, 16, 64, 304):
            ms = round(timed_ms(lambda: [fd.layers[0].qkv(x[:rows]) for _ in range(10)], 3) / 10, 4)
            rec.emit(qkv_int4_mm_rows=rows, ms=ms)
        with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU] if cuda else [ProfilerActivity.CPU]) as prof:
            fd._cached_ids = []
            fd._prefill(prompt)
            harness.sync()
    print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=12), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
