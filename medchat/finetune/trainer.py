"""`medchat finetune` as explicit phases: plan → load → build → train → save → (eval) → cleanup.

* plan: everything that can fail without a model (data, rows, name, hub token, logging backend).
* load: the base model, through Unsloth on CUDA (when installed) or transformers + peft.
* build: format rows exactly as chat renders prompts, check one row both ways, tokenize.
* train: TRL SFTTrainer on pre-tokenized rows (loss on the completion only), live progress on stderr,
  checkpoints every N steps, Ctrl+C stops after the current step and saves a resumable checkpoint.
* save: adapter + manifest into a temporary folder of the store, report card, then one rename.

Heavy libraries are imported inside the phases; on CUDA, Unsloth is imported before transformers/TRL.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medchat.store import adapters as store
from medchat import paths
from medchat.config import Settings, merge
from medchat.errors import DataError, HardwareError, Interrupted, MedchatError, UsageError, out_of_memory
from medchat.finetune import data as D
from medchat.finetune import packing
from medchat.store.manifest import Manifest, write_manifest

Say = Callable[[str], None]


# -------------------------------------------------------------------------------------------------
# Plan

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


def make_plan(settings: Settings, *, name: str = "", recipe: str = "", say: Say) -> Plan:
    """Validate everything that needs no model. Raises before any weights are loaded."""
    ft = settings.finetune
    check_report_to(ft.report_to)
    check_push(ft.push_to_hub, settings.offline)
    if name:
        store.validate_name(name)
        if (store.store_dir() / name).exists():
            raise UsageError(f"an adapter named '{name}' already exists (choose another --name, or `medchat adapters rm {name}`)")
        if (runs_dir() / name).exists():
            raise UsageError(f"an unfinished run named '{name}' exists: continue it with `medchat finetune --resume {name}`")
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
    from medchat.models.loading import pick_backend, pick_device
    from medchat.chatformat.prompt import get_style
    from medchat.errors import ModelUnavailable
    from medchat.models.catalog import resolve_model

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


# -------------------------------------------------------------------------------------------------
# Load + build

def load_tokenizer(plan: Plan) -> Any:
    from transformers import AutoTokenizer

    from medchat.models.loading import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(plan.resolved.source, local_files_only=plan.resolved.local_only)
    ensure_pad_token(tok)
    return tok


def load_model(plan: Plan, say: Say) -> tuple[Any, Any]:
    s, ft = plan.settings, plan.settings.finetune
    say(f"loading {plan.resolved.name} on {plan.device} ({plan.backend})")
    if plan.backend == "unsloth":
        from medchat.models.loading import load_unsloth_model

        # FastModel, not FastLanguageModel: its stock transformers layers run as one compiled region each,
        # packed rows included; FastLanguageModel's own Llama layers take packed rows eagerly, which left
        # an H100 waiting on Python (0.6-0.8x the raw loop against 0.9-1.0x, benchmarks/RESULTS.md).
        model, tok = load_unsloth_model(plan.resolved, dtype=s.dtype, quantize=s.quantize,
                                        max_seq_length=micro_batch(plan, batching(plan))[1], generic=True)
        from unsloth import FastModel

        gc_mode = {"auto": "unsloth", "unsloth": "unsloth", "on": True, "off": False}[ft.gradient_checkpointing]
        model = FastModel.get_peft_model(
            model, r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout, bias="none",
            target_modules=list(ft.target_modules), use_gradient_checkpointing=gc_mode,
            random_state=ft.seed, use_rslora=ft.use_rslora,
        )
        return model, tok
    from medchat.models.loading import load_hf_model

    # On CPU, float32 weights under bf16 autocast train several times faster than bf16 weights.
    dtype = "float32" if plan.device == "cpu" and s.dtype == "auto" else s.dtype
    model, tok = load_hf_model(plan.resolved, device=plan.device, dtype=dtype, quantize=s.quantize, for_training=True)
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    torch.manual_seed(ft.seed)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing(plan))
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in ft.target_modules if m not in present]
    if len(missing) == len(ft.target_modules):
        raise UsageError(f"none of the target modules {list(ft.target_modules)} exist in {plan.resolved.name}")
    config = LoraConfig(
        r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout, bias="none", task_type="CAUSAL_LM",
        target_modules=[m for m in ft.target_modules if m in present], use_rslora=ft.use_rslora,
    )
    return get_peft_model(model, config), tok


def gradient_checkpointing(plan: Plan) -> bool:
    mode = plan.ft.gradient_checkpointing
    if mode == "auto":
        return plan.device == "cuda"  # on CPU memory is not the limit; checkpointing costs ~40 % speed
    return mode in ("on", "unsloth")


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids exactly as chat encodes its prompts (the local backend adds no special tokens)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Built:
    rows: list[dict[str, list[int]]]  # input_ids, completion_mask (1 = trained)
    check: dict[str, Any]
    lengths: dict[str, Any]


def build_rows(plan: Plan, tokenizer: Any, say: Say) -> Built:
    """Format → check → tokenize → fit to max_seq_length. Loss only on completion tokens."""
    ft = plan.ft
    examples = plan.train_examples()
    system = plan.settings.system_prompt
    check = D.render_check(tokenizer, plan.style, system, examples[0], ft.max_seq_length, encode=lambda t: encode(tokenizer, t))
    formatted = D.format_examples(tokenizer, plan.style, system, examples)
    rows: list[dict[str, list[int]]] = []
    totals, completions = [], []
    truncated = dropped = 0
    for f in formatted:
        prompt_ids = encode(tokenizer, f.prompt)
        ids = encode(tokenizer, f.prompt + f.completion)
        start = 0
        while start < min(len(prompt_ids), len(ids)) and prompt_ids[start] == ids[start]:
            start += 1
        totals.append(len(ids))
        completions.append(len(ids) - start)
        if len(ids) > ft.max_seq_length:
            if ft.on_long == "drop" or start >= ft.max_seq_length:
                dropped += 1
                continue
            truncated += 1
            ids = ids[: ft.max_seq_length]
        # No "labels" column: TRL (and Unsloth, which then keeps its padding-free collator) build the
        # labels from completion_mask, masking the prompt.
        rows.append({"input_ids": ids, "completion_mask": [0] * start + [1] * (len(ids) - start)})
    if not rows:
        raise DataError(f"every row is longer than --max-seq-length {ft.max_seq_length}; raise it or use --on-long truncate")
    lengths = {"tokens": D.distribution(totals), "completion_tokens": D.distribution(completions),
               "truncated": truncated, "dropped": dropped, "rows": len(rows)}
    if truncated or dropped:
        say(f"{truncated} rows truncated and {dropped} dropped at --max-seq-length {ft.max_seq_length}")
    return Built(rows, check, lengths)


def describe_lengths(lengths: dict[str, Any]) -> str:
    t, c = lengths["tokens"], lengths["completion_tokens"]
    return (f"tokens per row: min {t['min']}, median {t['p50']}, p90 {t['p90']}, max {t['max']} "
            f"(completion: median {c['p50']}, max {c['max']}); truncated {lengths['truncated']}, dropped {lengths['dropped']}")


# -------------------------------------------------------------------------------------------------
# Train

class StopFlag:
    """First Ctrl+C asks the trainer to stop after the current step and save; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "StopFlag":
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            sys.stderr.write("\nmedchat: stopping after this step and saving a checkpoint (Ctrl+C again to abort)\n")

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread (tests): no handler, Ctrl+C behaves as usual
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def make_callback(plan: Plan, stop: StopFlag, stream=None):
    """A TrainerCallback that draws the progress line and honours the stop flag."""
    from transformers import TrainerCallback

    out = stream or sys.stderr
    tty = out.isatty()

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.step0 = 0
            self.tokens0 = 0
            self.loss: float | None = None
            self.lr: float | None = None
            self.losses: list[tuple[int, float]] = []
            self.tokens = 0
            self.seconds = 0.0
            self.marks: list[tuple[float, int]] = []  # (seconds, tokens) at the end of each step

        def steady_rate(self) -> float | None:
            """Median tokens/s of the steps after the first two (which include compilation and warm-up)."""
            steps = [(t1 - t0, n1 - n0) for (t0, n0), (t1, n1) in zip(self.marks, self.marks[1:])][2:]
            rates = sorted(n / dt for dt, n in steps if dt > 0)
            return round(rates[len(rates) // 2], 1) if rates else None

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            self.step0 = state.global_step
            self.tokens0 = state.num_input_tokens_seen or 0

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
                self.losses.append((state.global_step, round(self.loss, 4)))
            if "learning_rate" in logs:
                self.lr = float(logs["learning_rate"])
            if "loss" in logs:
                self.draw(args, state)

        def on_step_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.t0
            self.tokens = (state.num_input_tokens_seen or 0) - self.tokens0
            self.marks.append((self.seconds, self.tokens))
            if stop.requested:
                control.should_save = True
                control.should_training_stop = True
            if state.global_step % max(args.logging_steps, 1):
                self.draw(args, state)  # otherwise on_log draws it, with this step's loss
            return control

        def draw(self, args, state) -> None:
            done = state.global_step - self.step0
            total = state.max_steps
            per_step = self.seconds / max(done, 1)
            eta = per_step * max(total - state.global_step, 0)
            width = 20
            filled = int(width * state.global_step / max(total, 1))
            bar = "█" * filled + "░" * (width - filled)
            loss = f"{self.loss:.3f}" if self.loss is not None else "…"
            lr = f"{self.lr:.1e}" if self.lr is not None else "…"
            line = (f"step {state.global_step}/{total} {bar} loss {loss} lr {lr} "
                    f"{self.tokens / max(self.seconds, 1e-9):,.0f} tok/s ETA {_clock(eta)}")
            if tty:
                out.write("\r\x1b[2K" + line)
            elif state.global_step % max(args.logging_steps, 1) == 0 or state.global_step == total:
                out.write(line + "\n")
            out.flush()

        def on_train_end(self, args, state, control, **kw):
            if tty:
                out.write("\n")
                out.flush()

    return Progress()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def trainer_args(plan: Plan, n_rows: int, n_tokens: int = 0):
    from trl import SFTConfig

    ft = plan.ft
    cuda = plan.device == "cuda"
    kwargs: dict[str, Any] = {}
    if cuda:
        import torch

        bf16_ok = torch.cuda.is_bf16_supported()
        precision = ft.precision if ft.precision != "auto" else ("bf16" if bf16_ok else "fp16")
        if precision == "bf16" and not bf16_ok:
            raise HardwareError("this GPU does not support bf16 training; use --precision fp16")
        kwargs.update(bf16=precision == "bf16", fp16=precision == "fp16")
    else:
        if ft.precision == "fp16":
            raise HardwareError("fp16 training needs a GPU; use --precision bf16 or fp32 on CPU")
        # use_cpu keeps bf16 autocast working on CPU (TRL's bf16 default otherwise refuses to start).
        kwargs.update(use_cpu=True, bf16=ft.precision in ("auto", "bf16"), fp16=False)
    optim = ft.optimizer
    if optim == "auto":
        optim = "adamw_8bit" if cuda else "adamw_torch"
    elif optim == "adamw_8bit" and not cuda:
        plan.notes.append("8-bit AdamW needs CUDA; using adamw_torch on CPU")
        optim = "adamw_torch"
    if plan.backend != "unsloth":
        kwargs["gradient_checkpointing"] = gradient_checkpointing(plan)
        if kwargs["gradient_checkpointing"]:
            kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    else:
        kwargs["gradient_checkpointing"] = False  # Unsloth's own, set on the model by get_peft_model
    mode = batching(plan)
    if mode != plan.ft.packing and plan.ft.packing != "auto":
        plan.notes.append(f"{plan.ft.packing.replace('_', '-')} batches need CUDA attention kernels; using padded batches on CPU")
    batch, length = micro_batch(plan, mode)
    if mode == "packed":
        kwargs.update(packing=True, packing_strategy="bfd")
        if n_tokens:
            n_rows = math.ceil(n_tokens / length)  # a micro-batch is one packed sequence
    elif mode == "padding_free":
        kwargs["padding_free"] = True
    # A warm-up longer than a tenth of the run would keep a short run (a smoke test, a demo) near lr 0.
    steps = ft.max_steps or math.ceil(n_rows / (batch * ft.grad_accum) * ft.epochs)
    warmup = min(ft.warmup_steps, steps // 10)
    if warmup < ft.warmup_steps and ft.warmup_ratio == 0:
        plan.notes.append(f"warm-up shortened to {warmup} steps (a tenth of this {steps}-step run)")
    return SFTConfig(
        output_dir=str(plan.run_dir),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=ft.grad_accum,
        max_steps=ft.max_steps if ft.max_steps > 0 else -1,
        num_train_epochs=ft.epochs,
        learning_rate=plan.learning_rate or ft.learning_rate or 2e-4,
        lr_scheduler_type=ft.lr_scheduler,
        warmup_steps=warmup if ft.warmup_ratio == 0 else 0,
        **({"warmup_ratio": ft.warmup_ratio} if ft.warmup_ratio > 0 else {}),
        weight_decay=ft.weight_decay,
        optim=optim,
        seed=ft.seed,
        data_seed=ft.seed,
        logging_steps=ft.logging_steps,
        save_strategy="steps" if ft.save_steps > 0 else "no",
        save_steps=ft.save_steps if ft.save_steps > 0 else 500,
        save_total_limit=2,
        report_to=[] if ft.report_to == "none" else [ft.report_to],
        run_name=plan.name,
        max_length=length,
        completion_only_loss=True,
        # Concatenated batches hold no padding, and counting "non-padding" there would skip every real
        # token that shares the pad id (often EOS): count them all.
        include_num_input_tokens_seen="non_padding" if mode == "off" else "all",
        # Trainer's NaN/inf test reads each micro-batch's loss back to the CPU, and the GPU idles while the
        # next work (first the optimizer's many small launches) is queued; a NaN loss is logged as nan instead.
        # With host_counting: +3-4 % tokens/s on the H100 (benchmarks/RESULTS.md, fifth round).
        logging_nan_inf_filter=False,
        disable_tqdm=True,
        dataset_num_proc=None,
        remove_unused_columns=False,
        **kwargs,
    )


def batching(plan: Plan) -> str:
    """How rows become batches: 'packed', 'padding_free' or 'off' (padded).

    Both concatenating modes rely on variable-length attention kernels (Unsloth's, FlashAttention's) to
    keep rows apart, so they need CUDA. 'packed' fills each micro-batch with whole rows up to
    batch_size x max_seq_length tokens (as full as they can be, see packing.py), so every step carries about the same number of
    tokens and the GPU is not left waiting on Python between small batches; 'auto' picks it with
    Unsloth.
    """
    want = plan.ft.packing
    if want == "auto":
        return "packed" if plan.device == "cuda" and plan.backend == "unsloth" else "off"
    return want if plan.device == "cuda" else "off"


def micro_batch(plan: Plan, mode: str) -> tuple[int, int]:
    """(sequences per micro-batch, their max length) for the trainer.

    Packed: one sequence of batch_size x max_seq_length tokens, filled with whole rows. That
    is fuller than batch_size separate sequences (rows of ~1,000 tokens leave a 2,048 one partly
    empty) and holds the same number of tokens, so it needs the same memory.
    """
    ft = plan.ft
    if mode == "packed":
        return 1, ft.batch_size * ft.max_seq_length
    return ft.batch_size, ft.max_seq_length


def tensorboard_dir(plan: Plan) -> str:
    """Where TensorBoard logs go: transformers' TENSORBOARD_LOGGING_DIR if the user set it, else a
    folder of the data dir named after the adapter (not the run folder, which is removed once the
    adapter is stored)."""
    chosen = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(paths.data_dir() / "tensorboard" / plan.name)
    os.environ["TENSORBOARD_LOGGING_DIR"] = chosen  # read by transformers' TensorBoardCallback
    return chosen


def last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


@dataclass
class TrainResult:
    steps: int
    losses: list[tuple[int, float]]
    seconds: float
    tokens: int
    peak_gpu_gib: float | None
    interrupted: bool
    steady_tokens_per_second: float | None = None


def effective_learning_rate(configured: float, model: Any) -> float:
    """``configured``, or for 0 ("auto") the seeds' 2e-4 -- 1e-3 for models under 1B parameters.

    Measured on the embedded 135M model: 60 steps at 2e-4 never taught it the <think> format,
    30 steps at 1e-3 did (5 of 6 held-out replies).
    """
    if configured > 0:
        return configured
    params = sum(p.numel() for p in model.parameters())
    return 1e-3 if params < 1_000_000_000 else 2e-4


def host_counting(trainer_class: type) -> type:
    """``trainer_class`` counting concatenated batches' tokens from their shape.

    Trainer counts them in a GPU tensor read back after every micro-batch; that wait empties the GPU's
    queue, so it then idles while Python launches the next work (see logging_nan_inf_filter).
    """

    class Trainer(trainer_class):
        def _track_num_input_tokens(self, inputs):
            if self.args.include_num_input_tokens_seen != "all":
                return super()._track_num_input_tokens(inputs)
            self.state.num_input_tokens_seen += inputs["input_ids"].numel()

    return Trainer


def train(plan: Plan, model: Any, tokenizer: Any, built: Built, say: Say) -> tuple[Any, TrainResult]:
    import datasets
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    datasets.disable_progress_bars()

    import torch

    plan.learning_rate = effective_learning_rate(plan.ft.learning_rate, model)
    if plan.ft.report_to == "tensorboard":
        plan.log_dir = tensorboard_dir(plan)
    args = trainer_args(plan, len(built.rows), sum(len(r["input_ids"]) for r in built.rows))
    dataset = Dataset.from_list(built.rows)
    stop = StopFlag()
    progress = make_callback(plan, stop)
    trainer = host_counting(SFTTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                        callbacks=[progress])
    trainer.remove_callback(PrinterCallback)  # our progress line replaces its raw dict prints
    # TRL packs when packing=True (Unsloth keys its packed-attention path on that flag), then its rows are
    # regrouped into fuller sequences: cheap (milliseconds for hundreds of rows) and keeps every column.
    if args.packing:
        trainer.train_dataset = packing.repack(trainer.train_dataset, args.max_length)
        say(packing.describe(len(built.rows), trainer.train_dataset, args.max_length))
    for note in plan.notes:
        say(note)
    resume_from = last_checkpoint(plan.run_dir) if plan.resume else None
    if resume_from:
        say(f"resuming from {resume_from.name}")
    cuda = plan.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with stop:
        try:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except KeyboardInterrupt:
            raise Interrupted(f"training aborted; the last checkpoint (if any) is in {plan.run_dir}; "
                              f"continue with `medchat finetune --resume {plan.name}`") from None
        except Exception as exc:  # noqa: BLE001
            if out_of_memory(exc):
                raise HardwareError("out of memory while training: lower --batch-size or --max-seq-length "
                                    "(raise --grad-accum to keep the effective batch)") from exc
            raise
    result = TrainResult(
        steps=trainer.state.global_step,
        losses=progress.losses,
        seconds=time.perf_counter() - t0,
        tokens=progress.tokens,
        peak_gpu_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        interrupted=stop.requested,
        steady_tokens_per_second=progress.steady_rate(),
    )
    return trainer, result


# -------------------------------------------------------------------------------------------------
# Save

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


def settings_dict(settings: Settings) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def build_manifest(plan: Plan, tokenizer: Any, built: Built, result: TrainResult, started: float) -> Manifest:
    from medchat import __version__

    src = plan.dataset.source
    model = getattr(plan, "_model_revision", "")
    losses = [l for _, l in result.losses]
    s = settings_dict(plan.settings)
    s.pop("api_key", None)
    s["finetune"]["learning_rate"] = plan.learning_rate or s["finetune"]["learning_rate"]
    return Manifest.model_validate({
        "name": plan.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "medchat_version": __version__,
        "recipe": plan.recipe,
        "base_model": {"id": plan.resolved.base_id, "name": plan.resolved.name, "source": plan.resolved.source,
                       "revision": model},
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


def save_merged(plan: Plan, adapter_dir: Path, target: Path, say: Say) -> None:
    """A merged 16-bit model beside the adapter, made like `medchat export`: from a 16-bit copy of the
    base, never by merging into 4-bit weights (which rounds the fine-tune away)."""
    from medchat.export.merged import export_merged

    export_merged(str(adapter_dir), target, model=plan.resolved.source, device=plan.device,
                  offline=plan.settings.offline, say=say)


def push(plan: Plan, adapter_dir: Path, say: Say) -> list[str]:
    from huggingface_hub import HfApi

    repo = plan.ft.push_to_hub
    api = HfApi(token=hub_token())
    pushed = []
    say(f"pushing the adapter to {repo}")
    api.create_repo(repo, private=True, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(adapter_dir), ignore_patterns=["merged/*"])
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
# Whole runs

def save_run_state(plan: Plan) -> None:
    from medchat.paths import atomic_write_text

    paths.ensure_private_dir(plan.run_dir)
    state = {"name": plan.name, "recipe": plan.recipe, "settings": settings_dict(plan.settings),
             "train_indices": list(plan.selection.train), "eval_indices": list(plan.selection.eval),
             "dataset_revision": plan.dataset.source.revision}
    atomic_write_text(plan.run_dir / "run.json", json.dumps(state, indent=2) + "\n")


def load_run_state(name: str) -> tuple[Settings, str, dict[str, Any]]:
    path = runs_dir() / name / "run.json"
    if not path.is_file():
        known = sorted(p.name for p in runs_dir().glob("*") if (p / "run.json").is_file()) if runs_dir().is_dir() else []
        raise UsageError(f"no unfinished run named '{name}' (unfinished runs: {', '.join(known) or 'none'})")
    state = json.loads(path.read_text())
    settings = merge(Settings, Settings(), state["settings"], str(path)).validate()
    return settings, state.get("recipe", ""), state


def dry_run(plan: Plan, say: Say, out=None) -> dict[str, Any]:
    """Validate and format everything, print lengths and one rendered example; load no weights."""
    out = out or sys.stdout
    tokenizer = load_tokenizer(plan)
    built = build_rows(plan, tokenizer, say)
    example = built.check
    print(f"data: {plan.dataset.source.describe()} — {plan.dataset.shape} shape, {len(plan.dataset.examples)} rows", file=out)
    print(f"rows: {len(plan.selection.train)} to train, {len(plan.selection.eval)} held out; "
          f"model {plan.resolved.name}; prompt style {plan.style}", file=out)
    print(describe_lengths(built.lengths), file=out)
    print("render check: training prompt = chat prompt; "
          f"{example['prompt_tokens']} prompt tokens, {example['completion_tokens']} completion tokens trained", file=out)
    print("\n--- prompt (masked, not trained) ---", file=out)
    print(example["prompt"], file=out)
    print("--- completion (trained) ---", file=out)
    print(example["completion"], file=out)
    print("--- end ---\ndry run: nothing was trained", file=out)
    return built.lengths


def run_finetune(settings: Settings, *, name: str = "", recipe: str = "", resume: str = "",
                 dry: bool = False, say: Say | None = None) -> Path | None:
    """The whole command. Returns the stored adapter's folder (None for a dry run)."""
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.time()
    state: dict[str, Any] = {}
    if resume:
        settings, recipe, state = load_run_state(resume)
        name = resume
    plan = make_plan(settings, name="" if resume else name, recipe=recipe, say=say)
    if resume:
        plan.name, plan.resume = resume, True
        if state.get("dataset_revision") != plan.dataset.source.revision:
            raise DataError(f"the data set of run '{resume}' changed since it started; its recorded rows no longer apply")
        # The recorded rows, not a fresh selection: no held-out row can leak into training.
        plan.selection = D.Selection(tuple(state["train_indices"]), tuple(state["eval_indices"]))
    resolve(plan, say)
    if dry:
        dry_run(plan, say)
        return None
    check_disk(plan)
    model, tokenizer = load_model(plan, say)
    built = build_rows(plan, tokenizer, say)
    say(describe_lengths(built.lengths))
    save_run_state(plan)
    say(f"training {plan.name}: {len(built.rows)} rows, "
        f"{plan.ft.max_steps or plan.ft.epochs} {'steps' if plan.ft.max_steps else 'epochs'} (Ctrl+C stops and saves)")
    trainer, result = train(plan, model, tokenizer, built, say)
    if result.interrupted:
        raise Interrupted(f"stopped at step {result.steps}; checkpoint saved in {plan.run_dir}. "
                          f"Continue with: medchat finetune --resume {plan.name}")
    plan._model_revision = model_revision(plan.resolved.source)  # type: ignore[attr-defined]
    tmp = store.begin_save(plan.name)
    try:
        model.save_pretrained(str(tmp))
        manifest = build_manifest(plan, tokenizer, built, result, started)
        write_manifest(tmp, manifest)
        trainer = model = None  # merging and the report card load the base afresh, as chat will
        release_memory()
        # The adapter is complete now: a failing (or interrupted) merge or report card is reported
        # and the adapter is still stored.
        if plan.ft.merge:
            optional_step(manifest, "merge", lambda: save_merged(plan, tmp, tmp / "merged", say), say,
                          f"medchat export --adapter {plan.name} --merged DIR")
        if plan.selection.eval:
            optional_step(manifest, "report card", lambda: report_card(plan, tmp, manifest, say), say,
                          f"medchat eval --adapter {plan.name}")
        write_manifest(tmp, manifest)
        final = store.commit_save(tmp, plan.name)
    except BaseException:
        store.abort_save(tmp)
        raise
    shutil.rmtree(plan.run_dir, ignore_errors=True)
    if plan.ft.push_to_hub:
        try:
            manifest.pushed_to = push(plan, final, say)
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise MedchatError(f"adapter {plan.name} is saved, but pushing to {plan.ft.push_to_hub} failed: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        write_manifest(final, manifest)
    print_summary(manifest, final)
    return final


def report_card(plan: Plan, adapter_dir: Path, manifest: Manifest, say: Say) -> None:
    from medchat.evaluation.report_card import evaluate_adapter

    report = evaluate_adapter(plan.settings, adapter_dir, plan.eval_examples(), plan.style, say)
    store.write_report(adapter_dir, report)
    manifest.eval = report["summary"]


def optional_step(manifest: Manifest, what: str, step: Callable[[], None], say: Say, later: str) -> None:
    try:
        step()
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        say(f"{what} failed ({why}); the adapter is kept — run `{later}` later")
        manifest.notes.append(f"{what} failed: {why}")


def check_disk(plan: Plan) -> None:
    root = paths.data_dir()
    root.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(root).free / 2**30
    if free_gib < 1:
        raise HardwareError(f"only {free_gib:.1f} GiB free in {root}; checkpoints and the adapter need more")


def print_summary(manifest: Manifest, path: Path) -> None:
    t = manifest.training
    losses = manifest.losses
    lines = [
        f"adapter {manifest.name} saved to {path}",
        f"  {t.steps} steps in {_clock(t.seconds)}, {t.tokens:,} tokens ({t.tokens_per_second:,.0f} tok/s, non-padding"
        + (f"; {t.steady_tokens_per_second:,.0f} tok/s after warm-up" if t.steady_tokens_per_second else "") + ")"
        + (f", peak GPU memory {t.peak_gpu_gib} GiB" if t.peak_gpu_gib is not None else ""),
        f"  loss {losses.first_train} → {losses.final_train}",
    ]
    if manifest.tensorboard_logs:
        lines.append(f"  TensorBoard: tensorboard --logdir {shell_quote(manifest.tensorboard_logs)}")
    ev = manifest.eval
    if ev:
        lines.append(f"  report card: {format_eval_line(ev)}")
    lines.append(f"chat with it: medchat --model {shell_quote(manifest.base_model.name)} --adapter {manifest.name}")
    print("\n".join(lines), flush=True)


def format_eval_line(summary: dict[str, Any]) -> str:
    base, tuned = summary.get("base", {}), summary.get("adapter", {})

    def pct(x):
        return "–" if x is None else f"{100 * x:.0f}%"

    text = f"closes </think> and answers: base {pct(base.get('share_closed'))} → adapter {pct(tuned.get('share_closed'))}"
    if tuned.get("mc_rows"):
        text += f"; multiple-choice accuracy: base {pct(base.get('accuracy'))} → adapter {pct(tuned.get('accuracy'))}"
    return text


def shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
