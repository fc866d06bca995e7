"""Train phase: TRL's SFTTrainer on pre-tokenized rows (loss on the completion only).

Also here: how rows become batches, the trainer's settings, token counting without GPU read-backs,
the progress callback (which also honours Ctrl+C: the first stops after the current step and saves a
resumable checkpoint, a second aborts, marks each checkpoint complete once written, and saves one at
the last step) and resuming from the last complete checkpoint (checkpoints.py).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medchat import paths
from medchat.errors import HardwareError, Interrupted, out_of_memory
from medchat.finetune import checkpoints, hangwatch, packing
from medchat.finetune.plan import Plan, Say
from medchat.finetune.rows import Built

# -------------------------------------------------------------------------------------------------
# Batches and settings


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


def gradient_checkpointing(plan: Plan) -> bool:
    mode = plan.ft.gradient_checkpointing
    if mode == "auto":
        return plan.device == "cuda"  # on CPU memory is not the limit; checkpointing costs ~40 % speed
    return mode in ("on", "unsloth")


def effective_learning_rate(configured: float, model: Any) -> float:
    """``configured``, or for 0 ("auto") the seeds' 2e-4 -- 1e-3 for models under 1B parameters.

    Measured on the embedded 135M model: 60 steps at 2e-4 never taught it the <think> format,
    30 steps at 1e-3 did (5 of 6 held-out replies).
    """
    if configured > 0:
        return configured
    params = sum(p.numel() for p in model.parameters())
    return 1e-3 if params < 1_000_000_000 else 2e-4


def trainer_args(plan: Plan, n_rows: int, n_tokens: int = 0, world_size: int = 1):
    from trl import SFTConfig

    from medchat.finetune import distributed

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
    # Each optimizer step takes batch x accumulation micro-batches from every rank (distributed.py).
    steps = ft.max_steps or math.ceil(n_rows / (batch * ft.grad_accum * world_size) * ft.epochs)
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
        # transformers 5 dropped `warmup_ratio`: a float warmup_steps below 1 is the share of all steps.
        warmup_steps=warmup if ft.warmup_ratio == 0 else ft.warmup_ratio,
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
        **(distributed.trainer_kwargs(plan) if world_size > 1 else {}),
        **kwargs,
    )


def tensorboard_dir(plan: Plan) -> str:
    """Where TensorBoard logs go: transformers' TENSORBOARD_LOGGING_DIR if the user set it, else a
    folder of the data dir named after the adapter (not the run folder, which is removed once the
    adapter is stored)."""
    chosen = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(paths.data_dir() / "tensorboard" / plan.name)
    os.environ["TENSORBOARD_LOGGING_DIR"] = chosen  # read by transformers' TensorBoardCallback
    return chosen


# -------------------------------------------------------------------------------------------------
# Ctrl+C and progress


class StopFlag:
    """First Ctrl+C asks the trainer to stop after the current step and save; a second one aborts."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce  # rank 0 of a multi-GPU run speaks for all
        self._previous: Any = None

    def __enter__(self) -> "StopFlag":
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            if self.announce:
                sys.stderr.write("\nmedchat: stopping after this step and saving a checkpoint (Ctrl+C again to abort)\n")

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread (tests): no handler, Ctrl+C behaves as usual
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def make_callback(plan: Plan, stop: StopFlag, stream=None, show: bool = True, seconds_before: float = 0.0):
    """A TrainerCallback that records losses and tokens, feeds the progress display (``show``: on rank 0
    only), honours the stop flag and marks checkpoints complete (on the process that saves them). It reads
    nothing back from the GPU: the loss arrives only with TRL's logs. ``seconds_before``: training time of
    the run before this resume."""
    from transformers import TrainerCallback

    from medchat.finetune.progress import RateMeter, Status, clock, make_display

    display = make_display(stream, show=show)

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
            self.meter = RateMeter()
            self.began = 0.0  # perf_counter at on_train_begin
            self.first_step: float | None = None  # seconds of the first step (compilation, warm-up)
            self.seconds_before = seconds_before

        def steady_rate(self) -> float | None:
            return self.meter.steady()

        def on_train_begin(self, args, state, control, **kw):
            hangwatch.beat("the trainer's set-up (first step next)")
            self.t0 = self.began = time.perf_counter()
            self.step0 = state.global_step
            self.tokens0 = state.num_input_tokens_seen or 0
            self.meter = RateMeter()
            display.start(state.max_steps, state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "learning_rate" in logs:
                self.lr = float(logs["learning_rate"])
            if "loss" in logs:
                self.loss = float(logs["loss"])
                self.losses.append((state.global_step, round(self.loss, 4)))
                self.show(state, logged=True)

        def on_step_end(self, args, state, control, **kw):
            hangwatch.beat(f"step {state.global_step}")
            self.seconds = time.perf_counter() - self.t0
            self.tokens = (state.num_input_tokens_seen or 0) - self.tokens0
            self.meter.add(self.seconds, self.tokens)
            if self.first_step is None:
                self.first_step = self.seconds
            elif len(self.meter.marks) == 2 and self.first_step > max(5.0, 2 * (self.seconds - self.first_step)):
                # Said once the second step shows what a step costs (on a CPU the first one is no slower).
                display.note(f"first step took {clock(self.first_step)} (compilation and warm-up); "
                             "the rate shown leaves it out")
            scheduler = kw.get("lr_scheduler")
            lr = scheduler.get_last_lr()[0] if scheduler is not None else None
            if isinstance(lr, (int, float)):  # a Python number: no GPU read-back (a tensor would be one)
                self.lr = float(lr)
            if stop.requested:
                control.should_save = True
                control.should_training_stop = True
            # TRL logs every logging_steps only: log the last step too, so a run shorter than
            # logging_steps (or stopped between logs) still records its final loss. And checkpoint it:
            # a run stopped while its adapter is saved then resumes there instead of training again.
            if state.global_step >= state.max_steps or stop.requested:
                control.should_log = True
                control.should_save = control.should_save or bool(plan.ft.save_steps)
            if not getattr(control, "should_log", False):
                self.show(state, logged=False)  # otherwise on_log shows it, with this step's loss
            return control

        def show(self, state, logged: bool) -> None:
            rate, per_step = self.meter.recent()
            eta = per_step * max(state.max_steps - state.global_step, 0) if per_step is not None else None
            display.update(Status(state.global_step, state.max_steps, self.loss, self.lr, rate, eta), logged)

        def on_save(self, args, state, control, **kw):
            # Called once Trainer has written every file of the checkpoint (and rotated old ones).
            folder = Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}"
            if getattr(args, "should_save", True) and folder.is_dir():  # the process that wrote it
                checkpoints.mark_complete(folder, {"step": state.global_step,
                                                   "seconds": round(self.seconds_before + self.seconds, 3)})

        def on_train_end(self, args, state, control, **kw):
            display.close()

        def close(self) -> None:
            """End the display also when training raised (a live bar holds the terminal)."""
            display.close()

    return Progress()


# -------------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainResult:
    """The whole run, across resumes: steps, (step, loss) history, tokens and training seconds."""

    steps: int
    losses: list[tuple[int, float]]
    seconds: float
    tokens: int
    peak_gpu_gib: float | None
    interrupted: bool
    steady_tokens_per_second: float | None = None  # of this process's steps
    first_step_seconds: float | None = None  # compilation and warm-up
    steps_seconds: float = 0.0  # from the first step's end to the last step's end: the steady steps
    setup_seconds: float = 0.0  # from the trainer's construction to its first step (packing included)
    gpus: int = 1  # ranks of a data-parallel launch (distributed.py)
    peak_gpu_gib_per_rank: list[float] | None = None
    seconds_before: float = 0.0  # of ``seconds``: training time before this resume (from the checkpoint)


def run_history(state: Any) -> tuple[int, list[tuple[int, float]], int]:
    """(steps, losses, tokens) of the whole run from Trainer's state, which a resume restores from the
    checkpoint: a resumed run records every loss since step 1, not only those after the resume."""
    losses = [(int(e["step"]), round(float(e["loss"]), 4)) for e in state.log_history if "loss" in e and "step" in e]
    return state.global_step, losses, int(state.num_input_tokens_seen or 0)


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


def train(plan: Plan, model: Any, tokenizer: Any, built: Built, say: Say, group: Any = None) -> tuple[Any, TrainResult]:
    """Train; ``group`` (distributed.Group) when several ranks share the work."""
    import datasets
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    datasets.disable_progress_bars()

    import torch

    plan.learning_rate = effective_learning_rate(plan.ft.learning_rate, model)
    if plan.ft.report_to == "tensorboard":
        plan.log_dir = tensorboard_dir(plan)
    from medchat.finetune.distributed import Group, ranks, sync_callback

    group = group or Group(ranks())
    t_setup = time.perf_counter()
    args = trainer_args(plan, len(built.rows), sum(len(r["input_ids"]) for r in built.rows), group.ranks.world_size)
    dataset = Dataset.from_list(built.rows)
    resume_from = None
    if plan.resume:
        if group.main:  # rank 0 removes; every rank then picks the same checkpoint
            for dropped in checkpoints.drop_incomplete(plan.run_dir):
                say(f"skipping {dropped.name}: it was not completely written (the run was stopped while saving it)")
        group.barrier()
        resume_from = checkpoints.last_complete(plan.run_dir)
    marker = checkpoints.read_marker(resume_from) if resume_from else None
    stop = StopFlag(announce=group.main)
    progress = make_callback(plan, stop, show=group.main, seconds_before=float((marker or {}).get("seconds", 0.0)))
    callbacks = [progress]
    if group.distributed:  # before the progress callback: it reads the agreed stop flag and token count
        callbacks.insert(0, sync_callback(group, stop, counted_on_host=args.include_num_input_tokens_seen == "all"))
    trainer = host_counting(SFTTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                        callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # our progress display replaces its raw dict prints
    # TRL packs when packing=True (Unsloth keys its packed-attention path on that flag), then its rows are
    # regrouped into fuller sequences: cheap (milliseconds for hundreds of rows) and keeps every column.
    if args.packing:
        trainer.train_dataset = packing.repack(trainer.train_dataset, args.max_length)
        say(packing.describe(len(built.rows), trainer.train_dataset, args.max_length))
    for note in plan.notes:
        say(note)
    if resume_from:
        say(f"resuming from {resume_from.name}")
    elif plan.resume:
        say("no complete checkpoint yet: starting at step 0")
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
        finally:
            progress.close()
    seconds = time.perf_counter() - t0
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    peaks = group.gather(peak)
    steps, losses, tokens = run_history(trainer.state)  # the whole run's, across resumes
    result = TrainResult(
        steps=steps,
        losses=losses,
        seconds=progress.seconds_before + seconds,
        tokens=tokens,
        peak_gpu_gib=max(peaks) if cuda else None,
        interrupted=stop.requested,
        steady_tokens_per_second=progress.steady_rate(),
        first_step_seconds=progress.first_step,
        steps_seconds=round(progress.seconds - (progress.first_step or 0.0), 2) if progress.first_step is not None else 0.0,
        setup_seconds=round(max(progress.began - t_setup, 0.0), 2) if progress.began else 0.0,
        gpus=group.ranks.world_size,
        peak_gpu_gib_per_rank=peaks if cuda and group.distributed else None,
        seconds_before=progress.seconds_before,
    )
    return trainer, result
