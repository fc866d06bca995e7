"""The one small protocol every backend implements, and the items it streams."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Literal, Protocol, Sequence, Union

from medchat.chatformat.messages import Message
from medchat.config import GenerationSettings
from medchat.engine.events import AnswerDelta, ReasoningDelta


@dataclass(frozen=True)
class PromptReady:
    """First item of a stream: the rendered prompt's size, and whether it pre-fills ``<think>``.

    A remote endpoint learns the prompt size only at the end, so it may send a second one, just
    before ``Finished``, carrying the count; consumers keep the last count they saw.
    """

    prompt_tokens: int
    opens_in_reasoning: bool = False


@dataclass(frozen=True)
class RawText:
    """Model output not yet split into reasoning and answer; ``tokens`` = tokens it came from."""

    text: str
    tokens: int = 1


@dataclass(frozen=True)
class Finished:
    """Last item of a stream."""

    completion_tokens: int
    reason: Literal["stop", "length", "cancelled"]


StreamItem = Union[PromptReady, RawText, ReasoningDelta, AnswerDelta, Finished]


@dataclass(frozen=True)
class BackendInfo:
    """What the status bar and `--json` report about the loaded model."""

    backend: str  # "unsloth", "hf", "endpoint", "fake"
    model: str  # the user-facing model name or id
    adapter: str = ""  # adapter name or path, "" for the bare base model
    device: str = "cpu"
    dtype: str = ""
    quantization: str = ""
    context_length: int = 0
    decoder: str = ""  # which decode loop runs: medchat's fast path (and how) or transformers' generate
    # share of the adapter's effect the decode loop keeps (cosine with PEFT's; medchat.models.fidelity),
    # None when not probed (no adapter, transformers' generate, or after a switch)
    adapter_fidelity: float | None = None
    adapter_warning: str = ""  # set when that share is below medchat.models.fidelity.WARN_BELOW


class Backend(Protocol):
    info: BackendInfo

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event,
        continue_final: bool = False,
    ) -> Iterator[StreamItem]:
        """Generate a reply to ``messages``; stop soon after ``cancel`` is set.

        With ``continue_final`` the last message is a partial assistant reply to be continued.
        Raises MedchatError subclasses for failures a user can act on.
        """
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Prompt size of ``messages`` (for the status bar's context use); 0 if unknown."""
        ...

    def set_adapter(self, adapter: str | None) -> None:
        """Switch to another adapter (name or path), or to the bare base model with None."""
        ...

    def close(self) -> None: ...
