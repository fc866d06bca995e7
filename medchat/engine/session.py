"""Turn a backend's raw stream into typed events, and keep a multi-turn conversation.

Only answers go back to the model: earlier turns' reasoning is kept for the user, never re-sent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from medchat.chatformat.messages import Message
from medchat.chatformat.think import ReasoningSplitter, think_text
from medchat.config import GenerationSettings
from medchat.engine.backends.base import Backend, Finished, PromptReady, RawText
from medchat.engine.compare import BaseSide
from medchat.engine.events import (
    AnswerDelta,
    Event,
    GenerationDone,
    GenerationFailed,
    GenerationStats,
    ReasoningDelta,
)
from medchat.errors import MedchatError, out_of_memory

if TYPE_CHECKING:
    from medchat.store.history import Conversation


def stream_events(
    backend: Backend,
    messages: Sequence[Message],
    settings: GenerationSettings,
    cancel: threading.Event | None = None,
    *,
    continue_final: bool = False,
    continue_in_reasoning: bool = False,
) -> Iterator[Event]:
    """Run one generation: yields Reasoning/Answer deltas, then exactly one Done or Failed."""
    cancel = cancel or threading.Event()
    start = time.perf_counter()
    splitter = ReasoningSplitter(start_in_reasoning=continue_in_reasoning, continuing=continue_final)
    reasoning: list[str] = []
    answer: list[str] = []
    prompt_tokens = completion = reasoning_tokens = 0
    first_token: float | None = None
    reasoning_end: float | None = None
    reason = "stop"

    def route(events: Sequence[ReasoningDelta | AnswerDelta]) -> Iterator[Event]:
        nonlocal reasoning_tokens, reasoning_end
        for ev in events:
            if isinstance(ev, ReasoningDelta):
                reasoning_tokens += ev.tokens
                reasoning.append(ev.text)
            else:
                if reasoning_end is None and (reasoning or splitter.saw_reasoning) and ev.text:
                    reasoning_end = time.perf_counter() - start
                answer.append(ev.text)
            if ev.text:
                yield ev

    try:
        for item in backend.stream(messages, settings, cancel, continue_final=continue_final):
            if isinstance(item, PromptReady):
                prompt_tokens = item.prompt_tokens
                if item.opens_in_reasoning and not continue_final:
                    splitter = ReasoningSplitter(start_in_reasoning=True)
            elif isinstance(item, RawText):
                if first_token is None and item.text:
                    first_token = time.perf_counter() - start
                completion += item.tokens
                yield from route(splitter.feed(item.text, item.tokens))
            elif isinstance(item, (ReasoningDelta, AnswerDelta)):  # pre-split by an endpoint
                if first_token is None and item.text:
                    first_token = time.perf_counter() - start
                completion += item.tokens
                yield from route([item])
            elif isinstance(item, Finished):
                completion = max(completion, item.completion_tokens)
                reason = item.reason
        yield from route(splitter.close())
    except Exception as exc:  # noqa: BLE001 - every failure becomes an event; the caller stays alive
        yield from route(splitter.close())
        if isinstance(exc, MedchatError):
            message = str(exc)
        elif out_of_memory(exc):
            message = "out of memory while generating: lower generation.max_new_tokens or use a smaller model"
        else:
            message = f"generation failed: {type(exc).__name__}: {exc}"
        yield GenerationFailed(
            message, "".join(reasoning), "".join(answer), out_of_memory=out_of_memory(exc), exception=exc
        )
        return
    if reason == "length" and splitter.in_reasoning:
        reason = "length_in_reasoning"
    if cancel.is_set() and reason == "stop":
        reason = "cancelled"
    stats = GenerationStats(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        reasoning_tokens=reasoning_tokens,
        seconds=time.perf_counter() - start,
        first_token_seconds=first_token,
        reasoning_seconds=reasoning_end if reasoning_end is not None else (
            time.perf_counter() - start if splitter.saw_reasoning else None
        ),
        finish_reason=reason,  # type: ignore[arg-type]
    )
    yield GenerationDone("".join(reasoning), "".join(answer), stats)


class LiveReply:
    """The reply being generated, delta by delta, for a reader in another thread (the chat UI).

    The generation thread only ever appends to ``reasoning`` and ``answer`` (the deltas' texts, in
    order) and then raises the matching token counter. ``list.append`` is atomic under the
    interpreter lock, so another thread may read ``len()`` and slice up to it without a lock: it sees
    a prefix of the reply. All reasoning comes before any answer, so a reader that reads
    ``len(answer)`` first, then ``len(reasoning)``, never sees answer text whose reasoning it lacks.
    Only the new text of this generation is here (a continued reply's earlier text is in its turn).
    """

    __slots__ = ("reasoning", "answer", "reasoning_tokens", "answer_tokens")

    def __init__(self) -> None:
        self.reasoning: list[str] = []
        self.answer: list[str] = []
        self.reasoning_tokens = 0
        self.answer_tokens = 0


@dataclass
class Turn:
    """One exchange. ``reasoning`` is shown and stored but never sent back to the model."""

    user: str
    reasoning: str = ""
    answer: str = ""
    stats: GenerationStats | None = None
    error: str = ""
    created: float = field(default_factory=time.time)
    base: "Turn | None" = None  # compare mode: the base model's reply to the same prompt (never re-sent)

    @property
    def finish_reason(self) -> str:
        if self.error:
            return "error"
        return self.stats.finish_reason if self.stats else ""

    @property
    def can_continue(self) -> bool:
        return self.finish_reason in {"length", "length_in_reasoning"}


class ChatSession:
    """A conversation with one backend. Generation methods are iterators of events, meant to run in
    a worker thread; ``cancel()`` may be called from any thread. ``live`` is the reply of the latest
    generation as it streams (see `LiveReply`), there as soon as a generation method returns."""

    def __init__(
        self,
        backend: Backend,
        generation: GenerationSettings | None = None,
        system_prompt: str = "",
        turns: Sequence[Turn] = (),
    ) -> None:
        self.backend = backend
        self.generation = generation or GenerationSettings()
        self.system_prompt = system_prompt
        self.turns: list[Turn] = list(turns)
        self._cancel = threading.Event()
        self.live = LiveReply()

    # -- prompt ---------------------------------------------------------------------------------
    def messages(self, upto: int | None = None) -> list[Message]:
        """The prompt for turn ``upto`` (default: the last turn): earlier answers only."""
        turns = self.turns if upto is None else self.turns[: upto + 1]
        out = [Message("system", self.system_prompt)] if self.system_prompt else []
        for i, turn in enumerate(turns):
            out.append(Message("user", turn.user))
            if i < len(turns) - 1:
                out.append(Message("assistant", turn.answer))
        return out

    def context_tokens(self) -> int:
        msgs = self.messages()
        return self.backend.count_tokens(msgs) if msgs else 0

    # -- generation -----------------------------------------------------------------------------
    def send(self, text: str) -> Iterator[Event]:
        self.turns.append(Turn(user=text))
        return self._run(self.messages())

    def send_compare(self, text: str) -> Iterator[Event]:
        """Compare mode, first half: a new turn, answered by the base model (adapter off) into
        ``turn.base``. Then ``answer_last()`` answers it with the adapter, from the same prompt."""
        self.turns.append(Turn(user=text, base=Turn(user=text)))
        return self._run(self.messages(), base_side=True)

    def answer_last(self) -> Iterator[Event]:
        """Compare mode, second half: the adapter's reply to the last turn (earlier turns' context is
        the adapter's answers)."""
        if not self.turns:
            raise MedchatError("nothing to answer yet")
        return self._run(self.messages())

    def regenerate(self) -> Iterator[Event]:
        """Replace the last turn's reply with a fresh one."""
        if not self.turns:
            raise MedchatError("nothing to regenerate yet")
        last = self.turns[-1]
        self.turns[-1] = Turn(user=last.user)
        return self._run(self.messages())

    def continue_last(self) -> Iterator[Event]:
        """Continue a reply that ran out of tokens, from where it stopped."""
        if not self.turns or not self.turns[-1].can_continue:
            raise MedchatError("the last reply did not stop early; nothing to continue")
        turn = self.turns[-1]
        in_reasoning = turn.finish_reason == "length_in_reasoning"
        partial = think_text(turn.reasoning, closed=False) if in_reasoning else self._raw_reply(turn)
        msgs = self.messages() + [Message("assistant", partial)]
        return self._run(msgs, continue_final=True, continue_in_reasoning=in_reasoning, extend=True)

    @staticmethod
    def _raw_reply(turn: Turn) -> str:
        if turn.reasoning:
            return think_text(turn.reasoning, turn.answer)
        return turn.answer

    def cancel(self) -> None:
        self._cancel.set()

    def _run(
        self,
        messages: list[Message],
        continue_final: bool = False,
        continue_in_reasoning: bool = False,
        extend: bool = False,
        base_side: bool = False,
    ) -> Iterator[Event]:
        # A new cancel flag and live reply now, not at the first token: a cancel() before iteration
        # starts counts, and a reader can hold the reply before the generation thread starts.
        self._cancel = threading.Event()
        self.live = LiveReply()
        return self._events(messages, self._cancel, self.live, continue_final, continue_in_reasoning, extend,
                            base_side)

    def _events(
        self,
        messages: list[Message],
        cancel: threading.Event,
        live: LiveReply,
        continue_final: bool,
        continue_in_reasoning: bool,
        extend: bool,
        base_side: bool = False,
    ) -> Iterator[Event]:
        turn = self.turns[-1]
        backend = self.backend
        if base_side:
            assert turn.base is not None
            turn, backend = turn.base, BaseSide(self.backend)
        before_reasoning, before_answer = (turn.reasoning, turn.answer) if extend else ("", "")
        # Deltas go to the live reply, and join the turn's text once, when the reply ends: `+=` per
        # token copies the whole text each time, which grows with the square of the reply.
        reasoning, answer = live.reasoning, live.answer
        ended = False
        try:
            for event in stream_events(
                backend,
                messages,
                self.generation,
                cancel,
                continue_final=continue_final,
                continue_in_reasoning=continue_in_reasoning,
            ):
                kind = type(event)
                if kind is ReasoningDelta:
                    reasoning.append(event.text)
                    live.reasoning_tokens += event.tokens
                elif kind is AnswerDelta:
                    answer.append(event.text)
                    live.answer_tokens += event.tokens
                elif kind is GenerationDone:
                    ended = True
                    turn.reasoning = before_reasoning + event.reasoning
                    turn.answer = before_answer + event.answer
                    turn.stats = _merge_stats(turn.stats, event.stats) if extend else event.stats
                    turn.error = ""
                elif kind is GenerationFailed:
                    ended = True
                    turn.reasoning = before_reasoning + "".join(reasoning)  # the partial text stays
                    turn.answer = before_answer + "".join(answer)
                    turn.error = event.error
                yield event
        finally:
            if not ended:  # a consumer that stopped early keeps every delta it was given
                turn.reasoning = before_reasoning + "".join(reasoning)
                turn.answer = before_answer + "".join(answer)


def _merge_stats(old: GenerationStats | None, new: GenerationStats) -> GenerationStats:
    if old is None:
        return new
    return replace(
        new,
        prompt_tokens=old.prompt_tokens,
        completion_tokens=old.completion_tokens + new.completion_tokens,
        reasoning_tokens=old.reasoning_tokens + new.reasoning_tokens,
        seconds=old.seconds + new.seconds,
        first_token_seconds=old.first_token_seconds,
        reasoning_seconds=(old.reasoning_seconds or 0) + (new.reasoning_seconds or 0)
        if new.reasoning_seconds is not None else old.reasoning_seconds,
    )


def turns_for_session(conversation: "Conversation") -> list[Turn]:
    """Stored turns as engine `Turn`s, to continue a reopened conversation."""
    from medchat.store.history import IN_PROGRESS

    out = []
    for position, t in enumerate(conversation.turns):
        turn = _turn_from_stored(t, IN_PROGRESS)
        if (base := conversation.base_replies.get(position)) is not None:
            turn.base = _turn_from_stored(base, IN_PROGRESS)
        out.append(turn)
    return out


def _turn_from_stored(t: Any, in_progress: str) -> Turn:
    """A stored turn (or compare mode's stored base reply) as an engine `Turn`."""
    finish = t.finish_reason if t.finish_reason in {"stop", "length", "length_in_reasoning", "cancelled"} else (
        "cancelled" if t.finish_reason == in_progress else "stop"
    )
    stats = GenerationStats(
        prompt_tokens=t.prompt_tokens,
        completion_tokens=t.completion_tokens,
        reasoning_tokens=t.reasoning_tokens,
        seconds=t.seconds,
        reasoning_seconds=t.reasoning_seconds,
        finish_reason=finish,  # type: ignore[arg-type]
    )
    return Turn(user=t.user, reasoning=t.reasoning, answer=t.answer, stats=stats, error=t.error, created=t.created)
