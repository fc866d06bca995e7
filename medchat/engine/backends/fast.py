"""A local model served through medchat's own decode loop (``medchat.models.fastdecode``).

``open_fast`` decides from the model's config (before any weights load) whether the fast path
applies, loads the weights the way it needs them (16-bit, or a 4-bit checkpoint to dequantise),
folds the LoRA adapter in, and returns a ``FastBackend`` -- or ``(None, reason)`` so that the
caller falls back to transformers' ``generate``. On CUDA the weights become int4 (torchao's
tile-packed format), on the CPU int8 (aten's weight-only kernel), unless ``quantize = "none"``.

Switching adapters rebuilds the decoder from the base weights (the adapter is merged, not
attached): it takes about as long as the first load.
"""

from __future__ import annotations

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
            for text, n in stream_text(self.decoder, self.tokenizer, ids, replace(settings, max_new_tokens=budget),
                                       cancel, self._eos_ids):
                count += n
                yield RawText(text, n)
        if cancel.is_set():
            reason = "cancelled"
        elif count >= budget:
            reason = "length"
        else:
            reason = "stop"
        yield Finished(count, reason)

    def set_adapter(self, adapter: str | None) -> None:
        adapter = None if not adapter or adapter.lower() == adapter_store.NO_ADAPTER else adapter
        if adapter == self._adapter_name:
            return
        path = None
        if adapter:
            path = adapter_store.resolve_adapter(adapter)
            check_adapter_base(path, self.resolved)
        with self._fast_lock:  # the adapter is merged into the weights: rebuild from the base model
            self.decoder = None
            _free_gpu()
            decoder, _tok, info, _husk = _build(self.resolved, self.settings, self.info.device, self.weights,
                                                path, lambda _m: None)
            self.decoder, self.info = decoder, info
            self._adapter_name = adapter
            self.prompt_style = adapter_prompt_style(path, self.resolved)
            self.info = replace(self.info, adapter=adapter or "")

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


def _build(resolved: ResolvedModel, settings: Settings, device: str, weights: str, adapter_path: Any,
           say: Say) -> tuple[Any, Any, BackendInfo, Any]:
    """(decoder, tokenizer, info, model husk): load, fold the adapter in, fuse/quantise."""
    from medchat.models.fastdecode import FastDecoder

    model, tokenizer = load_for_decoder(resolved, device=device, dtype=settings.dtype)
    if adapter_path is not None:
        model = attach_adapter(model, adapter_path, resolved).eval()
    if weights in ("int4", "int8"):
        say(f"quantising to {weights} for the fast decode path")
    decoder = FastDecoder(model, quantize=weights, device=device)  # type: ignore[arg-type]
    _free_gpu()
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
