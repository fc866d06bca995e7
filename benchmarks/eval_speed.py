"""`medchat eval`'s generation speed: MedQA-shaped rows, base and adapter, with a thinking budget,
batched (many rows in flight) against batch 1 on the same rows, through medchat's own evaluation code
(`medchat.evaluation.report_card.open_eval_backend` + `medchat.evaluation.run.generate`). The default
loads the model as `medchat eval` does: medchat's decode loop (a KV-cache slot per row, a finished
row's slot refilled at once; int4 weights on CUDA, 16-bit on the CPU); --decoder generate measures
transformers' generate in left-padded batches instead (bitsandbytes 4-bit on CUDA).

The rows are synthetic MedQA-shaped questions (question, options A-D, answer_idx), built from a seed,
so any machine makes the same ones. A random-init model never emits EOS: every reply runs to its
token limit (the think budget, the forced </think>, then --answer-tokens), the worst case for wall
time. Batch 1 (one reply at a time through the chat's own path: on CUDA the decode loop's CUDA graphs)
is slow, so it runs on the first --batch1-rows rows only; its
tokens per second, and the wall time it would take for all rows, stand beside the batched figures.

One RESULT line per (side, mode), written as soon as it is measured: a run cut short by a time limit
keeps what it finished. --save appends them to results/<date>-<device>/eval_speed.jsonl, --out FILE to FILE.
--benchmark FILE takes MedQA-shaped rows from a file instead (e.g. tests/evaluation/fixtures/medqa_cpu50.jsonl).

usage: python benchmarks/eval_speed.py MODEL_DIR --adapter ADAPTER_DIR [--rows 500] [--think-budget 1024]
       python benchmarks/eval_speed.py smollm2 --adapter smollm2-think-demo --benchmark FILE --answer-tokens 512
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
    p.add_argument("--batch-size", type=int, default=0,
                   help="rows in flight (0 = medchat eval's default: the decode loop fills 60%% of free GPU memory, "
                        "at most 256; 32 on the CPU)")
    p.add_argument("--decoder", default="auto", choices=("auto", "fast", "generate"))
    p.add_argument("--benchmark", help="a MedQA-shaped JSONL file instead of the synthetic rows")
    p.add_argument("--batch1-rows", type=int, default=4, help="rows run one at a time (the same first rows)")
    p.add_argument("--sides", default="base,adapter")
    p.add_argument("--modes", default="batched,batch1")
    p.add_argument("--quantize", default="auto", choices=("auto", "4bit", "none"),
                   help="auto = int4 weights on CUDA (torchao, in the decode loop; bitsandbytes 4-bit with --decoder generate), 16-bit on the CPU (the int8 kernel costs more per row in batches)")
    args = p.parse_args(argv)
    rec = harness.recorder("eval_speed", args)

    import time
    from pathlib import Path

    from medchat.config import load_settings
    from medchat.evaluation.benchmarks import to_items
    from medchat.evaluation.report_card import open_eval_backend
    from medchat.evaluation.run import EvalSettings, generate, one_at_a_time, score_side

    if args.benchmark:
        import json

        rows = [json.loads(line) for line in Path(args.benchmark).read_text().splitlines() if line.strip()]
        items = to_items(rows[: args.rows], "medqa", args.benchmark).items
    else:
        items = to_items(medqa_rows(args.rows), "medqa", "synthetic-medqa").items
    settings = load_settings({"model": args.model, "quantize": args.quantize, "offline": True,
                              "decoder": args.decoder})
    say = lambda m: print(f"eval_speed: {m}", file=sys.stderr, flush=True)  # noqa: E731
    from medchat.store.adapters import resolve_adapter

    adapter = str(resolve_adapter(args.adapter))
    with harness.clock() as c:
        backend = open_eval_backend(settings, Path(adapter), say)
    rec.emit(step="load", s=round(c.seconds, 1), quantization=backend.info.quantization, decoder=backend.info.decoder,
             gpu_gib=harness.gpu_memory_gib())
    max_new = args.think_budget + args.answer_tokens
    batch_size = args.batch_size or backend.default_batch_size(max_new, len(items))
    for side in args.sides.split(","):
        backend.set_adapter(adapter if side == "adapter" else None)
        for mode in args.modes.split(","):
            rows = items if mode == "batched" else items[: args.batch1_rows]
            es = EvalSettings(max_new, args.think_budget, batch_size if mode == "batched" else 1, "")
            harness.empty_cache()
            t0 = time.perf_counter()
            if mode == "batched":
                replies = generate(backend, rows, es, say, f"{side} {mode}")
            else:  # the chat's own one-conversation path (the fast loop's CUDA graphs): serial evaluation
                replies = one_at_a_time(backend, rows, es)
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
