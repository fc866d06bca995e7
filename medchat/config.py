"""Typed, frozen settings.

Precedence, lowest first: the defaults below < the TOML file (``medchat config path``) < ``MEDCHAT_*``
environment variables < command-line flags. Every field carries its documentation in
``metadata["doc"]``; ``medchat config init`` writes those docs as comments.

Environment variables name the key path in upper case: ``model`` -> ``MEDCHAT_MODEL``,
``generation.temperature`` -> ``MEDCHAT_GENERATION_TEMPERATURE``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from medchat import paths
from medchat.errors import ConfigError

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful medical expert with advanced knowledge in clinical reasoning, diagnostics and "
    "treatment planning. Think through the question step by step, then give a concise, accurate answer."
)


def doc(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with its documentation attached."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"doc": text}, **kw)


# Largest sampling seed: what torch and OpenAI-compatible servers take (a signed 64-bit integer).
MAX_SEED = 2**63 - 1
# Largest training seed: transformers' set_seed also seeds NumPy, which takes 32 bits.
MAX_TRAINING_SEED = 2**32 - 1

# pydantic's settings for the classes below (read when loading): unknown keys and nan/inf are errors.
_STRICT = {"extra": "forbid", "allow_inf_nan": False}


@dataclass(frozen=True)
class GenerationSettings:
    """How the model samples its reply."""

    __pydantic_config__ = _STRICT

    temperature: float = doc("Sampling temperature; 0 means greedy decoding.", 0.6)
    top_p: float = doc("Nucleus sampling: keep the smallest token set whose probability reaches this.", 0.95)
    top_k: int = doc("Keep only the k most likely tokens; 0 turns the filter off.", 0)
    max_new_tokens: int = doc("Most tokens one reply may use, reasoning included.", 1200)
    repetition_penalty: float = doc(
        "Above 1.0 discourages repeats. Keep 1.0 for reasoning models: it also penalises the "
        "tokens of </think>.",
        1.0,
    )
    seed: int = doc("Random seed for sampling; -1 picks a fresh one each time.", -1)
    think_budget: int = doc(
        "Reasoning tokens per reply before medchat writes </think> itself and the model answers "
        "(enforced while decoding on local models); 0 = answer without reasoning, -1 = no limit.",
        -1,
    )

    def validate(self) -> None:
        if not -1 <= self.seed <= MAX_SEED:  # checked here, not after the model has loaded
            raise ConfigError(f"generation.seed must be -1 (a fresh seed) or 0 to {MAX_SEED}, got {self.seed}")
        if self.temperature < 0:
            raise ConfigError(f"generation.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"generation.top_k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.think_budget < -1:
            raise ConfigError(f"generation.think_budget must be >= -1 (-1 = no limit), got {self.think_budget}")
        if self.repetition_penalty <= 0:
            raise ConfigError(
                f"generation.repetition_penalty must be > 0, got {self.repetition_penalty}"
            )


DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FinetuneSettings:
    """`medchat finetune`: data, LoRA and trainer settings. Recipes (`medchat recipes`) set these."""

    __pydantic_config__ = _STRICT

    dataset: str = doc(
        "Training data: a hub data set id, a local .json/.jsonl/.csv/.parquet file, or 'sample' "
        "(the small medical chain-of-thought set bundled with medchat).",
        "FreedomIntelligence/medical-o1-reasoning-SFT",
    )
    subset: str = doc("Hub data set configuration (medical-o1: 'en' or 'zh'). Empty: the default one.", "en")
    split: str = doc("Hub data set split.", "train")
    columns: str = doc(
        "Map other column names: 'question=COL,reasoning=COL,answer=COL'. Empty: detect the shape "
        "(medical-o1, Alpaca, chat messages / ShareGPT).",
        "",
    )
    prompt_style: str = doc(
        "'auto' (the model's own), 'chat_template', or a seed style: 'r1-medical', "
        "'task-query-answer', 'medical-qa'. Chat uses the same one at inference.",
        "auto",
    )
    samples: int = doc("Train on this many rows (0 = all).", 0)
    select: Literal["random", "first"] = doc(
        "How `samples` picks rows: a seeded random subset, or the first N (the seeds' behaviour).", "random"
    )
    fraction: float = doc("Train on this share of the rows instead (e.g. 0.1); 0 = use `samples`.", 0.0)
    eval_rows: int = doc("Held-out rows (never trained on) for the before/after report card; 0 = no eval.", 4)
    eval_max_new_tokens: int = doc("Token budget per reply in the report-card evaluation.", 256)
    max_seq_length: int = doc("Longest training example in tokens.", 2048)
    on_long: Literal["truncate", "drop"] = doc("What to do with rows longer than `max_seq_length`.", "truncate")
    lora_r: int = doc("LoRA rank.", 16)
    lora_alpha: int = doc("LoRA alpha (scaling numerator).", 16)
    lora_dropout: float = doc("LoRA dropout.", 0.0)
    use_rslora: bool = doc("Rank-stabilised LoRA (scales by alpha/sqrt(r)).", False)
    target_modules: tuple[str, ...] = doc("Layers that get LoRA weights.", DEFAULT_TARGET_MODULES)
    adapter_dtype: Literal["float32", "float16", "bfloat16"] = doc(
        "Precision of the saved LoRA weights: float32 as trained, or a 16-bit type for a file half the "
        "size (loading casts them back to the model's dtype).", "float32"
    )
    batch_size: int = doc(
        "Rows per micro-batch; with packed batches, micro-batches of batch_size x max_seq_length tokens "
        "filled with whole rows.", 2
    )
    grad_accum: int = doc("Micro-batches per optimizer step (gradient accumulation).", 2)
    max_steps: int = doc("Optimizer steps to train; 0 = train for `epochs` instead.", 60)
    epochs: float = doc("Passes over the data when `max_steps` is 0.", 1.0)
    learning_rate: float = doc(
        "Peak learning rate; 0 = auto: 2e-4 (the seed notebooks' rate), or 1e-3 for models under 1B "
        "parameters, which barely move at 2e-4 in a short run.",
        0.0,
    )
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = doc(
        "Learning-rate schedule.", "linear"
    )
    warmup_steps: int = doc("Linear warm-up steps.", 5)
    warmup_ratio: float = doc("Warm-up as a share of all steps (used instead of `warmup_steps` when > 0).", 0.0)
    weight_decay: float = doc("AdamW weight decay.", 0.01)
    optimizer: Literal["auto", "adamw_8bit", "adamw_torch", "adamw_torch_fused", "sgd"] = doc(
        "'auto' = 8-bit AdamW on CUDA, AdamW on CPU.", "auto"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = doc(
        "Training precision; 'auto' = bf16 where supported, else fp16 on GPU, bf16 autocast on CPU.", "auto"
    )
    packing: Literal["auto", "packed", "padding_free", "off"] = doc(
        "How rows become batches on CUDA: 'packed' fills each micro-batch with whole rows up to batch_size "
        "x max_seq_length tokens (attention stays within each row), 'padding_free' concatenates a batch's "
        "rows without padding, 'off' pads. 'auto' = packed with Unsloth, else off (padded, on CPU).",
        "auto",
    )
    gradient_checkpointing: Literal["auto", "unsloth", "on", "off"] = doc(
        "'auto' = Unsloth's on CUDA, off on CPU (memory is not the limit there, speed is).", "auto"
    )
    seed: int = doc("Seed for row selection, LoRA init and data order.", 3407)
    logging_steps: int = doc("Log loss every N steps (to --report-to).", 1)
    save_steps: int = doc("Save a resumable checkpoint every N steps; 0 = only when interrupted.", 50)
    report_to: Literal["none", "wandb", "tensorboard"] = doc("Where training metrics go besides the terminal.", "none")
    merge: bool = doc("Also save a merged 16-bit model beside the adapter.", False)
    push_to_hub: str = doc("Push the adapter (and merged model) to this hub repo. Empty: do not push.", "")

    def validate(self) -> None:
        checks = [
            (self.samples >= 0, "samples must be >= 0"),
            (0 <= self.fraction <= 1, "fraction must be between 0 and 1"),
            (self.eval_rows >= 0, "eval_rows must be >= 0"),
            (self.eval_max_new_tokens >= 1, "eval_max_new_tokens must be >= 1"),
            (self.max_seq_length >= 16, "max_seq_length must be >= 16"),
            (self.lora_r >= 1, "lora_r must be >= 1"),
            (self.lora_alpha >= 1, "lora_alpha must be >= 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (bool(self.target_modules), "target_modules must not be empty"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.max_steps >= 0, "max_steps must be >= 0"),
            (self.max_steps > 0 or self.epochs > 0, "set max_steps or epochs above 0"),
            (self.learning_rate >= 0, "learning_rate must be >= 0 (0 = auto)"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.logging_steps >= 1, "logging_steps must be >= 1"),
            (self.save_steps >= 0, "save_steps must be >= 0"),
            (0 <= self.seed <= MAX_TRAINING_SEED, f"seed must be between 0 and {MAX_TRAINING_SEED}, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"finetune.{message}")


@dataclass(frozen=True)
class Settings:
    """Everything medchat reads from config. Top-level keys configure the chat and its model."""

    __pydantic_config__ = _STRICT

    model: str = doc(
        "Base model: 'auto', a catalogue name (see `medchat models`), a hub id, a local folder or "
        "a .gguf file.",
        "auto",
    )
    adapter: str = doc("LoRA adapter to load: a name from `medchat adapters list` or a folder. Empty: none.", "")
    backend: Literal["auto", "unsloth", "hf"] = doc(
        "'unsloth' (CUDA + unsloth installed), 'hf' (transformers + peft, any device) or 'auto'.", "auto"
    )
    decoder: Literal["auto", "fast", "generate"] = doc(
        "Decode loop of local hf models: 'fast' = medchat's own (fused weights, static KV cache; on CUDA "
        "int4 weights and CUDA graphs; Llama/Mistral/Qwen2/Qwen3 models), 'generate' = transformers' "
        "generate(), 'auto' = fast where it applies. The 'unsloth' backend always uses generate().",
        "auto",
    )
    device: Literal["auto", "cpu", "cuda"] = doc("Where the model runs.", "auto")
    quantize: Literal["auto", "4bit", "none"] = doc(
        "'4bit' loads weights with bitsandbytes NF4; 'auto' = 4bit on CUDA, none on CPU. medchat's decode loop "
        "then runs int4 weights on CUDA and int8 on the CPU; 'none' keeps 16-bit weights there too.", "auto"
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = doc(
        "Compute dtype; 'auto' = bfloat16 where supported, else float16 (GPU) or float32.", "auto"
    )
    endpoint: str = doc(
        "Base URL of an OpenAI-compatible server to chat with instead of a local model "
        "(e.g. http://127.0.0.1:8000/v1). Empty: local model.",
        "",
    )
    api_key: str = doc("API key sent to `endpoint`, or required by `medchat serve`. Empty: none.", "")
    system_prompt: str = doc("System prompt for every conversation.", DEFAULT_SYSTEM_PROMPT)
    history: bool = doc("Save conversations to the local history database (file mode 0600).", True)
    offline: bool = doc("Never contact the model hub; use cached models only.", False)
    generation: GenerationSettings = field(
        default_factory=GenerationSettings, metadata={"doc": "Sampling settings."}
    )
    finetune: FinetuneSettings = field(
        default_factory=FinetuneSettings, metadata={"doc": "`medchat finetune` settings."}
    )

    def validate(self) -> "Settings":
        if not self.model.strip():  # an empty value would be read as the current folder
            raise ConfigError("model is empty: give 'auto', a catalogue name (`medchat models`), a hub id, "
                              "a folder or a .gguf file")
        self.generation.validate()
        self.finetune.validate()
        return self


# ---------------------------------------------------------------------------------------------
# Loading. pydantic checks and converts values, tomlkit writes TOML; both are imported on first use,
# so `medchat --help` loads neither.

def _tomllib():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised only on 3.10
        import tomli as tomllib
    return tomllib


@functools.cache
def _adapter(cls: type) -> Any:
    import pydantic

    return pydantic.TypeAdapter(cls)


def merge(cls: type, base: Any, values: Mapping[str, Any], source: str, from_text: bool = False) -> Any:
    """Return ``base`` (an instance of dataclass ``cls``) with ``values`` applied, strictly checked.

    ``values`` is nested like the TOML file. ``source`` names the file or origin in error messages.
    A file's values must have the setting's TOML type; text (``from_text``: MEDCHAT_* variables and
    flags) is converted: "0.3", "yes", "q_proj,v_proj".
    """
    import pydantic

    data = _overlay(dataclasses.asdict(base), values, from_text)
    try:
        if from_text:
            return _adapter(cls).validate_python(data)
        # Strict JSON typing is TOML's: no "yes" for a bool or 1.5 for an int; arrays become tuples.
        # TOML dates and times, which no setting takes, become null and fail as the wrong type.
        return _adapter(cls).validate_json(json.dumps(data, default=lambda _: None), strict=True)
    except pydantic.ValidationError as exc:
        raise _config_error(exc.errors()[0], cls, values, source) from None


def _overlay(base: dict[str, Any], values: Mapping[str, Any], from_text: bool) -> dict[str, Any]:
    """``values`` laid over ``base`` (the current settings as a dict), table by table."""
    out = dict(base)
    for key, value in values.items():
        old = base.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            value = _overlay(old, value, from_text)
        elif isinstance(old, tuple) and from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[key] = value
    return out


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             tuple[str, ...]: "a list of strings"}


def _config_error(error: Mapping[str, Any], cls: type, values: Mapping[str, Any], source: str) -> ConfigError:
    """pydantic's first error as one line naming the source, the table, the key and the value given."""
    *tables, key = [part for part in error["loc"] if isinstance(part, str)]  # not a list item's index
    for table in tables:
        cls, values, source = typing.get_type_hints(cls)[table], values[table], f"{source} [{table}]"
    if error["type"] == "unexpected_keyword_argument":
        names = [f.name for f in dataclasses.fields(cls)]
        return ConfigError(f"{source}: unknown key '{key}'{_nearest(key, names)}")
    hint, value, where = typing.get_type_hints(cls)[key], values[key], f"{source}: key '{key}'"
    if dataclasses.is_dataclass(hint):
        return ConfigError(f"{source}: '{key}' must be a table ([{key}])")
    if typing.get_origin(hint) is Literal:
        return ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, typing.get_args(hint)))}")
    if error["type"] == "finite_number":
        return ConfigError(f"{where}: expected a finite number, got {value!r}")
    return ConfigError(f"{where}: expected {_EXPECTED[hint]}, got {value!r}")


def _nearest(key: str, options: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(options))}"


def read_toml(path: Path, required: bool = False) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; a missing file is empty, unless ``required``."""
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block the read forever
            raise ConfigError(f"{path}: not a regular file")
        with open(path, "rb") as fh:
            return _tomllib().load(fh)
    except (FileNotFoundError, NotADirectoryError):  # no file (a file where a folder should be: none either)
        if required:
            raise ConfigError(f"the config file {path} does not exist (MEDCHAT_CONFIG names it)") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except _tomllib().TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets the decode error through
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {exc.start})") from exc


# MEDCHAT_* variables that are not settings (the last two: a fine-tune's hang diagnostics,
# medchat/finetune/hangwatch.py and distributed.py).
OTHER_VARIABLES = ("MEDCHAT_HOME", "MEDCHAT_CONFIG", "MEDCHAT_DEBUG", "MEDCHAT_HANG_SECONDS", "MEDCHAT_DIST_TIMEOUT")


def setting_variables(cls: type | None = None, prefix: str = "MEDCHAT_") -> list[str]:
    """Every ``MEDCHAT_*`` name a setting answers to (``MEDCHAT_GENERATION_TEMPERATURE``, ...)."""
    names = []
    for name, hint in typing.get_type_hints(cls or Settings).items():
        var = f"{prefix}{name.upper()}"
        names += setting_variables(hint, var + "_") if dataclasses.is_dataclass(hint) else [var]
    return names


def check_variable_names(env: Mapping[str, str]) -> None:
    """A ``MEDCHAT_*`` variable that names no setting is a typo, not something to ignore."""
    valid = setting_variables() + list(OTHER_VARIABLES)
    for name in sorted(env):
        if name.startswith("MEDCHAT_") and name not in valid:
            import difflib

            # Compared without the common prefix, which would make every name look alike.
            match = difflib.get_close_matches(name.removeprefix("MEDCHAT_"), [v.removeprefix("MEDCHAT_") for v in valid],
                                              n=1, cutoff=0.6)
            hint = (f"did you mean MEDCHAT_{match[0]}?" if match else
                    "a setting's variable is MEDCHAT_ + its key in upper case, e.g. MEDCHAT_GENERATION_TOP_P")
            raise ConfigError(f"environment: unknown variable {name}; {hint}")


def env_values(cls: type, env: Mapping[str, str], prefix: str = "MEDCHAT_") -> dict[str, Any]:
    """Collect ``MEDCHAT_*`` variables for the fields of ``cls`` (nested tables included)."""
    out: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        var = f"{prefix}{name.upper()}"
        if dataclasses.is_dataclass(hint):
            nested = env_values(hint, env, var + "_")
            if nested:
                out[name] = nested
        elif var in env:
            out[name] = env[var]
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"generation.temperature": 0.2}`` -> ``{"generation": {"temperature": 0.2}}``; None values skipped."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < file < MEDCHAT_* env < flags (dotted keys, None = not given)."""
    env = os.environ if env is None else env
    check_variable_names(env)
    named = config_path or (Path(env["MEDCHAT_CONFIG"]).expanduser() if env.get("MEDCHAT_CONFIG") else None)
    path = named or paths.config_file()
    stages: list[tuple[str, Settings]] = []
    settings = Settings()
    settings = merge(Settings, settings, read_toml(path, required=named is not None), str(path))
    stages.append((str(path), settings))
    settings = merge(Settings, settings, env_values(Settings, env), "environment", from_text=True)
    stages.append(("environment", settings))
    settings = merge(Settings, settings, nest(flags or {}), "command line", from_text=True)
    stages.append(("command line", settings))
    try:
        return settings.validate()
    except ConfigError as exc:
        # Name where the bad value came from: the first stage whose result fails the same way.
        for source, staged in stages:
            try:
                staged.validate()
            except ConfigError as at_stage:
                if str(at_stage) == str(exc):
                    raise ConfigError(f"{source}: {exc}") from None
        raise


def render_toml(settings: Any, commented: bool = False) -> str:
    """The settings as TOML; with ``commented`` every key is commented out under its doc line."""
    import tomlkit

    def table(obj: Any, into: Any) -> Any:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                into.add(f.name, table(value, tomlkit.table()))
            elif commented:
                into.add(tomlkit.comment(f.metadata["doc"]))
                into.add(tomlkit.comment(f"{f.name} = {tomlkit.item(value).as_string()}"))
                into.add(tomlkit.nl())
            else:
                into.add(f.name, value)
        return into

    return tomlkit.dumps(table(settings, tomlkit.document())).rstrip("\n") + "\n"
