"""`medchat finetune` as explicit phases: plan → load → data → train → save → report card.

* plan (plan.py): everything that can fail without a model (data, rows, name, hub token, logging backend).
* load (load.py): the base model and its LoRA layers, through Unsloth on CUDA (when installed) or
  transformers + peft.
* data (rows.py): format rows exactly as chat renders prompts, check one row both ways, tokenize.
* train (train.py, progress.py): TRL SFTTrainer, live progress on stderr, checkpoints every N steps,
  Ctrl+C stops after the current step and saves a resumable checkpoint.
* save (save.py): adapter + manifest into a temporary folder of the store, merge and report card, then
  one rename; push to the hub last.

Under torchrun / `accelerate launch` every rank runs these phases up to the end of training; rank 0
alone prints, writes and then saves (distributed.py). Each phase's wall time goes into the manifest
(``training.phases``), so the summary can say how long start-up took beside the steady rate.

This module returns data (the typed Manifest); the command prints it. Heavy libraries are imported
inside the phases; on CUDA, Unsloth is imported before transformers/TRL.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medchat.config import Settings
from medchat.errors import DataError, Interrupted, MedchatError, UsageError
from medchat.evaluation.model_card import write_card
from medchat.finetune import checkpoints
from medchat.finetune import data as D
from medchat.finetune.plan import Plan, Say, check_disk, make_plan, resolve
from medchat.store import adapters as store
from medchat.store.manifest import Manifest, write_manifest


@dataclass
class Trained:
    path: Path  # the stored adapter's folder
    manifest: Manifest


@dataclass
class DryRun:
    """What a run would train on, with one row rendered both ways (nothing trained)."""

    source: str  # the data set, described
    shape: str
    rows_total: int
    rows_train: int
    rows_eval: int
    model: str
    style: str
    lengths: dict[str, Any]
    check: dict[str, Any]  # prompt, completion and their token counts


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(settings: Settings, *, name: str = "", recipe: str = "", resume: str = "", restart: bool = False,
            say: Say) -> Plan:
    """The plan phase, also for `--resume NAME` (its recorded settings and rows)."""
    state: dict[str, Any] = {}
    if resume:
        from medchat.finetune.save import load_run_state

        settings, recipe, state = load_run_state(resume)
        name = resume
    plan = make_plan(settings, name="" if resume else name, recipe=recipe, restart=restart, say=say)
    if resume:
        plan.name, plan.resume = resume, True
        if state.get("dataset_revision") != plan.dataset.source.revision:
            raise DataError(f"the data set of run '{resume}' changed since it started; its recorded rows no longer apply"
                            + ("" if restart else f" (start it over with `medchat finetune --resume {resume} --restart`"
                               " to train on the data as it is now)"))
        # The recorded rows, not a fresh selection: no held-out row can leak into training.
        plan.selection = D.Selection(tuple(state["train_indices"]), tuple(state["eval_indices"]))
    resolve(plan, say)
    return plan


def dry_run(settings: Settings, *, name: str = "", recipe: str = "", resume: str = "", restart: bool = False,
            say: Say | None = None) -> DryRun:
    """Validate and format everything, measure lengths and render one example; load no weights."""
    from medchat.finetune.load import load_tokenizer
    from medchat.finetune.rows import build_rows

    say = say or _stderr
    plan = prepare(settings, name=name, recipe=recipe, resume=resume, restart=restart, say=say)
    built = build_rows(plan, load_tokenizer(plan), say)
    return DryRun(plan.dataset.source.describe(), plan.dataset.shape, len(plan.dataset.examples),
                  len(plan.selection.train), len(plan.selection.eval), plan.resolved.name, plan.style,
                  built.lengths, built.check)


class Phases:
    """Wall seconds per phase, in order (``with phases("load"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        from contextlib import contextmanager

        @contextmanager
        def timed():
            from medchat.finetune import hangwatch

            hangwatch.beat(f"{name} began")
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 2)
                hangwatch.beat(f"{name} ended")

        return timed()


def run_finetune(settings: Settings, *, name: str = "", recipe: str = "", resume: str = "", restart: bool = False,
                 say: Say | None = None) -> Trained | None:
    """The whole command: train, store the adapter with its manifest and report card, push.

    ``restart`` discards the unfinished run of that name (its checkpoints) and starts at step 0.
    Under a multi-GPU launch, ranks other than 0 return None once training is over; rank 0 alone holds
    the run's lock, discards, marks checkpoints and stores (the others wait for it at a barrier).
    """
    from medchat.finetune import distributed, hangwatch

    here = distributed.ranks()
    say = distributed.say_for(say or _stderr, here)
    hangwatch.start(f"[rank {here.rank}] " if here.distributed else "")  # MEDCHAT_HANG_SECONDS: stacks of a stall
    try:
        return _run(settings, here, say, name=name, recipe=recipe, resume=resume, restart=restart)
    finally:
        hangwatch.stop()


def _run(settings: Settings, here: Any, say: Say, *, name: str, recipe: str, resume: str, restart: bool
         ) -> Trained | None:
    from medchat.finetune import caches, distributed

    started = time.time()
    phases = Phases()
    with phases("plan"):
        plan = prepare(settings, name=name, recipe=recipe, resume=resume, restart=restart, say=say)
        if resume and not restart:  # a restart starts afresh, on any number of ranks
            distributed.check_resume(plan.run_dir, plan.name, here.world_size)
        unsloth_first = None
        if plan.device == "cuda" and plan.backend == "unsloth":
            from medchat.models.loading import import_unsloth as unsloth_first
        group = distributed.Group(here).start(plan.device, before=unsloth_first)
        plan.name = group.agree(plan.name)  # a generated name has the time in it: rank 0's counts
        if plan.device == "cuda":
            caches.use_compile_caches()
        check_disk(plan)
    gpus = f" --gpus {here.world_size}" if group.distributed else ""
    with checkpoints.hold(plan.run_dir, plan.name):  # rank 0 holds it for every rank
        if plan.resume and (store.store_dir() / plan.name).exists():
            # Killed after the adapter was stored, before its run folder was removed.
            if group.main:
                checkpoints.finish(plan.run_dir)
            raise UsageError(f"run '{plan.name}' already finished: adapter '{plan.name}' is stored "
                             "(its leftover checkpoints are removed now)")
        if restart or not plan.resume:
            if group.main:
                if restart and checkpoints.exists(plan.run_dir):
                    say(f"discarding the unfinished run '{plan.name}' and starting over")
                checkpoints.clear(plan.run_dir)  # (a new run: only debris of a run that never started)
            plan.resume = False
        group.barrier()  # the other ranks read the run folder only once rank 0 holds and cleared it
        try:
            return _train_and_store(plan, here, group, phases, started, say)
        except KeyboardInterrupt:
            # Ctrl+C while loading, setting up the trainer or saving the adapter: name `--resume`
            # whenever the run can continue (its run.json is written once the rows are built).
            if checkpoints.exists(plan.run_dir) and not (store.store_dir() / plan.name).exists():
                raise Interrupted(f"interrupted; the run is kept in {plan.run_dir}. "
                                  f"Continue with: medchat finetune --resume {plan.name}{gpus}") from None
            raise


def _train_and_store(plan: Plan, here: Any, group: Any, phases: Phases, started: float, say: Say) -> Trained | None:
    from medchat.finetune import caches, distributed
    from medchat.finetune.load import load_model
    from medchat.finetune.rows import build_rows, describe_lengths
    from medchat.finetune.save import (
        build_manifest,
        model_revision,
        push,
        release_memory,
        save_adapter,
        save_merged,
        save_run_state,
    )
    from medchat.finetune.train import train

    with phases("load"):
        model, tokenizer = load_model(plan, say)
        if plan.device == "cuda":
            caches.use_compile_caches()  # importing Unsloth dropped inductor's folder
    with phases("data"):
        built = build_rows(plan, tokenizer, say)
        say(describe_lengths(built.lengths))
        if group.main:
            save_run_state(plan)
            distributed.record_launch(plan.run_dir, plan, here.world_size)
        group.barrier()
    gpus = f" on {here.world_size} {'GPUs' if plan.device == 'cuda' else 'processes'}" if group.distributed else ""
    say(f"training {plan.name}{gpus}: {len(built.rows)} rows, "
        f"{plan.ft.max_steps or plan.ft.epochs} {'steps' if plan.ft.max_steps else 'epochs'}, "
        f"{distributed.effective_batch(plan, here.world_size)} rows a step (Ctrl+C stops and saves); "
        f"start-up so far {round(time.time() - started)} s")
    trainer, result = train(plan, model, tokenizer, built, say, group)
    group.finish()
    first = result.first_step_seconds or 0.0
    phases.seconds.update(trainer=result.setup_seconds, first_step=round(first, 2), training=result.steps_seconds,
                          # after the last step: the trainer's own end (a final checkpoint, if any)
                          training_end=round(max(result.seconds - result.seconds_before - first
                                                 - result.steps_seconds, 0.0), 2))
    if result.interrupted:
        raise Interrupted(f"stopped at step {result.steps}; checkpoint saved in {plan.run_dir}. "
                          f"Continue with: medchat finetune --resume {plan.name}"
                          + (f" --gpus {here.world_size}" if group.distributed else ""))
    if not group.main:
        return None
    tmp = store.begin_save(plan.name)
    try:
        with phases("save"):
            save_adapter(model, tmp, plan.resolved.base_id, plan.ft.adapter_dtype)
            manifest = build_manifest(plan, tokenizer, built, result, started, model_revision(plan.resolved.source))
            record_launch(manifest, plan, result, phases)
            write_manifest(tmp, manifest)
            del trainer, model  # merging and the report card load the base afresh, as chat will
            release_memory()
        # The adapter is complete now: a failing (or interrupted) merge or report card is reported
        # and the adapter is still stored.
        if plan.ft.merge:
            with phases("merge"):
                optional_step(manifest, "merge", lambda: save_merged(plan, tmp, tmp / "merged", say), say,
                              f"medchat export --adapter {plan.name} --merged DIR")
        if plan.selection.eval:
            with phases("report_card"):
                optional_step(manifest, "report card", lambda: report_card(plan, tmp, manifest, say), say,
                              f"medchat eval --adapter {plan.name}")
        record_launch(manifest, plan, result, phases)
        manifest.duration_seconds = round(time.time() - started, 1)
        write_manifest(tmp, manifest)
        write_card(tmp, manifest)  # README.md: the hub model card (replaces PEFT's empty template)
        final = store.commit_save(tmp, plan.name)
    except BaseException:
        store.abort_save(tmp)
        raise
    checkpoints.finish(plan.run_dir)
    if plan.ft.push_to_hub:
        try:
            manifest.pushed_to = push(plan, final, say)
        except Exception as exc:  # noqa: BLE001 - hub errors come in many types
            raise MedchatError(f"adapter {plan.name} is saved, but pushing to {plan.ft.push_to_hub} failed: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        write_manifest(final, manifest)
    return Trained(final, manifest)


def record_launch(manifest: Manifest, plan: Plan, result: Any, phases: Phases) -> None:
    """The launch and the time per phase, into the manifest's training record."""
    from medchat.finetune.distributed import effective_batch

    t = manifest.training
    t.gpus = result.gpus
    t.effective_batch = effective_batch(plan, result.gpus)
    t.peak_gpu_gib_per_rank = result.peak_gpu_gib_per_rank
    t.first_step_seconds = result.first_step_seconds and round(result.first_step_seconds, 2)
    t.phases = dict(phases.seconds)


def report_card(plan: Plan, adapter_dir: Path, manifest: Manifest, say: Say) -> None:
    """Base vs adapter on the held-out rows, through `medchat eval`'s code (batched)."""
    from medchat.evaluation.record import manifest_entry, save_report
    from medchat.evaluation.report_card import evaluate_adapter

    report, records = evaluate_adapter(plan.settings, adapter_dir, plan.eval_examples(), plan.selection.eval,
                                       plan.style, say)
    save_report(report, records, adapter_dir / "evals", relative_to=adapter_dir)
    store.write_report(adapter_dir, report)
    entry = manifest_entry(report)
    manifest.eval = entry
    manifest.evaluations.append(entry)


def optional_step(manifest: Manifest, what: str, step: Callable[[], None], say: Say, later: str) -> None:
    try:
        step()
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        say(f"{what} failed ({why}); the adapter is kept — run `{later}` later")
        manifest.notes.append(f"{what} failed: {why}")
