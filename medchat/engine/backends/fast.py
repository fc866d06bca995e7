"""A local model served through medchat's own decode loop (``medchat.models.fastdecode``).

``open_fast`` decides from the model's config (before any weights load) whether the fast path
applies, loads the weights the way it needs them (16-bit, or a 4-bit checkpoint to dequantise),
and returns a ``FastBackend`` -- or ``(None, reason)`` so that the caller falls back to
transformers' ``generate``. On CUDA the weights become int4 (torchao's tile-packed format), on the
CPU int8 (aten's weight-only kernel), unless ``quantize = "none"``.

The LoRA adapter stays unmerged (16-bit, beside the base matmuls), so switching adapters swaps its
small matrices in the running decoder instead of rebuilding it. When an adapter loads with the model,
a probe measures how much of its effect the decode loop keeps (``medchat.models.fidelity``).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

from medchat.chatformat.messages import Message
from medchat.chatformat.prompt import opens_in_reasoning
from medchat.config import GenerationSettings, Settings
from medchat.engine.backends.base import BackendInfo, Finished, PromptReady, RawText, StreamItem
from medchat.engine.backends.hf import HFBackend
from medchat.errors import MedchatError
from medchat.models import fidelity
from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
from medchat.models.catalog import ResolvedModel
from medchat.models.loading import load_for_decoder
from medchat.store import adapters as adapter_store

Say = Callable[[str], None]


def plan_fast(settings: Settings, resolved: ResolvedModel, device: str) -> tuple[str | None, str]:
    """(weight format "int4"/"int8"/"none", "") when the fast path applies, else (None, why not)."""
    if settings.decoder == "generate":
        return None, "decoder = generate"
    if settings.quantize == "4bit" and device != "cuda":
        return None, "4-bit weights on the CPU need bitsandbytes' kernels"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolved.source, local_files_only=resolved.local_only,
                                            trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - the slow path will report the real load error
        return None, f"config unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    from medchat.models.fastdecode import SUPPORTED_TYPES

    if config.model_type not in SUPPORTED_TYPES:
        return None, f"model type {config.model_type} is not one of {', '.join(SUPPORTED_TYPES)}"
    if device != "cuda":
        # int8 weights (one scale per row) roughly halve the bytes each token reads; `quantize = none`
        # keeps 16-bit weights and transformers' exact ops (generate's greedy text, token for token)
        return ("none" if settings.quantize == "none" else "int8"), ""
    if settings.quantize == "none":
        return "none", ""
    try:
        import torchao  # noqa: F401
    except ImportError:
        return None, "int4 weights need torchao (pip install 'medchat[gpu]')"
    return "int4", ""


class FastBackend(HFBackend):
    """HFBackend whose generation runs through a FastDecoder (same prompts, same events)."""


    def __init__(self, decoder: Any, model: Any, tokenizer: Any, resolved: ResolvedModel, info: BackendInfo,
                 settings: Settings, weights: str, adapter: str | None) -> None:
        super().__init__(model, tokenizer, resolved, info)
        self.decoder = decoder
        self.settings = settings
        self.weights = weights
        self._adapter_name = adapter
        self._fast_lock = threading.Lock()
        if adapter:
            self.prompt_style = adapter_prompt_style(adapter_store.resolve_adapter(adapter), resolved)
        self.model = None  # its weights now live in the decoder; only the config/tokenizer remain useful

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event,
        continue_final: bool = False,
    ) -> Iterator[StreamItem]:
        from medchat.models.fastdecode import stream_text

        prompt = self.render(messages, continue_final)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        yield PromptReady(len(ids), opens_in_reasoning(prompt) and not continue_final)
        budget = min(settings.max_new_tokens, self.decoder.max_context - len(ids))
        if budget <= 0:
            raise MedchatError(
                f"the conversation ({len(ids)} tokens) fills the model's context ({self.decoder.max_context}); "
                "start a new chat"
            )
        count = 0
        with self._fast_lock:
            if settings.think_budget >= 0:
                pieces = self._budgeted(ids, settings, budget, cancel,
                                        opens_in_reasoning(prompt) and not continue_final)
            else:
                pieces = stream_text(self.decoder, self.tokenizer, ids, replace(settings, max_new_tokens=budget),
                                     cancel, self._eos_ids)
            for text, n in pieces:
                count += n
                yield RawText(text, n)
        if cancel.is_set():
            reason = "cancelled"
        elif count >= budget:
            reason = "length"
        else:
            reason = "stop"
        yield Finished(count, reason)

    def _budgeted(self, ids: list[int], settings: GenerationSettings, budget: int, cancel: threading.Event,
                  in_reasoning: bool) -> Iterator[tuple[str, int]]:
        """(text, tokens) like ``stream_text``, with the thinking budget: at the budget the decode stops,
        ``</think>`` is appended to the token ids, and decoding resumes from there (the decoder reuses
        the KV cache of the shared prefix, so only the closing tokens are prefilled)."""
        from medchat.engine.batched import CLOSE_TEXT, BudgetTracker
        from medchat.models.fastdecode import IncrementalDetokenizer

        tracker = BudgetTracker(self.tokenizer, in_reasoning, settings.think_budget)
        prompt, left = list(ids), budget
        while left > 0 and not cancel.is_set():
            generated: list[int] = []
            if not tracker.due():
                detok, pending = IncrementalDetokenizer(self.tokenizer), 0
                run = self.decoder.generate(prompt, replace(settings, max_new_tokens=left), cancel, self._eos_ids)
                try:
                    for tok in run:
                        generated.append(tok)
                        pending += 1
                        text = detok.push(tok)
                        if text:
                            yield text, pending
                            pending = 0
                        if tracker.feed(tok):
                            break
                finally:
                    run.close()
                tail = detok.flush()
                if tail or pending:
                    yield tail, pending
                if not tracker.due():
                    return  # EOS, the token limit or a cancel: the reply is over
            close = tracker.close_ids
            yield CLOSE_TEXT, len(close)
            tracker.closed()
            prompt += generated + close
            left -= len(generated) + len(close)

    def generate_batch(self, conversations: Sequence[Sequence[Message]], settings: Any, *,
                       cancel: threading.Event | None = None, progress: Any = None) -> list[Any]:
        """Greedy replies to many conversations at once through the decoder (``medchat.engine.batched``:
        a slot per row, a finished row's slot refilled at once), this backend's prompt style and adapter."""
        from medchat.engine.batched import generate_batch_fast

        prompts = [self.render(m) for m in conversations]
        with self._fast_lock:
            return generate_batch_fast(self.decoder, self.tokenizer, prompts, settings, self._eos_ids,
                                       cancel=cancel, progress=progress)

    def default_batch_size(self, max_new_tokens: int, rows: int = 1 << 30) -> int:
        """Rows in flight for evaluating ``rows`` rows (room for prompts of up to 1,024 tokens)."""
        from medchat.engine.batched import default_slots

        return default_slots(self.decoder, min(max_new_tokens + 1024, self.decoder.max_context), rows)

    @contextlib.contextmanager
    def adapter_off(self) -> Iterator[None]:
        """Generate as the bare base model for a while (compare mode): the adapter's matrices are left out
        of the same decoder (its CUDA graphs for that state are captured once and kept)."""
        if not self._adapter_name:
            yield
            return
        with self._fast_lock:
            saved = self.prompt_style
            self.prompt_style = self.resolved.prompt_style
        try:
            with self.decoder.without_adapter():
                yield
        finally:
            with self._fast_lock:
                self.prompt_style = saved

    def set_adapter(self, adapter: str | None) -> None:
        adapter = None if not adapter or adapter.lower() == adapter_store.NO_ADAPTER else adapter
        if adapter == self._adapter_name:
            return
        from medchat.models.lora import UnsupportedLora, read_lora

        lora = path = None
        if adapter:
            path = adapter_store.resolve_adapter(adapter)
            check_adapter_base(path, self.resolved)
            try:
                lora = read_lora(path, n_layers=len(self.decoder.layers))
            except UnsupportedLora as exc:
                raise MedchatError(f"{exc}; start medchat with --decoder generate to use it") from exc
        with self._fast_lock:  # the adapter is not merged: swap its matrices in the running decoder
            self.decoder.set_adapter(lora)
            self._adapter_name = adapter
            self.prompt_style = adapter_prompt_style(path, self.resolved)
            # the probe's reference needs the loaded weights, which the decoder has replaced
            self.info = replace(self.info, adapter=adapter or "", adapter_fidelity=None, adapter_warning="")

    def close(self) -> None:
        self.decoder = None
        _free_gpu()


def _free_gpu() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def probe_ids(tokenizer: Any, style: str) -> list[int]:
    """The fixed prompt the fidelity probe scores, rendered as the chat renders a question."""
    from medchat.chatformat.prompt import render_prompt

    text = render_prompt(tokenizer, [Message("user", fidelity.PROBE_QUESTION)], style)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _build(resolved: ResolvedModel, settings: Settings, device: str, weights: str, adapter_path: Any,
           say: Say) -> tuple[Any, Any, BackendInfo, Any]:
    """(decoder, tokenizer, info, model husk): load, attach the adapter, fuse/quantise, probe."""
    from medchat.models.fastdecode import FastDecoder

    model, tokenizer = load_for_decoder(resolved, device=device, dtype=settings.dtype)
    reference = ids = None
    if adapter_path is not None:
        model = attach_adapter(model, adapter_path, resolved).eval()
        ids = probe_ids(tokenizer, adapter_prompt_style(adapter_path, resolved))
        reference = fidelity.reference_effect(model, ids)  # before the decoder takes the weights over
    if weights in ("int4", "int8"):
        say(f"quantising to {weights} for the fast decode path")
    decoder = FastDecoder(model, quantize=weights, device=device)  # type: ignore[arg-type]
    _free_gpu()
    kept = None
    if reference is not None:
        kept = fidelity.effect_cosine(reference, fidelity.decoder_effect(decoder, ids))
        weights_now = "int4" if decoder.int4 else ("int8" if decoder.int8 else str(decoder.dtype).replace("torch.", ""))
        line = fidelity.describe(kept, weights_now)
        say(line if kept >= fidelity.WARN_BELOW else f"warning: {line}")
    quant = "int4" if decoder.int4 else ("int8" if decoder.int8 else "none")
    info = BackendInfo(
        backend="hf",
        model=resolved.name,
        adapter="",
        device=device,
        dtype=str(decoder.dtype).replace("torch.", ""),
        quantization=quant,
        context_length=decoder.max_context,
        decoder=decoder.describe(),
        adapter_fidelity=None if kept is None else round(kept, 4),
        adapter_warning=f"adapter effect kept {kept:.2f}: try --quantize none"
        if kept is not None and kept < fidelity.WARN_BELOW else "",
    )
    return decoder, tokenizer, info, model


def open_fast(settings: Settings, resolved: ResolvedModel, device: str, adapter_path: Any,
              say: Say) -> tuple[FastBackend | None, str]:
    """A FastBackend, or (None, why not) when the fast path does not apply to this model/machine."""
    weights, why = plan_fast(settings, resolved, device)
    if weights is None:
        return None, why
    say(f"loading {resolved.name} on {device} (medchat decode loop)")
    try:
        decoder, tokenizer, info, model = _build(resolved, settings, device, weights, adapter_path, say)
    except MedchatError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an unexpected layout: fall back to generate
        from medchat.models.fastdecode import FastPathUnavailable

        _free_gpu()
        if settings.decoder == "fast" and not isinstance(exc, FastPathUnavailable):
            raise
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    backend = FastBackend(decoder, model, tokenizer, resolved, info, settings, weights,
                          settings.adapter or None)
    backend.info = replace(backend.info, adapter=settings.adapter or "")
    return backend, ""
