"""`medchat eval`'s generation speed: MedQA-shaped rows, base and adapter, with a thinking budget,
batched (many rows in flight) against batch 1 on the same rows, through medchat's own evaluation code
(`medchat.evaluation.report_card.open_eval_backend` + `medchat.evaluation.run.generate`).

The rows are synthetic MedQA-shaped questions (question, options A-D, answer_idx), built from a seed,
so any machine makes the same ones. A random-init model never emits EOS: every reply runs to its
token limit (the think budget, the forced </think>, then --answer-tokens), the worst case for wall
time. Batch 1 is slow (one reply at a time), so it runs on the first --batch1-rows rows only; its
tokens per second, and the wall time it would take for all rows, stand beside the batched figures.

One RESULT line per (side, mode), written as soon as it is measured: a run cut short by a time limit
keeps what it finished. --save appends them to results/<date>-<device>/eval_speed.jsonl.

usage: python benchmarks/eval_speed.py MODEL_DIR --adapter ADAPTER_DIR [--rows 500] [--think-budget 1024]
"""

from __future__ import annotations

import random
import sys

import harness

STEMS = ("A {age}-year-old {sex} presents with {a} and {b} for {d} days. Examination shows {c}. "
         "Which of the following is the most likely diagnosis?")
FINDINGS = ("fever", "productive cough", "pleuritic chest pain", "haemoptysis", "weight loss", "night sweats",
            "jaundice", "abdominal pain", "palpitations", "syncope", "oedema", "rash", "headache", "confusion")
ANSWERS = ("Pneumonia", "Pulmonary embolism", "Tuberculosis", "Heart failure", "Hepatitis", "Cholecystitis",
           "Atrial fibrillation", "Meningitis", "Sarcoidosis", "Lymphoma", "Nephrotic syndrome", "Sepsis")


def medqa_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b, c = rng.sample(FINDINGS, 3)
        q = STEMS.format(age=rng.randint(18, 90), sex=rng.choice(("man", "woman")), a=a, b=b, c=c, d=rng.randint(1, 30))
        opts = rng.sample(ANSWERS, 4)
        rows.append({"question": q, "options": dict(zip("ABCD", opts)), "answer_idx": rng.choice("ABCD"),
                     "meta_info": "synthetic", "id": str(i)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("model", metavar="MODEL_DIR")
    p.add_argument("--adapter", required=True, help="a LoRA adapter folder (benchmarks/make_adapter.py makes one)")
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--think-budget", type=int, default=1024)
    p.add_argument("--answer-tokens", type=int, default=128, help="tokens after the budget (max_new_tokens = budget + this)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batch1-rows", type=int, default=4, help="rows run one at a time (the same first rows)")
    p.add_argument("--sides", default="base,adapter")
    p.add_argument("--modes", default="batched,batch1")
    p.add_argument("--quantize", default="auto", choices=("auto", "4bit", "none"),
                   help="auto = bitsandbytes 4-bit on CUDA (the issue's 8B-in-4-bit setting)")
    args = p.parse_args(argv)
    rec = harness.recorder("eval_speed", args)

    import time
    from pathlib import Path

    from medchat.config import load_settings
    from medchat.evaluation.benchmarks import to_items
    from medchat.evaluation.report_card import open_eval_backend
    from medchat.evaluation.run import EvalSettings, generate, score_side

    items = to_items(medqa_rows(args.rows), "medqa", "synthetic-medqa").items
    settings = load_settings({"model": args.model, "quantize": args.quantize, "offline": True})
    say = lambda m: print(f"eval_speed: {m}", file=sys.stderr, flush=True)  # noqa: E731
    adapter = str(Path(args.adapter).resolve())
    with harness.clock() as c:
        backend = open_eval_backend(settings, Path(adapter), say)
    rec.emit(step="load", s=round(c.seconds, 1), quantization=backend.info.quantization, decoder=backend.info.decoder,
             gpu_gib=harness.gpu_memory_gib())
    max_new = args.think_budget + args.answer_tokens
    for side in args.sides.split(","):
        backend.set_adapter(adapter if side == "adapter" else None)
        for mode in args.modes.split(","):
            rows = items if mode == "batched" else items[: args.batch1_rows]
            es = EvalSettings(max_new, args.think_budget, args.batch_size if mode == "batched" else 1, "")
            harness.empty_cache()
            t0 = time.perf_counter()
            replies = generate(backend, rows, es, say, f"{side} {mode}")
            harness.sync()
            wall = time.perf_counter() - t0
            tokens = sum(r.reasoning_tokens + r.answer_tokens for r in replies)
            summary, _, _ = score_side(rows, replies)
            rec.emit(side=side, mode=mode, rows=len(rows), batch_size=es.batch_size, think_budget=args.think_budget,
                     max_new_tokens=max_new, generated_tokens=tokens, wall_s=round(wall, 1),
                     tok_s=harness.per_second(tokens, wall), s_per_row=round(wall / len(rows), 3),
                     projected_wall_s_for_all_rows=round(wall / len(rows) * len(items), 1),
                     budget_hit_rate=summary["budget_hit_rate"], closed_rate=summary["closed_rate"],
                     peak_gpu_gib=harness.gpu_memory_gib(peak=True))
    backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
