"""The adapter manifest (``medchat.json``): what an adapter was trained from, how, and how it went.

One typed, versioned record, read and written only here. ``format`` says which shape a file has; files
written by earlier medchat releases still load (a bare base-model string, missing sections), and keys
this version does not know are kept, so rewriting a manifest never drops what a newer release wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medchat.errors import AdapterError
from medchat.paths import atomic_write_text

FILENAME = "medchat.json"
FORMAT = 1  # bump when a field changes meaning; readers upgrade older formats in ``_upgrade``


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class BaseModelRecord(_Record):
    id: str = ""  # hub id (or folder) the adapter's weights fit
    name: str = ""  # the name the user gave (a catalogue name, a hub id, a path)
    source: str = ""  # what was loaded (a 4-bit build, a local copy)
    revision: str = ""  # hub commit, where known


class DatasetRecord(_Record):
    id: str = ""
    kind: str = ""
    subset: str = ""
    split: str = ""
    revision: str = ""
    shape: str = ""
    rows_total: int = 0
    rows_used: int = 0
    select: str = ""
    train_indices: list[int] = Field(default_factory=list)
    eval_indices: list[int] = Field(default_factory=list)


class TrainingRecord(_Record):
    steps: int = 0
    seconds: float = 0.0
    tokens: int = 0
    tokens_per_second: float = 0.0
    steady_tokens_per_second: Optional[float] = None
    peak_gpu_gib: Optional[float] = None
    interrupted: bool = False
    batching: str = ""


class LossRecord(_Record):
    first_train: Optional[float] = None
    final_train: Optional[float] = None
    history: list[tuple[int, float]] = Field(default_factory=list)  # (step, loss)


class Manifest(_Record):
    format: int = FORMAT
    name: str = ""
    created: str = ""
    medchat_version: str = ""
    recipe: str = ""
    command: str = ""  # the `medchat finetune …` command line that made it
    base_model: BaseModelRecord = Field(default_factory=BaseModelRecord)
    prompt_style: str = ""
    system_prompt: str = ""
    chat_template_hash: str = ""
    dataset: DatasetRecord = Field(default_factory=DatasetRecord)
    lengths: dict[str, Any] = Field(default_factory=dict)
    render_check: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)  # every setting of the run, as `medchat config show`
    training: TrainingRecord = Field(default_factory=TrainingRecord)
    losses: LossRecord = Field(default_factory=LossRecord)
    versions: dict[str, str] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)
    duration_seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)
    tensorboard_logs: str = ""
    eval: Optional[dict[str, Any]] = None  # the report card's summary (report.json has it all)
    pushed_to: list[str] = Field(default_factory=list)  # hub repos the adapter went to

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("base_model"), str):
            data = {**data, "base_model": {"id": data["base_model"]}}  # the earliest manifests
        return data

    def finetune_setting(self, key: str, default: Any = None) -> Any:
        """One `[finetune]` setting the adapter was trained with."""
        section = self.settings.get("finetune")
        return section.get(key, default) if isinstance(section, dict) else default

    def to_json(self) -> str:
        data = self.model_dump(mode="python")
        for optional in ("tensorboard_logs", "eval", "pushed_to"):  # written only when there is one
            if not data[optional]:
                data.pop(optional)
        return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def read_manifest(adapter_dir: Path) -> Manifest | None:
    """The adapter's manifest; None when it has none (a PEFT folder from elsewhere)."""
    path = adapter_dir / FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{path} is not a manifest: expected a JSON object")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise AdapterError(f"{path}: key '{where}': {err['msg']}") from exc
    if manifest.format > FORMAT:
        raise AdapterError(f"{path} has manifest format {manifest.format}, newer than this medchat reads "
                           f"({FORMAT}); upgrade medchat")
    return manifest


def write_manifest(adapter_dir: Path, manifest: Manifest) -> None:
    atomic_write_text(adapter_dir / FILENAME, manifest.to_json())
