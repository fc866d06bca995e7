"""Start-up: compile caches in medchat's cache folder, the first step's time said once, the summary's phases."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

from medchat.finetune import caches
from medchat.finetune import train as T

from .plans import plan


def clock(monkeypatch, *readings: float) -> None:
    """The callback's clock reads ``readings`` in turn (then the last one again)."""
    left = list(readings)
    monkeypatch.setattr(T.time, "perf_counter", lambda: left.pop(0) if len(left) > 1 else left[0])


def test_the_first_steps_compilation_is_said_once_and_kept(monkeypatch):
    clock(monkeypatch, 0.0, 0.0, 45.0, 45.4, 45.8)  # made; train begins; step 1 ends after 45 s; steps of 0.4 s
    out = io.StringIO()
    cb = T.make_callback(plan(), T.StopFlag(), stream=out)
    args = SimpleNamespace(logging_steps=100)
    state = SimpleNamespace(global_step=0, max_steps=10, num_input_tokens_seen=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False, should_log=False)
    cb.on_train_begin(args, state, control)
    for step in (1, 2, 3):
        state.global_step, state.num_input_tokens_seen = step, step * 4096
        cb.on_step_end(args, state, control)
    assert out.getvalue().count("first step took 45s (compilation and warm-up)") == 1
    assert cb.first_step == 45.0


def test_a_first_step_like_the_others_is_not_announced(monkeypatch):
    clock(monkeypatch, 0.0, 0.0, 1.0, 2.0, 3.0)  # a CPU run: no compilation
    out = io.StringIO()
    cb = T.make_callback(plan(), T.StopFlag(), stream=out)
    state = SimpleNamespace(global_step=0, max_steps=10, num_input_tokens_seen=0)
    control = SimpleNamespace(should_save=False, should_training_stop=False, should_log=False)
    cb.on_train_begin(None, state, control)
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_step_end(None, state, control)
    assert "first step" not in out.getvalue() and cb.first_step == 1.0


def test_compile_caches_live_in_medchats_cache_folder(medchat_home):
    env = {"TRITON_CACHE_DIR": "/mine/triton"}
    used = caches.use_compile_caches(env, user_set=frozenset({"TRITON_CACHE_DIR"}))
    assert used["TRITON_CACHE_DIR"] == "/mine/triton"  # the user's choice stands
    root = medchat_home / "cache" / "compile"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert env["UNSLOTH_MEGA_CACHE_DIR"] == str(root / "unsloth-mega")
    assert env["UNSLOTH_COMPILE_LOCATION"] == str(root / "unsloth-generated")
    assert (root / "unsloth-mega").stat().st_mode & 0o077 == 0  # Unsloth loads only from a private folder
    del env["TORCHINDUCTOR_CACHE_DIR"]  # importing Unsloth drops it
    caches.use_compile_caches(env, user_set=frozenset({"TRITON_CACHE_DIR"}))
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(root / "inductor")
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(root / "inductor")  # only the mapping given


def test_summary_says_how_long_start_up_took():
    from medchat.cli.reports import describe_phases

    phases = {"plan": 1.2, "load": 21.0, "data": 2.0, "trainer": 3.0, "first_step": 38.0, "training": 58.0,
              "training_end": 0.2, "save": 2.0, "report_card": 30.0}
    text = describe_phases(phases, 160.0)
    assert text.startswith("2m40s in all: training 58s at the steady rate; start-up 1m05s (plan 1s, load 21s")
    assert "first step 38s); save 2s; report card 30s" in text
