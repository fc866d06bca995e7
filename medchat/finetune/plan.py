"""Plan phase of `medchat finetune`: everything that can fail without a model.

Data, row selection, adapter name, hub token, logging backend, disk space, device and base model are
all checked here, so a bad request costs seconds and no weights are loaded before it is refused.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medchat import paths
from medchat.config import Settings
from medchat.errors import HardwareError, UsageError
from medchat.finetune import checkpoints
from medchat.finetune import data as D
from medchat.store import adapters as store

Say = Callable[[str], None]


@dataclass
class Plan:
    settings: Settings
    name: str
    dataset: D.Dataset
    selection: D.Selection
    recipe: str = ""
    resume: bool = False
    device: str = "cpu"
    backend: str = "hf"
    style: str = "chat_template"
    resolved: Any = None  # medchat.models.ResolvedModel
    notes: list[str] = field(default_factory=list)
    learning_rate: float = 0.0  # the rate actually used (settles "auto" once the model is loaded)
    log_dir: str = ""  # where --report-to tensorboard writes (kept after the run)

    @property
    def ft(self):
        return self.settings.finetune

    @property
    def run_dir(self) -> Path:
        return runs_dir() / self.name

    def train_examples(self) -> list[D.Example]:
        return [self.dataset.examples[i] for i in self.selection.train]

    def eval_examples(self) -> list[D.Example]:
        return [self.dataset.examples[i] for i in self.selection.eval]


def runs_dir() -> Path:
    """Checkpoints of unfinished runs (removed once the adapter is stored)."""
    return paths.data_dir() / "runs"


def default_name(model_name: str, dataset: D.DataSource) -> str:
    stem = Path(model_name.rstrip("/")).name.lower().split("-")[0] or "model"
    data = "sample" if dataset.kind == "sample" else Path(dataset.id.rstrip("/")).stem.lower()
    data = "".join(c if c.isalnum() else "-" for c in data).strip("-")[:20] or "data"
    base = f"{stem}-{data}-{time.strftime('%m%d-%H%M')}"
    name, n = base, 2
    while (store.store_dir() / name).exists() or (runs_dir() / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def check_report_to(report_to: str) -> None:
    import importlib.util

    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        raise UsageError(f"--report-to {report_to} needs the '{report_to}' package: pip install 'medchat[{report_to}]' (or use --report-to none)")
    if report_to == "wandb":
        check_wandb_login()


def check_wandb_login() -> None:
    """W&B asks for its key when the run starts, after the model loaded; ask now instead (it prompts on
    a terminal) and turn a missing key into one line. Offline and disabled modes need no key."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    import wandb

    try:
        wandb.login()
    except Exception as exc:  # noqa: BLE001 - wandb's errors vary by version
        why = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"--report-to wandb: {why} (run `wandb login`, set WANDB_API_KEY, or set "
                         "WANDB_MODE=offline to log locally); nothing was trained") from None


def hub_token() -> str:
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_TOKEN", "")
    return get_token() or ""


def check_push(repo: str, offline: bool) -> None:
    if not repo:
        return
    from medchat.models.catalog import hub_host, hub_reachable

    if "/" not in repo:
        raise UsageError(f"--push-to-hub needs USER/REPO, got {repo!r}")
    if offline or not hub_reachable():
        why = "offline mode is on" if offline else f"the hub ({hub_host()}) is unreachable"
        raise UsageError(f"cannot --push-to-hub {repo}: {why}; nothing was trained")
    if not hub_token():
        raise UsageError(f"cannot --push-to-hub {repo}: no Hugging Face token (set HF_TOKEN or run `hf auth login`)")


def check_disk(plan: Plan) -> None:
    root = paths.ensure_private_dir(paths.data_dir())
    free_gib = shutil.disk_usage(root).free / 2**30
    if free_gib < 1:
        raise HardwareError(f"only {free_gib:.1f} GiB free in {root}; checkpoints and the adapter need more")


def make_plan(settings: Settings, *, name: str = "", recipe: str = "", restart: bool = False, say: Say) -> Plan:
    """Validate everything that needs no model. Raises before any weights are loaded."""
    ft = settings.finetune
    check_report_to(ft.report_to)
    check_push(ft.push_to_hub, settings.offline)
    if name:
        store.validate_name(name)
        if (store.store_dir() / name).exists():
            raise UsageError(f"an adapter named '{name}' already exists (choose another --name, or `medchat adapters rm {name}`)")
        if checkpoints.exists(runs_dir() / name) and not restart:
            raise UsageError(f"an unfinished run named '{name}' exists: continue it with `medchat finetune --resume {name}`, "
                             "or discard it and start over with --restart")
    say(f"reading data: {ft.dataset}")
    dataset = D.load_dataset(ft.dataset, subset=ft.subset, split=ft.split, columns=ft.columns, offline=settings.offline)
    mc = [i for i, ex in enumerate(dataset.examples) if ex.options]
    selection = D.select_rows(
        len(dataset.examples), samples=ft.samples, fraction=ft.fraction, first=ft.select == "first",
        eval_rows=ft.eval_rows, seed=ft.seed, prefer_eval=mc,
    )
    plan = Plan(settings, name, dataset, selection, recipe=recipe)
    if selection.note:
        plan.notes.append(selection.note)
    say(f"{len(dataset.examples)} rows ({dataset.shape} shape); training on {len(selection.train)}, "
        f"holding out {len(selection.eval)} for the report card")
    return plan


def resolve(plan: Plan, say: Say) -> None:
    """Pick device and backend, and find the base model (no weights loaded yet)."""
    from medchat.chatformat.prompt import get_style
    from medchat.errors import ModelUnavailable
    from medchat.models.catalog import resolve_model
    from medchat.models.loading import pick_backend, pick_device

    s = plan.settings
    plan.device = pick_device(s.device)
    plan.backend = pick_backend(s.backend, plan.device)
    try:
        plan.resolved = resolve_model(s.model, device=plan.device, offline=s.offline, progress=say, fallback=False)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"{exc} (for an offline run use --model smollm2)") from None
    style = s.finetune.prompt_style
    plan.style = plan.resolved.prompt_style if style == "auto" else style
    get_style(plan.style)  # unknown names fail here
    if not plan.name:
        plan.name = default_name(plan.resolved.name, plan.dataset.source)
