"""`medchat ask`: one question; reasoning streams to stderr (dimmed on a terminal), answer to stdout."""

from __future__ import annotations

import json
import os
import sys

from medchat.config import Settings
from medchat.engine.backends import open_backend
from medchat.chatformat.messages import Message
from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
from medchat.engine.session import stream_events
from medchat.errors import BackendError, HardwareError, UsageError

DIM, RESET = "\x1b[2m", "\x1b[0m"
DISCLAIMER = "medchat gives medical information, not medical advice. In an emergency, call your local emergency number."


def run_ask(settings: Settings, question: str, *, as_json: bool = False, show_reasoning: bool = True) -> None:
    question = question.strip()
    if not question:
        raise UsageError("the question is empty")
    err = sys.stderr
    tty = err.isatty() and not os.environ.get("NO_COLOR")
    backend = open_backend(settings, progress=lambda msg: print(f"medchat: {msg}", file=err, flush=True))
    messages = [Message("system", settings.system_prompt)] if settings.system_prompt else []
    messages.append(Message("user", question))
    in_reasoning = False
    answered = False
    done: GenerationDone | None = None
    try:
        for event in stream_events(backend, messages, settings.generation):
            if isinstance(event, ReasoningDelta):
                if show_reasoning and not as_json:
                    if not in_reasoning and tty:
                        err.write(DIM)
                    in_reasoning = True
                    err.write(event.text)
                    err.flush()
            elif isinstance(event, AnswerDelta):
                if in_reasoning:
                    err.write((RESET if tty else "") + "\n\n")
                    err.flush()
                    in_reasoning = False
                if not as_json:
                    sys.stdout.write(event.text)
                    sys.stdout.flush()
                    answered = answered or bool(event.text)
            elif isinstance(event, GenerationDone):
                done = event
            elif isinstance(event, GenerationFailed):
                if in_reasoning and tty:
                    err.write(RESET + "\n")
                if answered:
                    sys.stdout.write("\n")
                if os.environ.get("MEDCHAT_DEBUG") == "1" and event.exception is not None:
                    raise event.exception
                raise (HardwareError if event.out_of_memory else BackendError)(event.error)
    except KeyboardInterrupt:
        # Ctrl+C mid-reply: leave the terminal undimmed and the shell prompt on a line of its own.
        if in_reasoning:
            err.write((RESET if tty else "") + "\n")
            err.flush()
        if answered:
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise
    if in_reasoning:
        err.write((RESET if tty else "") + "\n")
    assert done is not None
    stats = done.stats
    if as_json:
        print(json.dumps({
            "reasoning": done.reasoning,
            "answer": done.answer,
            "model": backend.info.model,
            "adapter": backend.info.adapter or None,
            "backend": backend.info.backend,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "seconds": round(stats.seconds, 3),
            "tok_per_s": round(stats.tok_per_s, 2),
            "finish_reason": stats.finish_reason,
        }, ensure_ascii=False))
        return
    sys.stdout.write("\n")
    if stats.finish_reason == "length_in_reasoning":
        print("medchat: the token budget ran out while the model was still reasoning; "
              "raise --max-new-tokens for an answer", file=err)
    elif stats.finish_reason == "length":
        print("medchat: the answer was cut off at --max-new-tokens", file=err)
    if tty:
        print(f"{DIM}{DISCLAIMER}{RESET}", file=err)
