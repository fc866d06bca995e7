"""Data phase: formatted examples (data.py) become token rows with the prompt masked.

Rows are tokenised exactly as chat encodes its prompts, so the model trains on the text it will see;
the loss covers the completion (reasoning and answer) only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medchat.errors import DataError
from medchat.finetune import data as D
from medchat.finetune.plan import Plan, Say


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids exactly as chat encodes its prompts (the local backend adds no special tokens)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Built:
    rows: list[dict[str, list[int]]]  # input_ids, completion_mask (1 = trained)
    check: dict[str, Any]
    lengths: dict[str, Any]


def build_rows(plan: Plan, tokenizer: Any, say: Say) -> Built:
    """Format → check → tokenize → fit to max_seq_length. Loss only on completion tokens."""
    ft = plan.ft
    examples = plan.train_examples()
    system = plan.settings.system_prompt
    check = D.render_check(tokenizer, plan.style, system, examples[0], ft.max_seq_length, encode=lambda t: encode(tokenizer, t))
    formatted = D.format_examples(tokenizer, plan.style, system, examples)
    rows: list[dict[str, list[int]]] = []
    totals, completions = [], []
    truncated = dropped = 0
    for f in formatted:
        prompt_ids = encode(tokenizer, f.prompt)
        ids = encode(tokenizer, f.prompt + f.completion)
        # The prompt ends where the two encodings part (a merge across the boundary stays trained).
        start = 0
        while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
            start += 1
        totals.append(len(ids))
        completions.append(len(ids) - start)
        if len(ids) > ft.max_seq_length:
            if ft.on_long == "drop" or start >= ft.max_seq_length:
                dropped += 1
                continue
            truncated += 1
            ids = ids[: ft.max_seq_length]
        # No "labels" column: TRL (and Unsloth, which then keeps its padding-free collator) build the
        # labels from completion_mask, masking the prompt.
        rows.append({"input_ids": ids, "completion_mask": [0] * start + [1] * (len(ids) - start)})
    if not rows:
        raise DataError(f"every row is longer than --max-seq-length {ft.max_seq_length}; raise it or use --on-long truncate")
    lengths = {"tokens": D.distribution(totals), "completion_tokens": D.distribution(completions),
               "truncated": truncated, "dropped": dropped, "rows": len(rows)}
    if truncated or dropped:
        say(f"{truncated} rows truncated and {dropped} dropped at --max-seq-length {ft.max_seq_length}")
    return Built(rows, check, lengths)


def describe_lengths(lengths: dict[str, Any]) -> str:
    t, c = lengths["tokens"], lengths["completion_tokens"]
    return (f"tokens per row: min {t['min']}, median {t['p50']}, p90 {t['p90']}, max {t['max']} "
            f"(completion: median {c['p50']}, max {c['max']}); truncated {lengths['truncated']}, dropped {lengths['dropped']}")
