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
    from medchat.engine.events import GenerationDone

DIM, RESET = "\x1b[2m", "\x1b[0m"
DISCLAIMER = "medchat gives medical information, not medical advice. In an emergency, call your local emergency number."


@click.command()
@click.argument("question")
@model_options
@generation_options
@offline_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of streaming text.")
@click.option("--no-reasoning", is_flag=True, help="Hide the reasoning; print the answer only.")
@click.option("--compare", is_flag=True,
              help="Answer twice on the same loaded weights: base model, then --adapter (--json: {base, adapter}).")
def ask(question: str, as_json: bool, no_reasoning: bool, compare: bool, **params) -> None:
    """Ask one question: reasoning streams to stderr, the answer to stdout.

    QUESTION may be '-' to read it from standard input.
    """
    if question == "-":
        question = sys.stdin.read()
    run_ask(settings_from(params), question, as_json=as_json, show_reasoning=not no_reasoning, compare=compare)


def open_backend(settings: "Settings", progress: Callable[[str], None]) -> "Backend":
    """The engine is imported on first use, not by `medchat --help` (tests replace this function)."""
    from medchat.engine.backends import open_backend as open_engine_backend

    return open_engine_backend(settings, progress=progress)


def run_ask(settings: "Settings", question: str, *, as_json: bool = False, show_reasoning: bool = True,
            compare: bool = False) -> None:
    """Stream one reply: reasoning to stderr, answer to stdout (or one JSON object at the end).

    With ``compare`` the base model answers first (adapter off), then the adapter, each under a
    header line on stdout; ``--json`` prints ``{"base": {…}, "adapter": {…}}``."""
    from medchat.chatformat.messages import Message

    question = question.strip()
    if not question:
        raise UsageError("the question is empty")
    if compare and not settings.adapter:
        raise UsageError("--compare needs --adapter NAME: the base model's answer is compared with the adapter's")
    err = sys.stderr
    tty = err.isatty() and not os.environ.get("NO_COLOR")
    backend = open_backend(settings, progress=lambda msg: print(f"medchat: {msg}", file=err, flush=True))
    messages = [Message("system", settings.system_prompt)] if settings.system_prompt else []
    messages.append(Message("user", question))
    if not compare:
        done = _stream_reply(backend, messages, settings, as_json=as_json, show_reasoning=show_reasoning, tty=tty)
        if as_json:
            print(json.dumps(_reply_json(done, backend), ensure_ascii=False))
            return
        _after_reply(done, tty)
        return
    from medchat.engine.compare import BaseSide

    sides = {"base": BaseSide(backend), "adapter": backend}
    replies = {}
    for side, side_backend in sides.items():
        if not as_json:
            label = side_backend.info.model + (f" + {side_backend.info.adapter}" if side_backend.info.adapter else "")
            sys.stdout.write(f"── {side}: {label} ──\n")
            sys.stdout.flush()
        done = _stream_reply(side_backend, messages, settings, as_json=as_json, show_reasoning=show_reasoning, tty=tty)
        replies[side] = _reply_json(done, side_backend)
        if not as_json:
            sys.stdout.write("\n")
            _finish_note(done, err)
    if as_json:
        print(json.dumps(replies, ensure_ascii=False))
    elif tty:
        print(f"{DIM}{DISCLAIMER}{RESET}", file=err)


def _stream_reply(backend: "Backend", messages: list, settings: "Settings", *, as_json: bool,
                  show_reasoning: bool, tty: bool) -> "GenerationDone":
    """Stream one generation to the terminal (nothing while ``as_json``); its final event."""
    # Imported here rather than at the top: `medchat --help` imports this module and stays lean.
    from medchat.engine.events import AnswerDelta, GenerationDone, GenerationFailed, ReasoningDelta
    from medchat.engine.session import stream_events

    err = sys.stderr
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
    return done


def _reply_json(done: "GenerationDone", backend: "Backend") -> dict:
    stats = done.stats
    return {
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
    }


def _finish_note(done: "GenerationDone", err) -> None:
    if done.stats.finish_reason == "length_in_reasoning":
        print("medchat: the token budget ran out while the model was still reasoning; "
              "raise --max-new-tokens for an answer", file=err)
    elif done.stats.finish_reason == "length":
        print("medchat: the answer was cut off at --max-new-tokens", file=err)


def _after_reply(done: "GenerationDone", tty: bool) -> None:
    err = sys.stderr
    sys.stdout.write("\n")
    _finish_note(done, err)
    if tty:
        print(f"{DIM}{DISCLAIMER}{RESET}", file=err)
