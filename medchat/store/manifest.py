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
    """The rows an adapter learned from: enough to read them again (``medchat.finetune.provenance``
    finds the rows closest to a reply) and to tell whether the data file changed since."""

    id: str = ""  # "sample", the data file's absolute path, or a hub id
    kind: str = ""  # "sample" | "file" | "hub"
    subset: str = ""
    split: str = ""
    revision: str = ""  # "sha256:…" of the file (sample or local), or the hub data set's fingerprint
    shape: str = ""
    rows_total: int = 0
    rows_used: int = 0  # rows trained on, after long rows were dropped
    select: str = ""
    train_indices: list[int] = Field(default_factory=list)  # 0-based rows of the file trained on
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
    gpus: int = 1  # ranks of a data-parallel launch (one process per GPU)
    effective_batch: int = 0  # rows per optimizer step: batch_size x grad_accum x gpus
    peak_gpu_gib_per_rank: Optional[list[float]] = None
    first_step_seconds: Optional[float] = None  # compilation and warm-up
    phases: dict[str, float] = Field(default_factory=dict)  # wall seconds: plan, load, data, trainer, first_step, training, save, ...


class LossRecord(_Record):
    first_train: Optional[float] = None
    final_train: Optional[float] = None
    history: list[tuple[int, float]] = Field(default_factory=list)  # (step, loss)


class ParityRecord(_Record):
    """What the parity gate measured on an exported model, against the adapter on its base (float32)."""

    passed: bool = False
    prompts: int = 0
    new_tokens: int = 0  # greedy tokens per prompt
    same_tokens: bool = False  # every prompt's greedy reply is token for token the adapter's
    token_agreement: float = 0.0  # teacher-forced: share of the adapter's greedy tokens the export puts first
    free_running_agreement: float = 0.0  # the export's own greedy tokens against the adapter's, by position
    near_ties: int = 0  # disagreements where the adapter's own top two were within the tie margin
    effect_kept: float = 0.0  # share of the adapter's logit change (with vs without it) the export keeps
    effect_cosine: float = 0.0
    rule: str = ""  # the pass rule applied, in words


class ExportRecord(_Record):
    """One export of the adapter (``medchat export``) and its parity figures."""

    kind: str = ""  # "gguf" or "merged"
    path: str = ""
    quant: str = ""  # GGUF tensor type (f16, q8_0, ...); the dtype for a merged folder
    created: str = ""
    medchat_version: str = ""
    base_model: str = ""
    prompt_style: str = ""
    parity: ParityRecord = Field(default_factory=ParityRecord)


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
    # `medchat eval` results, oldest first: benchmark, its file hash, rows, settings, versions, figures
    evaluations: list[dict[str, Any]] = Field(default_factory=list)
    pushed_to: list[str] = Field(default_factory=list)  # hub repos the adapter went to
    exports: list[ExportRecord] = Field(default_factory=list)  # `medchat export` results, parity figures included

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
        for optional in ("tensorboard_logs", "eval", "evaluations", "pushed_to", "exports"):  # written only when there is one
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
