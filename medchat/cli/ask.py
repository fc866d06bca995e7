"""`medchat ask`: one question; reasoning streams to stderr (dimmed on a terminal), answer to stdout."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Callable

import click

from medchat.cli.options import generation_options, model_options, offline_option, settings_from
from medchat.errors import BackendError, HardwareError, UsageError

if TYPE_CHECKING:
    from medchat.config import Settings
    from medchat.engine.backends.base import Backend

DIM, RESET = "\x1b[2m", "\x1b[0m"
DISCLAIMER = "medchat gives medical information, not medical advice. In an emergency, call your local emergency number."


@click.command()
@click.argument("question")
@model_options
@generation_options
@offline_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming text.")
@click.option("--no-reasoning", is_flag=True, help="Hide the reasoning; print the answer only.")
def ask(question: str, as_json: bool, no_reasoning: bool, **params) -> None:
    """Ask one question: reasoning streams to stderr, the answer to stdout.

    QUESTION may be '-' to read it from standard input.
    """
    if question == "-":
        question = sys.stdin.read()
    run_ask(settings_from(params), question, as_json=as_json, show_reasoning=not no_reasoning)


def open_backend(settings: "Settings", progress: Callable[[str], None]) -> "Backend":
    """The engine is imported on first use, not by `medchat --help` (tests replace this function)."""
    from medchat.engine.backends import open_backend as open_engine_backend

    return open_engine_backend(settings, progress=progress)


def run_ask(settings: "Settings", question: str, *, as_json: bool = False, show_reasoning: bool = True) -> None:
    """Stream one reply: reasoning to stderr, answer to stdout (or one JSON object at the end)."""
    # Imported here rather than at the top: `medchat --help` imports this module and stays lean.
    from medchat.chatformat.messages import Message
    from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
    from medchat.engine.session import stream_events

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
            "adapter_fidelity": backend.info.adapter_fidelity,
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
