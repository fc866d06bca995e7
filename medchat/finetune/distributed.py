"""Data-parallel fine-tuning: one process per GPU, started by torchrun or `accelerate launch` (PyTorch DDP).

Each process (rank) loads its own 4-bit copy of the base with LoRA layers, on the GPU its launcher gave
it (LOCAL_RANK); transformers' Trainer wraps the model in DistributedDataParallel, gives every rank its
own share of the (packed) sequences and averages the LoRA gradients. Both loading paths run under it:
Unsloth (2026.10) pins each rank's model to its own GPU, asks DDP to skip its CPU-side rotary buffers and
turns off DDP's unused-parameter search for plain LoRA; transformers + peft + bitsandbytes gets the
rank's GPU from :func:`medchat.models.loading.load_hf_model` and the same DDP settings from
:func:`trainer_kwargs`.

The rest is the same code with one rank. What changes with several:

* rank 0 alone prints (messages, the progress bar), writes the run state, checkpoints' shared files, the
  adapter, its manifest and report card; the other ranks leave once training ends;
* the ranks agree on the adapter name (rank 0's) before anything is written;
* at every step end the ranks add up their tokens and their stop requests over a small CPU (gloo)
  group, so that Ctrl+C, which torchrun forwards to every rank as SIGINT, stops them all after the same
  step with one checkpoint, and the progress bar counts every GPU's tokens without reading the GPU;
* an effective batch is per-GPU batch x accumulation x ranks, so an epoch takes 1/N of the steps;
  a run resumes only with the number of ranks it started with (each rank kept its own RNG state and
  the data order depends on the number of ranks).

``medchat finetune --gpus N`` runs torchrun itself (:func:`launch`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from medchat.errors import HardwareError, MedchatError, UsageError

# LoRA on these layers gets a gradient at every step (each runs in every decoder layer), so DDP need not
# search the graph for unused parameters (a walk over the autograd graph per step).
EVERY_STEP_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
LAUNCH_FILE = "launch.json"  # in the run folder: the number of ranks a run started with
TIMEOUT_SECONDS = 1800  # how long a rank waits for the others at a collective (transformers' ddp_timeout)
TIMEOUT_ENV = "MEDCHAT_DIST_TIMEOUT"  # seconds, instead of TIMEOUT_SECONDS: a hang becomes an error sooner
SHUTDOWN_SECONDS = 180  # --gpus: how long torchrun waits, after Ctrl+C, for the ranks to save and leave


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch (torchrun and accelerate set RANK, LOCAL_RANK, WORLD_SIZE)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """This process's ranks, from the launcher's environment (one rank when there is no launcher)."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        value = environ.get(name, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"the launcher set {name}={value!r}; expected a whole number") from None

    world = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    local = number("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"the launcher set RANK={rank}, LOCAL_RANK={local}, WORLD_SIZE={world}, which do not fit")
    return Ranks(rank, local, world)


def quiet_on_this_rank(exc: BaseException, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this rank should keep ``exc`` to itself: rank 0 reports Ctrl+C and every error that comes
    from the command line or the data (each rank meets those alike)."""
    from medchat.errors import ConfigError, DataError, Interrupted, ModelUnavailable

    try:
        here = ranks(environ)
    except UsageError:
        return False
    return not here.main and isinstance(exc, (Interrupted, UsageError, ConfigError, DataError, ModelUnavailable))


def error_prefix(environ: Mapping[str, str] | None = None) -> str:
    """'[rank N] ' before an error that a rank other than 0 prints; '' otherwise."""
    try:
        here = ranks(environ)
    except UsageError:
        return ""
    return f"[rank {here.rank}] " if not here.main else ""


def timeout_seconds(environ: Mapping[str, str] | None = None) -> int:
    """How long a rank waits at a collective: MEDCHAT_DIST_TIMEOUT when set (a run that hangs then fails
    with the collective named, and NCCL's flight recorder dumps when asked to), else half an hour."""
    value = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "").strip()
    if not value:
        return TIMEOUT_SECONDS
    try:
        seconds = int(float(value))
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise UsageError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds of at least 1")
    return seconds


def trainer_kwargs(plan: Any) -> dict[str, Any]:
    """DDP settings for the trainer. Unsloth makes the same choice itself (unsloth/models/_ddp_defaults.py);
    transformers would search for unused parameters at every step, since a peft model is no PreTrainedModel."""
    if set(plan.ft.target_modules) <= EVERY_STEP_MODULES:
        return {"ddp_find_unused_parameters": False}
    return {}


def effective_batch(plan: Any, world_size: int) -> int:
    """Rows per optimizer step (packed: rows' worth of batch_size x max_seq_length tokens each)."""
    return plan.ft.batch_size * plan.ft.grad_accum * world_size


# -------------------------------------------------------------------------------------------------
# The ranks' conversation: one process group for training (NCCL on GPUs, gloo on CPUs) and a small gloo
# group beside it, so that the per-step exchange moves CPU numbers and never waits for the GPU.


class Group:
    """The ranks of this launch; with one rank every method is a no-op."""

    def __init__(self, here: Ranks) -> None:
        self.ranks = here
        self._control: Any = None  # the gloo group (None: the default group)
        self._device = "cpu"  # where the per-step exchange's numbers live

    @property
    def main(self) -> bool:
        return self.ranks.main

    @property
    def distributed(self) -> bool:
        return self.ranks.distributed

    def start(self, device: str, before: Any = None) -> "Group":
        """Join the launch: the rank's GPU becomes its current device, ``before()`` runs (Unsloth's import,
        which expects no process group yet), then the process groups start."""
        if not self.distributed:
            return self
        import torch

        if device == "cuda":
            if self.ranks.local_rank >= torch.cuda.device_count():
                raise HardwareError(f"rank {self.ranks.rank} was given GPU {self.ranks.local_rank}, but this machine "
                                    f"shows {torch.cuda.device_count()}; start at most that many processes")
            torch.cuda.set_device(self.ranks.local_rank)
        if before is not None:
            before()
        else:
            # accelerate names a CPU rank's device "cpu:<n>", which torch.load cannot map a resumed
            # checkpoint's optimizer onto; plain "cpu" is the same memory.
            os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")
        # accelerate's state is the one the Trainer joins later (its backend choice; the Trainer's default
        # ddp_timeout, as the Trainer's own settings no longer reach a group that is already started).
        from datetime import timedelta

        from accelerate import PartialState

        timeout = timedelta(seconds=timeout_seconds())
        PartialState(cpu=device != "cuda", timeout=timeout)
        import torch.distributed as dist

        try:
            self._control = dist.new_group(backend="gloo", timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - gloo finds no usable network interface (some containers)
            # The default group then: each step's exchange waits for the GPU once (as TRL's logging does).
            self._device = f"cuda:{self.ranks.local_rank}" if device == "cuda" else "cpu"
            print(f"medchat: [rank {self.ranks.rank}] no gloo group ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                  "ranks agree through the training group", file=sys.stderr)
        return self

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable value), after every rank got here."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._control)
        self.barrier()
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier(group=self._control)

    def exchange(self, stop: bool, tokens: int) -> tuple[bool, int]:
        """(any rank asked to stop, the tokens of every rank): one small all-reduce on the CPU group."""
        if not self.distributed:
            return stop, tokens
        import torch
        import torch.distributed as dist

        both = torch.tensor([int(stop), int(tokens)], dtype=torch.int64, device=self._device)
        dist.all_reduce(both, group=self._control)
        anyone, total = both.tolist()
        return bool(anyone), int(total)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.ranks.world_size
        dist.all_gather_object(out, value, group=self._control)
        return out

    def finish(self) -> None:
        """Leave the launch once training is over (the adapter and report card are rank 0's alone)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier(group=self._control)
            dist.destroy_process_group()


def sync_callback(group: Group, stop: Any, counted_on_host: bool):
    """A TrainerCallback that runs before the progress callback at each step end: if any rank asked to
    stop, every rank does (after this same step); with ``counted_on_host`` (each rank counted its own
    packed tokens, see train.host_counting) the token count becomes every rank's sum, so the progress
    line and the manifest report the whole launch's tokens/s. At each checkpoint it waits for every rank's
    files before the progress callback marks it complete."""
    from transformers import TrainerCallback

    class Sync(TrainerCallback):
        def __init__(self) -> None:
            self.seen = 0

        def on_train_begin(self, args, state, control, **kw):
            self.seen = state.num_input_tokens_seen or 0

        def on_step_end(self, args, state, control, **kw):
            mine = (state.num_input_tokens_seen or 0) - self.seen
            anyone, total = group.exchange(stop.requested, mine if counted_on_host else 0)
            if anyone:
                stop.requested = True
            if counted_on_host:
                state.num_input_tokens_seen = self.seen + total
            self.seen = state.num_input_tokens_seen or 0
            return control

        def on_save(self, args, state, control, **kw):
            # Every rank writes its own RNG state into the checkpoint: rank 0 marks it complete
            # (train.make_callback, after this) only once all of them are done.
            group.barrier()

    return Sync()


# -------------------------------------------------------------------------------------------------
# Resuming with the same number of ranks


def record_launch(run_dir: Path, plan: Any, world_size: int) -> None:
    from medchat.paths import atomic_write_text

    state = {"world_size": world_size, "per_device_batch": plan.ft.batch_size, "grad_accum": plan.ft.grad_accum,
             "effective_batch": effective_batch(plan, world_size)}
    atomic_write_text(run_dir / LAUNCH_FILE, json.dumps(state, indent=2) + "\n")


def check_resume(run_dir: Path, name: str, world_size: int) -> None:
    """Refuse to resume a run on another number of ranks than it started with (runs recorded before this
    file existed started on one)."""
    try:
        started = int(json.loads((run_dir / LAUNCH_FILE).read_text()).get("world_size", 1))
    except FileNotFoundError:
        started = 1
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"{run_dir / LAUNCH_FILE} is unreadable: {exc}") from None
    if started != world_size:
        how = (f"medchat finetune --resume {name}" if started == 1 else
               f"medchat finetune --resume {name} --gpus {started} (or torchrun --nproc_per_node {started} "
               f"-m medchat finetune --resume {name})")
        raise UsageError(f"run '{name}' started on {started} process{'es' if started > 1 else ''} and this launch "
                         f"has {world_size}; resume it with the same number: {how}")


# -------------------------------------------------------------------------------------------------
# --gpus N: torchrun, started from medchat


def without_gpus(argv: list[str]) -> list[str]:
    """The command line minus its --gpus option (the ranks must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--gpus":
            skip = True
            continue
        if arg.startswith("--gpus="):
            continue
        out.append(arg)
    return out


def torchrun_args(gpus: int, argv: list[str]) -> list[str]:
    """torchrun's arguments for ``medchat <argv>`` on ``gpus`` GPUs of this machine."""
    return ["--standalone", f"--nproc_per_node={gpus}", "-m", "medchat", *without_gpus(argv)]


def launch(gpus: int, argv: list[str], *, cpu: bool = False) -> None:
    """Run ``medchat <argv>`` as ``gpus`` ranks under torchrun and return when they are done.

    Ctrl+C reaches torchrun, which forwards it once to every rank: they stop after the same step, save
    a checkpoint and leave (rank 0 says how to resume). A failing rank's exit code becomes ours; the
    rank already printed its one-line error. ``cpu``: processes on the CPU (gloo), no GPU needed.
    """
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise UsageError("--gpus starts its own launcher; under torchrun or accelerate launch leave it out")
    import torch

    found = torch.cuda.device_count()
    if not cpu and found < gpus:
        raise HardwareError(f"--gpus {gpus}: torch sees {found} GPU{'s' if found != 1 else ''} on this machine")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    # torchrun's wait between SIGTERM and SIGKILL, for the ranks to save: an environment variable, because
    # the --shutdown-timeout flag is newer than torch 2.11 (whose torchrun would refuse it); older ones wait 30 s
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(SHUTDOWN_SECONDS))
    # torchrun would set 1 thread per process and say so; share the cores out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // gpus)))
    try:
        torchrun(torchrun_args(gpus, argv))
    except SignalException:
        raise Stopped(130) from None
    except ChildFailedError as exc:
        codes = [f.exitcode for _, f in sorted(exc.failures.items())]
        code = next((c for c in codes if c and c > 0), 1)
        raise Stopped(code) from None


class Stopped(MedchatError):
    """The ranks have ended and said why; the launcher only passes their exit code on."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("")
        self.exit_code = exit_code


def say_for(say: Any, here: Ranks | None = None):
    """``say`` on rank 0, silence elsewhere."""
    here = here or ranks()
    return say if here.main else (lambda message: None)
