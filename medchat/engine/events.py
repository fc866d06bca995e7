"""Typed events at the engine boundary. Consumers (TUI, `ask`, the server) never parse tags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from medchat.chatformat.think import AnswerDelta, ReasoningDelta

FinishReason = Literal["stop", "length", "length_in_reasoning", "cancelled", "error"]


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    reasoning_seconds: float | None = None
    finish_reason: FinishReason = "stop"

    @property
    def answer_tokens(self) -> int:
        return max(self.completion_tokens - self.reasoning_tokens, 0)

    @property
    def tok_per_s(self) -> float:
        """Decode speed: completion tokens over the time after the first token arrived."""
        decode = self.seconds - (self.first_token_seconds or 0.0)
        if self.completion_tokens <= 1 or decode <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode


@dataclass(frozen=True)
class GenerationDone:
    """The reply ended (finished, hit its budget, or was cancelled); carries the full texts."""

    reasoning: str
    answer: str
    stats: GenerationStats = field(default_factory=GenerationStats)


@dataclass(frozen=True)
class GenerationFailed:
    """The backend raised; ``error`` is one line for the user. Partial text is kept."""

    error: str
    reasoning: str = ""
    answer: str = ""
    out_of_memory: bool = False
    exception: BaseException | None = field(default=None, compare=False, repr=False)


Event = Union[ReasoningDelta, AnswerDelta, GenerationDone, GenerationFailed]
