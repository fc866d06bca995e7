"""Generation backends. Each streams raw text (or pre-split deltas) for a list of chat messages.

`open_backend` picks one from settings: a remote endpoint, medchat's fast decode loop (``fast.py``),
or transformers' ``generate`` (``hf.py``). Weights are loaded by ``medchat.models``; heavy imports
happen inside the chosen module only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from medchat.config import Settings
    from medchat.engine.backends.base import Backend

Say = Callable[[str], None]


def open_backend(settings: "Settings", progress: Say | None = None) -> "Backend":
    """Load the backend the settings ask for. ``progress`` receives one-line status messages."""
    say = progress or (lambda _msg: None)
    if settings.endpoint:
        from medchat.engine.backends.endpoint import EndpointBackend

        backend = EndpointBackend(settings.endpoint, api_key=settings.api_key, model=settings.model)
        if settings.adapter:  # a LoRA module the server serves under its own model name
            backend.set_adapter(settings.adapter)
        return backend
    return open_local(settings, say)


def open_local(settings: "Settings", say: Say) -> "Backend":
    """Resolve the model, check the adapter against it (before any weights load), then load both into
    the fast decode loop where it applies, else into transformers' ``generate``. With no adapter asked
    for, the embedded model gets the bundled demo adapter (``store.adapters.default_adapter``)."""
    import dataclasses

    from medchat.engine.backends.base import BackendInfo
    from medchat.engine.backends.fast import open_fast
    from medchat.engine.backends.hf import HFBackend
    from medchat.models.adapters import check_adapter_base
    from medchat.models.catalog import EMBEDDED_ID, resolve_model
    from medchat.models.loading import load_hf_model, load_unsloth_model, pick_backend, pick_device
    from medchat.store import adapters as adapter_store

    device = pick_device(settings.device)
    backend_kind = pick_backend(settings.backend, device)
    resolved = resolve_model(settings.model, device=device, offline=settings.offline, progress=say)
    if resolved.fallback_note:
        say(resolved.fallback_note)
    adapter = adapter_store.default_adapter(settings.adapter, resolved.base_id, EMBEDDED_ID)
    if adapter != settings.adapter and adapter:
        say(f"using the bundled demo adapter {adapter} (it teaches the <think> format, not medicine; "
            f"--adapter {adapter_store.NO_ADAPTER} for the bare model)")
    settings = dataclasses.replace(settings, adapter=adapter)
    adapter_path = None
    if settings.adapter:
        adapter_path = adapter_store.resolve_adapter(settings.adapter)
        check_adapter_base(adapter_path, resolved)
    slow_why = "unsloth backend" if settings.backend == "unsloth" else ""
    if not slow_why:
        fast, slow_why = open_fast(settings, resolved, device, adapter_path, say)
        if fast is not None:
            return fast
    say(f"loading {resolved.name} on {device} ({backend_kind})")
    if backend_kind == "unsloth":
        model, tokenizer = load_unsloth_model(resolved, dtype=settings.dtype, quantize=settings.quantize)
    else:
        model, tokenizer = load_hf_model(resolved, device=device, dtype=settings.dtype, quantize=settings.quantize)
    info = BackendInfo(
        backend=backend_kind,
        model=resolved.name,
        device=device,
        dtype=str(getattr(model, "dtype", "")).replace("torch.", ""),
        quantization="4bit" if getattr(model, "is_loaded_in_4bit", False) else "none",
        context_length=int(getattr(model.config, "max_position_embeddings", 0) or 0),
        decoder="transformers generate" + (f" ({slow_why})" if slow_why else ""),
    )
    backend = HFBackend(model, tokenizer, resolved, info)
    if adapter_path is not None:
        say(f"loading adapter {settings.adapter}")
        backend.set_adapter(settings.adapter)
    elif backend_kind == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(backend.model)
    return backend
