"""Local models: transformers + peft on any device, or Unsloth's FastLanguageModel on CUDA.

Both backends share one streaming loop (``generate`` in a thread, a token streamer, a stopping
criterion that polls the cancel event). torch/transformers/peft/unsloth are imported lazily.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from medchat import adapters as adapter_store
from medchat.config import GenerationSettings, Settings
from medchat.engine.backends.base import BackendInfo, Finished, Message, PromptReady, RawText, StreamItem
from medchat.engine.prompt import CHAT_TEMPLATE, opens_in_reasoning, render_prompt
from medchat.errors import AdapterError, HardwareError, MedchatError, ModelUnavailable, out_of_memory
from medchat.models import ResolvedModel, local_folder, resolve_model, same_base

Say = Callable[[str], None]


# -------------------------------------------------------------------------------------------------
# Hardware and loading

def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise HardwareError("--device cuda was asked for, but torch sees no CUDA GPU")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(requested: str, device: str):
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16  # measured faster than float32 on CPU for small models


def wants_4bit(quantize: str, device: str, resolved: ResolvedModel) -> bool:
    prequantized = "bnb-4bit" in resolved.source.lower()
    if prequantized:
        return False  # the checkpoint carries its own quantization config
    if quantize == "auto":
        return device == "cuda"
    return quantize == "4bit"


def unsloth_available() -> bool:
    """Unsloth is only considered on CUDA: on a CPU its import silently patches transformers and TRL."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None


def pick_backend(requested: str, device: str) -> str:
    if requested == "unsloth":
        if device != "cuda":
            raise HardwareError("the unsloth backend needs a CUDA GPU; use --backend hf on this machine")
        if not unsloth_available():
            raise HardwareError("unsloth is not installed; install medchat[gpu] or use --backend hf")
        return "unsloth"
    if requested == "auto":
        return "unsloth" if device == "cuda" and unsloth_available() else "hf"
    return requested


def load_hf_model(
    resolved: ResolvedModel,
    *,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "auto",
    for_training: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) through transformers, safetensors only, no remote code."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # progress bars would garble the TUI and `ask`
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    kwargs: dict[str, Any] = dict(dtype=torch_dtype, use_safetensors=True, trust_remote_code=False)
    if resolved.local_only:
        kwargs["local_files_only"] = True
    if wants_4bit(quantize, device, resolved):
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise HardwareError("4-bit loading needs bitsandbytes: pip install 'medchat[quant]'") from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )
    kwargs["device_map"] = {"": 0} if device == "cuda" else "cpu"
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.source, local_files_only=resolved.local_only)
        model = AutoModelForCausalLM.from_pretrained(resolved.source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - map load failures onto one clear line
        raise _load_error(resolved, exc) from exc
    ensure_pad_token(tokenizer)
    if not for_training:
        model.eval()
    return model, tokenizer


def ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def _load_error(resolved: ResolvedModel, exc: BaseException) -> MedchatError:
    if out_of_memory(exc):
        return HardwareError(f"out of memory loading {resolved.name}: try --quantize 4bit or a smaller model")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "safetensors" in text.lower() and "use_safetensors" in text.lower():
        return ModelUnavailable(f"{resolved.name} has no safetensors weights; medchat does not load pickled weights")
    return ModelUnavailable(f"cannot load {resolved.name}: {text}")


def load_unsloth_model(resolved: ResolvedModel, *, dtype: str, quantize: str, max_seq_length: int = 4096,
                       generic: bool = False):
    import unsloth  # noqa: F401  (first: it patches transformers)
    from unsloth import FastLanguageModel, FastModel

    load_4bit = quantize != "none"
    torch_dtype = None if dtype == "auto" else pick_dtype(dtype, "cuda")
    try:
        model, tokenizer = (FastModel if generic else FastLanguageModel).from_pretrained(
            resolved.source, max_seq_length=max_seq_length, dtype=torch_dtype, load_in_4bit=load_4bit
        )
    except Exception as exc:  # noqa: BLE001
        raise _load_error(resolved, exc) from exc
    ensure_pad_token(tokenizer)
    return model, tokenizer


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


class LocalBackend:
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

    def set_adapter(self, adapter: str | None) -> None:
        if adapter is None or adapter == "":
            with self._lock:
                self._active_adapter = None
                self.prompt_style = self.resolved.prompt_style
                self.info = replace(self.info, adapter="")
            return
        path = adapter_store.resolve_adapter(adapter)
        check_adapter_base(path, self.resolved)
        from peft import PeftModel

        key = _adapter_key(path)
        with self._lock:
            try:
                if isinstance(self.model, PeftModel):
                    if key not in self.model.peft_config:
                        self.model.load_adapter(str(path), adapter_name=key)
                    self.model.set_adapter(key)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=key)
                self.model.eval()
            except (RuntimeError, ValueError, KeyError) as exc:
                raise AdapterError(
                    f"adapter {path.name} does not fit {self.resolved.name}: {str(exc).splitlines()[0]}"
                ) from exc
            if self.info.backend == "unsloth":  # a new PEFT wrapper needs Unsloth's inference patch again
                from unsloth import FastLanguageModel

                FastLanguageModel.for_inference(self.model)
            self._active_adapter = key
            manifest = adapter_store.read_manifest(path) or {}
            self.prompt_style = str(manifest.get("prompt_style") or self.resolved.prompt_style)
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


def check_adapter_base(path: Path, resolved: ResolvedModel) -> None:
    """Refuse an adapter trained for another base model, before any weights load."""
    made_for = adapter_store.adapter_base_model(path)
    if not made_for:
        return  # nothing recorded: the shape check at load time still protects us
    if Path(made_for).expanduser().is_dir():  # trained on a local folder: compare what it holds
        folder = Path(made_for).expanduser()
        if folder.resolve() == Path(resolved.source).resolve():
            return
        with contextlib.suppress(MedchatError):
            made_for = local_folder(folder).base_id
    if made_for in (resolved.source, resolved.name) or same_base(made_for, resolved.base_id):
        return
    raise AdapterError(
        f"adapter {path.name} was trained for {made_for}, but the loaded model is {resolved.base_id}; "
        f"start medchat with --model {made_for}"
    )


def open_local(settings: Settings, say: Say) -> LocalBackend:
    """Resolve, load and wrap the model the settings ask for (plus its adapter, checked first)."""
    device = pick_device(settings.device)
    backend_kind = pick_backend(settings.backend, device)
    resolved = resolve_model(settings.model, device=device, offline=settings.offline, progress=say)
    if resolved.fallback_note:
        say(resolved.fallback_note)
    adapter_path = None
    if settings.adapter:
        adapter_path = adapter_store.resolve_adapter(settings.adapter)
        check_adapter_base(adapter_path, resolved)
    slow_why = "unsloth backend" if settings.backend == "unsloth" else ""
    if not slow_why:  # medchat's own decode loop where it applies (fastlocal.py), else generate()
        from medchat.engine.backends.fastlocal import open_fast

        fast, slow_why = open_fast(settings, resolved, device, adapter_path, say)
        if fast is not None:
            return fast
    say(f"loading {resolved.name} on {device} ({backend_kind})")
    if backend_kind == "unsloth":
        model, tokenizer = load_unsloth_model(resolved, dtype=settings.dtype, quantize=settings.quantize)
    else:
        model, tokenizer = load_hf_model(resolved, device=device, dtype=settings.dtype, quantize=settings.quantize)
    quant = "4bit" if getattr(model, "is_loaded_in_4bit", False) else "none"
    info = BackendInfo(
        backend=backend_kind,
        model=resolved.name,
        device=device,
        dtype=str(getattr(model, "dtype", "")).replace("torch.", ""),
        quantization=quant,
        context_length=int(getattr(model.config, "max_position_embeddings", 0) or 0),
        decoder="transformers generate" + (f" ({slow_why})" if slow_why else ""),
    )
    backend = LocalBackend(model, tokenizer, resolved, info)
    if adapter_path is not None:
        say(f"loading adapter {settings.adapter}")
        backend.set_adapter(settings.adapter)
    elif backend_kind == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(backend.model)
    return backend
