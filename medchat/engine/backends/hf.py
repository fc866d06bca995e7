"""A loaded transformers (or Unsloth) model streaming through ``model.generate``.

One streaming loop for both (``generate`` in a thread, a token streamer, a stopping criterion that
polls the cancel event). Loading lives in ``medchat.models``; torch/transformers/peft are imported lazily.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from medchat.chatformat.messages import Message
from medchat.chatformat.prompt import opens_in_reasoning, render_prompt
from medchat.config import GenerationSettings
from medchat.engine.backends.base import BackendInfo, Finished, PromptReady, RawText, StreamItem
from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
from medchat.models.catalog import ResolvedModel
from medchat.store import adapters as adapter_store

# -------------------------------------------------------------------------------------------------
# Streaming

class _TokenStreamer:
    """Receives token ids from ``generate`` and queues text deltas, one per token where possible.

    Incremental detokenisation: text is emitted once a token sequence decodes without a partial
    UTF-8 character, so multi-byte characters and merged tokens come out whole.
    """

    def __init__(self, tokenizer: Any, out: "queue.Queue[Any]") -> None:
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # end of the text already emitted
        self.pending = 0  # tokens not yet emitted
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        self.pending += value.numel()
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        now = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.out.put(RawText(now[len(before) :], self.pending))
            self.pending = 0
            self.prefix, self.read = self.read, len(self.ids)

    def end(self) -> None:
        if self.pending:
            self.out.put(RawText("", self.pending))
            self.pending = 0


_DONE = object()


class HFBackend:
    """A model + tokenizer in this process. ``kind`` is "hf" or "unsloth" (same streaming loop)."""

    def __init__(self, model: Any, tokenizer: Any, resolved: ResolvedModel, info: BackendInfo) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.resolved = resolved
        self.info = info
        self.prompt_style = resolved.prompt_style
        self._active_adapter: str | None = None
        self._lock = threading.Lock()  # one generation at a time on one model
        self._eos_ids = _eos_ids(model, tokenizer)

    # -- prompt ---------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], continue_final: bool = False) -> str:
        return render_prompt(self.tokenizer, messages, self.prompt_style, continue_final)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    # -- generation -----------------------------------------------------------------------------
    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event,
        continue_final: bool = False,
    ) -> Iterator[StreamItem]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        prompt = self.render(messages, continue_final)
        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        n_prompt = int(enc["input_ids"].shape[1])
        yield PromptReady(n_prompt, opens_in_reasoning(prompt) and not continue_final)

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # polled once per generated token
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        out: queue.Queue[Any] = queue.Queue()
        streamer = _TokenStreamer(self.tokenizer, out)
        kwargs = dict(
            **enc,
            max_new_tokens=settings.max_new_tokens,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancel()]),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._eos_ids or None,
            use_cache=True,
        )
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                          top_k=settings.top_k or None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = settings.repetition_penalty
        if settings.think_budget >= 0:  # close the reasoning at the budget, while decoding
            from transformers import LogitsProcessorList

            from medchat.engine.batched import ThinkBudget

            in_reasoning = opens_in_reasoning(prompt) and not continue_final
            kwargs["logits_processor"] = LogitsProcessorList(
                [ThinkBudget(self.tokenizer, [in_reasoning], n_prompt, settings.think_budget, self._eos_ids)])

        def run() -> None:
            try:
                with self._lock, torch.inference_mode(), self._adapter_context():
                    if settings.seed >= 0:
                        torch.manual_seed(settings.seed)
                    generated = self.model.generate(**kwargs)
                out.put(("ids", generated[0, n_prompt:].tolist()))
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
                out.put(("error", exc))
            finally:
                out.put(_DONE)

        worker = threading.Thread(target=run, name="medchat-generate", daemon=True)
        worker.start()
        new_ids: list[int] = []
        error: BaseException | None = None
        drained = False
        try:
            while (item := out.get()) is not _DONE:
                if isinstance(item, RawText):
                    yield item
                elif item[0] == "ids":
                    new_ids = item[1]
                else:
                    error = item[1]
            drained = True
        finally:
            if not drained:  # the consumer went away (closed the stream, Ctrl+C): stop generating
                cancel.set()
            worker.join()
        if error is not None:
            raise error
        yield Finished(len(new_ids), self._finish_reason(new_ids, settings, cancel))

    def generate_batch(self, conversations: Sequence[Sequence[Message]], settings: Any, *,
                       cancel: threading.Event | None = None, progress: Any = None) -> list[Any]:
        """Greedy replies to many conversations at once (``medchat.engine.batched``), with this
        backend's prompt style and active adapter; ``settings`` is a ``BatchSettings``."""
        import torch

        from medchat.engine.batched import generate_batch

        prompts = [self.render(m) for m in conversations]
        with self._lock, torch.inference_mode(), self._adapter_context():
            return generate_batch(self.model, self.tokenizer, prompts, settings, cancel=cancel, progress=progress)

    def default_batch_size(self, max_new_tokens: int, rows: int = 1 << 30) -> int:
        """Rows per left-padded ``generate`` batch for evaluation."""
        return 64 if self.info.device == "cuda" else 8

    def _finish_reason(self, ids: list[int], settings: GenerationSettings, cancel: threading.Event) -> str:
        if ids and ids[-1] in self._eos_ids:
            return "stop"
        if cancel.is_set():
            return "cancelled"
        if len(ids) >= settings.max_new_tokens:
            return "length"
        return "stop"

    # -- adapters -------------------------------------------------------------------------------
    def _adapter_context(self):
        if self._active_adapter is None and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def adapter_off(self) -> Iterator[None]:
        """Generate as the bare base model for a while (compare mode): PEFT's ``disable_adapter()``
        on the same weights, the base model's own prompt style; the adapter is back afterwards."""
        with self._lock:
            saved = self._active_adapter, self.prompt_style
            self._active_adapter, self.prompt_style = None, self.resolved.prompt_style
        try:
            yield
        finally:
            with self._lock:
                self._active_adapter, self.prompt_style = saved

    def set_adapter(self, adapter: str | None) -> None:
        if not adapter or adapter.lower() == adapter_store.NO_ADAPTER:
            with self._lock:
                self._active_adapter = None
                self.prompt_style = self.resolved.prompt_style
                self.info = replace(self.info, adapter="")
            return
        path = adapter_store.resolve_adapter(adapter)
        check_adapter_base(path, self.resolved)
        key = _adapter_key(path)
        with self._lock:
            self.model = attach_adapter(self.model, path, self.resolved, name=key).eval()
            if self.info.backend == "unsloth":  # a new PEFT wrapper needs Unsloth's inference patch again
                from unsloth import FastLanguageModel

                FastLanguageModel.for_inference(self.model)
            self._active_adapter = key
            self.prompt_style = adapter_prompt_style(path, self.resolved)
            self.info = replace(self.info, adapter=adapter)

    def close(self) -> None:
        self.model = None


def _adapter_key(path: Path) -> str:
    return "a_" + "".join(c if c.isalnum() else "_" for c in path.name)


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


