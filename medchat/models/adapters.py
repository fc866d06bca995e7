"""Attach a LoRA adapter to a loaded base model, after checking it was made for that base.

The check reads only the adapter's manifest, PEFT config and the weight file's header, so a mismatched,
malformed or truncated adapter is refused before any weights load. After attaching, the adapter's tensor
names are compared with the ones the model expects: PEFT loads non-strictly and would only warn, so an
adapter whose keys match nothing (or only some layers) would silently do nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from medchat.errors import AdapterError, MedchatError
from medchat.models.catalog import ResolvedModel, local_folder, same_base
from medchat.store import adapters as adapter_store
from medchat.store.manifest import read_manifest


def check_adapter_base(path: Path, resolved: ResolvedModel) -> None:
    """Refuse an adapter trained for another base model, or with a malformed config or weight file,
    before any weights load."""
    check_adapter_config(path)
    adapter_tensor_names(path)
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


# adapter_config.json fields whose type PEFT trusts (a wrong one surfaces as a TypeError deep in layer set-up)
_INT_FIELDS = ("r",)
_NUMBER_FIELDS = ("lora_alpha", "lora_dropout")


def check_adapter_config(path: Path) -> dict[str, Any]:
    """``adapter_config.json`` read and its core fields type-checked; one error naming the field."""
    where = path / adapter_store.PEFT_CONFIG
    config = adapter_store.read_json(where)
    if not isinstance(config, dict):
        raise AdapterError(f"{where}: expected a JSON object")

    def bad(key: str, expected: str) -> AdapterError:
        return AdapterError(f"{where}: key '{key}': expected {expected}, got {config[key]!r}")

    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise AdapterError(f"{where}: peft_type {peft_type!r} is not supported (medchat loads LoRA adapters)")
    for key in _INT_FIELDS:
        if key in config and (type(config[key]) is not int or config[key] < 1):
            raise bad(key, "a whole number >= 1")
    for key in _NUMBER_FIELDS:
        if key in config and (isinstance(config[key], bool) or not isinstance(config[key], (int, float))):
            raise bad(key, "a number")
    targets = config.get("target_modules")
    if targets is not None and not isinstance(targets, str) and not (
        isinstance(targets, list) and all(isinstance(t, str) for t in targets)
    ):
        raise bad("target_modules", "a list of module names")
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key)
        if pattern is not None and not (
            isinstance(pattern, dict) and all(type(v) in (int, float) for v in pattern.values())
        ):
            raise bad(key, "an object of numbers")
    return config


def adapter_tensor_names(path: Path) -> set[str]:
    """The tensor names in the adapter's weight file, from its header alone (a truncated or corrupt
    file is refused here, before any weights load)."""
    weights = path / adapter_store.WEIGHT_FILES[0]
    if weights.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="numpy") as fh:
                return set(fh.keys())
        except (SafetensorError, OSError) as exc:
            raise AdapterError(
                f"{weights} is damaged or incomplete ({str(exc).splitlines()[0]}); copy or train the adapter again"
            ) from exc
    legacy = path / adapter_store.WEIGHT_FILES[1]
    import torch

    try:  # tensors only: weights_only refuses pickled code
        return set(torch.load(str(legacy), map_location="cpu", weights_only=True, mmap=True))
    except Exception as exc:  # torch raises many types for a bad pickle; all mean the same here
        raise AdapterError(f"{legacy} is damaged or not a tensor file: {str(exc).splitlines()[0]}") from exc


def _key_mismatch(model: Any, path: Path, name: str) -> str:
    """'' if the adapter's tensors are exactly those the attached adapter expects, else what differs."""
    from peft.utils import get_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model, adapter_name=name))
    found = adapter_tensor_names(path)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if not missing and not unexpected:
        return ""

    def some(keys: list[str]) -> str:
        shown = [k.removeprefix("base_model.model.") for k in keys[:3]]
        return ", ".join(shown) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = ["none of its tensors match the model's layers, so it would change nothing"
             if len(missing) == len(expected) else
             "only some of its tensors match the model's layers, so it would apply in part"]
    if missing:
        parts.append(f"{len(missing)} of {len(expected)} expected tensors missing ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({some(unexpected)})")
    return "; ".join(parts)


def attach_adapter(model: Any, path: Path, resolved: ResolvedModel, name: str = "default") -> Any:
    """``model`` with the adapter at ``path`` attached and active (a PeftModel); one clear error if the
    adapter does not fit the model."""
    import warnings

    from peft import PeftModel

    wrapped = isinstance(model, PeftModel)
    if wrapped and name in model.peft_config:
        model.set_adapter(name)
        return model
    try:
        with warnings.catch_warnings():  # PEFT's missing-keys warning: the check below says it in one line
            warnings.filterwarnings("ignore", message=".*(missing|unexpected) adapter keys.*")
            if wrapped:
                model.load_adapter(str(path), adapter_name=name)
            else:
                model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        mismatch = _key_mismatch(model, path, name)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"adapter {path.name} does not fit {resolved.name}: {str(exc).splitlines()[0]}") from exc
    if mismatch:
        # Take the half-attached adapter out again, so the model is left as it was.
        if wrapped:
            model.delete_adapter(name)
        else:
            model.unload()
        raise AdapterError(
            f"adapter {path.name} does not fit {resolved.name}: {mismatch}"
        )
    if wrapped:
        model.set_adapter(name)
    return model


def adapter_prompt_style(path: Path | None, resolved: ResolvedModel) -> str:
    """The prompt style an adapter was trained with (its manifest says), else the model's own."""
    manifest = read_manifest(path) if path is not None else None
    return (manifest.prompt_style if manifest else "") or resolved.prompt_style
