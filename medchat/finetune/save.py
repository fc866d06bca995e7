"""Save phase: the adapter's manifest, the merged model, the hub push, and the run state --resume reads.

The manifest's schema lives in medchat.store.manifest; this module only fills it in.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from medchat import paths
from medchat.config import Settings, merge
from medchat.errors import UsageError
from medchat.finetune import checkpoints
from medchat.finetune import data as D
from medchat.finetune.plan import Plan, Say, hub_token, runs_dir
from medchat.finetune.rows import Built
from medchat.finetune.train import TrainResult, batching
from medchat.store.manifest import Manifest


def settings_dict(settings: Settings) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("medchat", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "unsloth", "bitsandbytes"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def hardware(plan: Plan) -> dict[str, Any]:
    info: dict[str, Any] = {"device": plan.device, "backend": plan.backend, "cpu_count": os.cpu_count(),
                            "platform": platform.platform()}
    if plan.device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def model_revision(source: str) -> str:
    """The hub commit of a cached model, where known."""
    if Path(source).exists():
        return ""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "config.json")
        if isinstance(found, str):
            return Path(found).parent.name  # snapshots/<commit>/config.json
    except Exception:  # noqa: BLE001 - best effort
        pass
    return ""


def invocation() -> str:
    """The `medchat finetune …` command line that is running (so that it can be run again), or ""."""
    import shlex
    import sys

    args = sys.argv[1:]
    return "medchat " + shlex.join(args) if args[:1] == ["finetune"] else ""


def build_manifest(plan: Plan, tokenizer: Any, built: Built, result: TrainResult, started: float,
                   revision: str = "") -> Manifest:
    from medchat import __version__

    src = plan.dataset.source
    losses = [loss for _, loss in result.losses]
    s = settings_dict(plan.settings)
    s.pop("api_key", None)
    s["finetune"]["learning_rate"] = plan.learning_rate or s["finetune"]["learning_rate"]
    return Manifest.model_validate({
        "name": plan.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "medchat_version": __version__,
        "recipe": plan.recipe,
        "command": invocation(),
        "base_model": {"id": plan.resolved.base_id, "name": plan.resolved.name, "source": plan.resolved.source,
                       "revision": revision},
        "prompt_style": plan.style,
        "system_prompt": plan.settings.system_prompt,
        "chat_template_hash": D.template_hash(tokenizer, plan.style),
        "dataset": {"id": src.id, "kind": src.kind, "subset": src.subset, "split": src.split,
                    "revision": src.revision, "shape": plan.dataset.shape, "rows_total": len(plan.dataset.examples),
                    "rows_used": len(built.rows), "select": plan.ft.select,
                    "train_indices": list(plan.selection.train), "eval_indices": list(plan.selection.eval)},
        "lengths": built.lengths,
        "render_check": {k: v for k, v in built.check.items() if k not in ("prompt", "completion")},
        "settings": s,
        "training": {"steps": result.steps, "seconds": round(result.seconds, 1), "tokens": result.tokens,
                     "tokens_per_second": round(result.tokens / max(result.seconds, 1e-9), 1),
                     "steady_tokens_per_second": result.steady_tokens_per_second,
                     "peak_gpu_gib": result.peak_gpu_gib, "interrupted": result.interrupted,
                     "batching": batching(plan)},
        "losses": {"first_train": losses[0] if losses else None, "final_train": losses[-1] if losses else None,
                   "history": result.losses},
        "versions": library_versions(),
        "hardware": hardware(plan),
        "duration_seconds": round(time.time() - started, 1),
        "notes": plan.notes,
        "tensorboard_logs": plan.log_dir or "",
    })


def portable_base_id(base_id: str) -> str:
    """The base model as adapter_config.json and its README name it: a hub id as it is; for a local
    folder only its name (a path would show the user's folders on the hub and mean nothing elsewhere).
    The manifest keeps the local source, for resolution on this machine."""
    if base_id.startswith(("/", "~", ".")) or Path(base_id).is_absolute():
        return Path(base_id.rstrip("/")).name
    return base_id


def save_adapter(model: Any, folder: Path, base_id: str, dtype: str = "float32") -> None:
    """PEFT's files (adapter_config.json, weights, README card) naming ``base_id``, never the local
    path the weights were loaded from; the weights in ``dtype``."""
    portable = portable_base_id(base_id)
    embeddings = False
    for config in model.peft_config.values():
        config.base_model_name_or_path = portable
        embeddings = embeddings or any(m in ("embed_tokens", "lm_head") for m in (config.target_modules or ()))
    base = model.get_base_model()
    if getattr(base, "config", None) is not None:
        base.config.name_or_path = portable  # the README card's `base_model`
    if hasattr(base, "name_or_path"):
        base.name_or_path = portable  # its `base_model:adapter:` tag
    # medchat never resizes the vocabulary, so embeddings are saved exactly when LoRA targets them;
    # PEFT's "auto" would otherwise ask the hub for the base's config.json to find out.
    model.save_pretrained(str(folder), save_embedding_layers=embeddings)
    if dtype != "float32":
        cast_adapter_weights(folder / "adapter_model.safetensors", dtype)


def cast_adapter_weights(path: Path, dtype: str) -> None:
    """Rewrite PEFT's weights file with its floating-point tensors in ``dtype`` (a 16-bit file is half
    the size; PEFT and medchat's decode loop cast them back to the model's dtype when loading)."""
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    tensors = {k: (v.to(target) if v.is_floating_point() else v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def save_merged(plan: Plan, adapter_dir: Path, target: Path, say: Say) -> None:
    """A merged 16-bit model beside the adapter, made like `medchat export`: from a 16-bit copy of the
    base, never by merging into 4-bit weights (which rounds the fine-tune away)."""
    from medchat.export.merged import export_merged

    export_merged(str(adapter_dir), target, model=plan.resolved.source, device=plan.device,
                  offline=plan.settings.offline, say=say)


def push(plan: Plan, adapter_dir: Path, say: Say) -> list[str]:
    """Upload the adapter (and its merged model) to private hub repos; returns the repos."""
    from huggingface_hub import HfApi

    repo = plan.ft.push_to_hub
    api = HfApi(token=hub_token())
    pushed = []
    say(f"pushing the adapter to {repo}")
    api.create_repo(repo, private=True, exist_ok=True)
    # evals/ holds benchmark questions and every reply: the model card carries the figures instead
    api.upload_folder(repo_id=repo, folder_path=str(adapter_dir), ignore_patterns=["merged/*", "evals/*"])
    pushed.append(repo)
    if (adapter_dir / "merged").is_dir():
        merged_repo = f"{repo}-merged"
        say(f"pushing the merged model to {merged_repo}")
        api.create_repo(merged_repo, private=True, exist_ok=True)
        api.upload_folder(repo_id=merged_repo, folder_path=str(adapter_dir / "merged"))
        pushed.append(merged_repo)
    return pushed


def release_memory() -> None:
    """Return the training model's memory (the caller drops its references first)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


# -------------------------------------------------------------------------------------------------
# Run state: what `--resume NAME` needs to continue exactly the same run


def save_run_state(plan: Plan) -> None:
    from medchat.paths import atomic_write_text

    paths.ensure_private_dir(plan.run_dir)
    state = {"name": plan.name, "recipe": plan.recipe, "settings": settings_dict(plan.settings),
             "train_indices": list(plan.selection.train), "eval_indices": list(plan.selection.eval),
             "dataset_revision": plan.dataset.source.revision}
    atomic_write_text(plan.run_dir / checkpoints.RUN_STATE, json.dumps(state, indent=2) + "\n")


def load_run_state(name: str) -> tuple[Settings, str, dict[str, Any]]:
    path = runs_dir() / name / checkpoints.RUN_STATE
    if not path.is_file():
        known = sorted(p.name for p in runs_dir().glob("*") if checkpoints.exists(p)) if runs_dir().is_dir() else []
        raise UsageError(f"no unfinished run named '{name}' (unfinished runs: {', '.join(known) or 'none'})")
    state = json.loads(path.read_text())
    settings = merge(Settings, Settings(), state["settings"], str(path)).validate()
    return settings, state.get("recipe", ""), state
