"""One paired evaluation: the same items, asked of the base model and of the adapter with the same
prompt and greedy settings, scored strictly, summarised with intervals and a paired test.

Generation goes through the backend's batched path (``generate_batch``: many rows in flight, the
thinking budget enforced while decoding); a backend without one (a scripted test backend) is asked
one row at a time through the engine's event stream.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from medchat.chatformat.messages import Message
from medchat.evaluation.benchmarks import Item
from medchat.evaluation.extract import extract
from medchat.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_ci

Say = Callable[[str], None]
SIDES = ("base", "adapter")


@dataclass(frozen=True)
class EvalSettings:
    max_new_tokens: int
    think_budget: int = -1  # reasoning tokens before </think> is forced; -1 = no limit, 0 = no reasoning
    batch_size: int = 16
    system_prompt: str = ""


@dataclass(frozen=True)
class Reply:
    reasoning: str
    answer: str
    reasoning_tokens: int
    answer_tokens: int
    finish_reason: str
    budget_hit: bool = False
    error: str = ""


def closed_and_answered(reply: Reply) -> bool:
    """The reply reasoned, closed ``</think>`` and then gave a non-empty answer."""
    return (bool(reply.reasoning.strip()) and bool(reply.answer.strip())
            and reply.finish_reason != "length_in_reasoning")


def messages_for(item: Item, system_prompt: str) -> list[Message]:
    return ([Message("system", system_prompt)] if system_prompt else []) + [Message("user", item.prompt)]


def generate(backend: Any, items: Sequence[Item], settings: EvalSettings, say: Say, label: str) -> list[Reply]:
    conversations = [messages_for(it, settings.system_prompt) for it in items]
    if getattr(backend, "generate_batch", None) is not None:
        from medchat.engine.batched import BatchSettings

        last = [0.0]

        def progress(done: int, total: int) -> None:
            if time.monotonic() - last[0] > 2 or done == total:
                last[0] = time.monotonic()
                say(f"{label}: {done}/{total} rows")

        batch = BatchSettings(settings.max_new_tokens, settings.think_budget, settings.batch_size)
        return [Reply(r.reasoning, r.answer, r.reasoning_tokens, r.answer_tokens, r.finish_reason, r.budget_hit)
                for r in backend.generate_batch(conversations, batch, progress=progress)]
    return one_at_a_time(backend, items, settings)


def one_at_a_time(backend: Any, items: Sequence[Item], settings: EvalSettings) -> list[Reply]:
    """The rows one by one through the chat's own path (``stream_events``: on the fast decoder its batch-1
    loop, CUDA graphs included), with the thinking budget: the serial reference for the batched path."""
    return [_one(backend, messages_for(it, settings.system_prompt), settings) for it in items]


def _one(backend: Any, messages: list[Message], settings: EvalSettings) -> Reply:
    from medchat.config import GenerationSettings
    from medchat.engine.events import GenerationDone, GenerationFailed
    from medchat.engine.session import stream_events

    gen = GenerationSettings(temperature=0.0, max_new_tokens=settings.max_new_tokens, repetition_penalty=1.0, seed=0,
                             think_budget=settings.think_budget)
    for event in stream_events(backend, messages, gen):
        if isinstance(event, GenerationDone):
            s = event.stats
            return Reply(event.reasoning, event.answer, s.reasoning_tokens, s.answer_tokens, s.finish_reason)
        if isinstance(event, GenerationFailed):
            return Reply(event.reasoning, event.answer, 0, 0, "error", error=event.error)
    return Reply("", "", 0, 0, "error", error="no result")  # pragma: no cover - stream_events always ends


def _rate(count: int, n: int) -> float | None:
    return round(count / n, 4) if n else None


def score_side(items: Sequence[Item], replies: Sequence[Reply]) -> tuple[dict[str, Any], list[str], list[bool]]:
    """(summary, extracted answer per row, correct per scored row)."""
    extracted = [extract(r.answer, it.kind, it.options) for it, r in zip(items, replies)]
    scored = [i for i, it in enumerate(items) if it.gold]
    correct = [extracted[i] == items[i].gold for i in scored]
    failures = sum(1 for i in scored if not extracted[i])
    n = len(replies)
    ci = bootstrap_ci(correct)

    def median(values: list[int]) -> float | None:
        return float(statistics.median(values)) if values else None

    summary = {
        "rows": n,
        "scored": len(scored),
        "correct": sum(correct),
        "accuracy": _rate(sum(correct), len(scored)),
        "ci95": [round(ci[0], 4), round(ci[1], 4)] if scored else None,
        "extraction_failures": failures,
        "extraction_failure_rate": _rate(failures, len(scored)),
        "closed_rate": _rate(sum(closed_and_answered(r) for r in replies), n),
        "cut_in_reasoning_rate": _rate(sum(r.finish_reason == "length_in_reasoning" for r in replies), n),
        "budget_hit_rate": _rate(sum(r.budget_hit for r in replies), n),
        "cut_in_answer_rate": _rate(sum(r.finish_reason == "length" for r in replies), n),
        "median_reasoning_tokens": median([r.reasoning_tokens for r in replies]),
        "median_answer_tokens": median([r.answer_tokens for r in replies]),
        "generated_tokens": sum(r.reasoning_tokens + r.answer_tokens for r in replies),
        "errors": sum(bool(r.error) for r in replies),
    }
    return summary, extracted, correct


def evaluate(backend: Any, items: Sequence[Item], settings: EvalSettings, adapter: str | None, say: Say,
             style: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, per-row records). Without an adapter only the base model is evaluated.

    Both sides use one prompt style: ``style``, else the adapter's own (the base is asked exactly as
    the adapter is, a like-for-like comparison)."""
    sides = SIDES if adapter else SIDES[:1]
    if adapter and not style:
        backend.set_adapter(adapter)
        style = getattr(backend, "prompt_style", None)
    replies: dict[str, list[Reply]] = {}
    seconds: dict[str, float] = {}
    for side in sides:
        backend.set_adapter(adapter if side == "adapter" else None)
        if style:
            backend.prompt_style = style
        t0 = time.perf_counter()
        replies[side] = generate(backend, items, settings, say, side)
        seconds[side] = round(time.perf_counter() - t0, 2)
    summary: dict[str, Any] = {"base": None, "adapter": None, "paired": None,
                               "prompt_style": style or getattr(backend, "prompt_style", "")}
    extracted: dict[str, list[str]] = {}
    correct: dict[str, list[bool]] = {}
    for side in sides:
        s, extracted[side], correct[side] = score_side(items, replies[side])
        s["seconds"] = seconds[side]
        s["tokens_per_second"] = round(s["generated_tokens"] / seconds[side], 1) if seconds[side] else None
        summary[side] = s
    if adapter and correct["base"]:
        lo, hi = paired_bootstrap_ci(correct["base"], correct["adapter"])
        diff = (sum(correct["adapter"]) - sum(correct["base"])) / len(correct["base"])
        summary["paired"] = {"difference": round(diff, 4), "ci95": [round(lo, 4), round(hi, 4)],
                             "mcnemar_p": round(mcnemar_exact(correct["base"], correct["adapter"]), 6)}
    records = []
    for i, it in enumerate(items):
        record: dict[str, Any] = {"id": it.id, "prompt": it.prompt, "gold": it.gold}
        for side in sides:
            r = replies[side][i]
            record[side] = {"reasoning": r.reasoning, "answer": r.answer, "extracted": extracted[side][i],
                            "correct": bool(it.gold) and extracted[side][i] == it.gold,
                            "finish_reason": r.finish_reason, "budget_hit": r.budget_hit,
                            "reasoning_tokens": r.reasoning_tokens, "answer_tokens": r.answer_tokens,
                            **({"error": r.error} if r.error else {})}
        records.append(record)
    return summary, records
