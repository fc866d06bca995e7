"""The report card: base model vs adapter on held-out rows, greedy, through the chat engine itself.

Measures what a medical reasoning fine-tune is for: does the reply close ``</think>`` and then answer,
how long are reasoning and answer, and — on rows with multiple-choice options and a gold letter — is
the answer right. (ROUGE against the reference barely moves after such fine-tunes; these do.)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from medchat.chatformat.example import Example, predicted_letter
from medchat.config import GenerationSettings, Settings

Say = Callable[[str], None]


@dataclasses.dataclass
class Reply:
    reasoning: str
    answer: str
    reasoning_tokens: int
    answer_tokens: int
    finish_reason: str
    error: str = ""


def closed_and_answered(reply: Reply) -> bool:
    """The reply reasoned, closed ``</think>`` and then gave a non-empty answer."""
    return bool(reply.reasoning.strip()) and bool(reply.answer.strip()) and reply.finish_reason != "length_in_reasoning"


def generate(backend: Any, settings: Settings, style_system: str, question: str, max_new_tokens: int) -> Reply:
    from medchat.chatformat.messages import Message
    from medchat.engine.events import GenerationDone, GenerationFailed
    from medchat.engine.session import stream_events

    gen = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, repetition_penalty=1.0, seed=0)
    messages = ([Message("system", style_system)] if style_system else []) + [Message("user", question)]
    for event in stream_events(backend, messages, gen):
        if isinstance(event, GenerationDone):
            s = event.stats
            return Reply(event.reasoning, event.answer, s.reasoning_tokens, s.answer_tokens, s.finish_reason)
        if isinstance(event, GenerationFailed):
            return Reply(event.reasoning, event.answer, 0, 0, "error", event.error)
    return Reply("", "", 0, 0, "error", "no result")  # pragma: no cover - stream_events always ends


def score(replies: Sequence[Reply], examples: Sequence[Example], reasoning_style: bool) -> dict[str, Any]:
    n = len(replies)
    closed = sum(closed_and_answered(r) for r in replies)
    mc = [(r, ex) for r, ex in zip(replies, examples) if ex.options and ex.gold]
    correct = sum(predicted_letter(r.answer, ex.options) == ex.gold for r, ex in mc)

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 1) if values else 0.0

    return {
        "rows": n,
        "closed_and_answered": closed,
        "share_closed": round(closed / n, 3) if n and reasoning_style else None,
        "reasoning_tokens_mean": mean([r.reasoning_tokens for r in replies]),
        "answer_tokens_mean": mean([r.answer_tokens for r in replies]),
        "reasoning_chars_mean": mean([len(r.reasoning) for r in replies]),
        "answer_chars_mean": mean([len(r.answer) for r in replies]),
        "hit_token_limit": sum(r.finish_reason in ("length", "length_in_reasoning") for r in replies),
        "errors": sum(bool(r.error) for r in replies),
        "mc_rows": len(mc),
        "mc_correct": correct,
        "accuracy": round(correct / len(mc), 3) if mc else None,
    }


def evaluate_backend(
    backend: Any,
    settings: Settings,
    adapter: str,
    examples: Sequence[Example],
    style: str,
    max_new_tokens: int,
    say: Say,
) -> dict[str, Any]:
    """Run every held-out question through the base model, then the adapter, with the same prompt."""
    from medchat.chatformat.prompt import get_style

    plain = get_style(style)
    reasoning_style = plain.reasoning if plain is not None else True
    sides: dict[str, list[Reply]] = {}
    t0 = time.perf_counter()
    for side in ("base", "adapter"):
        backend.set_adapter(adapter if side == "adapter" else None)
        backend.prompt_style = style  # the base gets the trained prompt too: a like-for-like comparison
        replies = []
        for i, ex in enumerate(examples, 1):
            say(f"report card: {side} {i}/{len(examples)}")
            replies.append(generate(backend, settings, settings.system_prompt, ex.question, max_new_tokens))
        sides[side] = replies
    summary = {side: score(replies, examples, reasoning_style) for side, replies in sides.items()}
    rows = [
        {
            "question": ex.question,
            "gold": ex.gold,
            **{f"{side}_{k}": v for side in sides for k, v in (
                ("reasoning", sides[side][i].reasoning[:600]),
                ("answer", sides[side][i].answer[:600]),
                ("finish", sides[side][i].finish_reason),
            )},
        }
        for i, ex in enumerate(examples)
    ]
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prompt_style": style,
        "max_new_tokens": max_new_tokens,
        "decoding": "greedy",
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": summary,
        "rows": rows,
    }


def evaluate_adapter(settings: Settings, adapter_dir: Path, examples: Sequence[Example], style: str, say: Say) -> dict[str, Any]:
    """Load base + adapter through the chat engine's local backend and compare them."""
    from medchat.engine.backends import open_local

    local = dataclasses.replace(settings, adapter=str(adapter_dir), endpoint="")
    backend = open_local(local, say)
    try:
        return evaluate_backend(backend, settings, str(adapter_dir), examples, style,
                                settings.finetune.eval_max_new_tokens, say)
    finally:
        backend.close()

