"""Attach a LoRA adapter to a loaded base model, after checking it was made for that base.

The check reads only the adapter's manifest and PEFT config, so a mismatched adapter is refused before
any weights load.
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




def attach_adapter(model: Any, path: Path, resolved: ResolvedModel, name: str = "default") -> Any:
    """``model`` with the adapter at ``path`` attached and active (a PeftModel); one clear error if the
    adapter does not fit the model."""
    from peft import PeftModel

    try:
        if isinstance(model, PeftModel):
            if name not in model.peft_config:
                model.load_adapter(str(path), adapter_name=name)
            model.set_adapter(name)
            return model
        return PeftModel.from_pretrained(model, str(path), adapter_name=name)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise AdapterError(f"adapter {path.name} does not fit {resolved.name}: {str(exc).splitlines()[0]}") from exc


def adapter_prompt_style(path: Path | None, resolved: ResolvedModel) -> str:
    """The prompt style an adapter was trained with (its manifest says), else the model's own."""
    manifest = read_manifest(path) if path is not None else None
    return (manifest.prompt_style if manifest else "") or resolved.prompt_style
