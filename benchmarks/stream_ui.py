"""Streaming benchmark for the chat UI (a script, not a test).

A scripted backend pushes REASONING_TOKENS reasoning tokens (a paragraph break every 50) and then
ANSWER_TOKENS answer tokens as fast as it can. The real chat app runs headless (`App.run_test`) and
streams them into its panes. Printed:

* engine alone: the same generation through `ChatSession.send` with no UI attached;
* engine under the UI: how long generation took while the UI consumed it (the UI's slowdown);
* UI thread CPU meanwhile: the UI thread's CPU time while the engine ran, over the engine's time
  (what the UI can take from the engine; unlike the slowdown, it is not drowned in machine noise);
* first text / all tokens on screen: after Enter (the latter after the final full render of both
  panes and the frame that draws it);
* UI cost per token: UI-thread CPU time per displayed token, over reasoning tokens 250-2,250
  (around 1k) versus the last 2,000 but 250 (around 20k). Goal: the late cost is at most 1.2x the
  early cost (no O(n^2)).

With ``--model smollm2`` (or any model medchat can load) it instead measures a real model: the same
greedy reply generated alone, inside the headless chat app, and beside the app left idle, in turn,
reporting decode tok/s and the UI thread's CPU time while the reply was generated in the app.

The figures are printed as text; --json also prints one RESULT line per scenario (medians, per-run
lists), and --out FILE / --save append them to a JSONL file. Without MEDCHAT_HOME set, a temporary
one is used (and removed).

usage: .venv/bin/python benchmarks/stream_ui.py [--runs 3] [--burst-runs 15] [--reasoning-tokens 20000]
       .venv/bin/python benchmarks/stream_ui.py --model smollm2 [--runs 5] [--max-new-tokens 64]
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import harness

from medchat.config import GenerationSettings, Settings
from medchat.engine.backends.fake import FakeBackend
from medchat.engine.session import ChatSession

if TYPE_CHECKING:
    from medchat.ui.widgets.prompt import PromptInput


def script(reasoning_tokens: int, answer_tokens: int) -> list[str]:
    chunks = ["<think>"]
    for i in range(reasoning_tokens):
        chunks.append(f"step{i}" + ("\n\n" if i % 50 == 49 else " "))
    chunks.append("</think>")
    for i in range(answer_tokens):
        chunks.append(f"answer{i}" + ("\n\n" if i % 50 == 49 else " "))
    return chunks


def ui_thread_cpu() -> float:
    """CPU seconds of the main thread (where the app runs), read from any thread (Linux)."""
    return time.clock_gettime(time.pthread_getcpuclockid(threading.main_thread().ident))


class TimedBackend(FakeBackend):
    """Records when its stream started and finished (in the consuming thread), and the UI thread's
    CPU time meanwhile."""

    def stream(self, *args, **kwargs):
        self.ui_cpu_started = ui_thread_cpu()
        self.started = time.perf_counter()
        yield from super().stream(*args, **kwargs)
        self.finished = time.perf_counter()
        self.ui_cpu = ui_thread_cpu() - self.ui_cpu_started


def generation() -> GenerationSettings:
    return GenerationSettings(max_new_tokens=10**7)


def alternate(chunks: list[str], reasoning_tokens: int, runs: int, delay: float = 0.0, control: list | None = None):
    """Engine alone and engine under the UI, alternately (so drifting machine load hits both).
    With ``control``, the engine alone runs once more after each UI run, into that list: the
    engine's run-to-run variation, the noise any slowdown figure has to be read against."""
    alone, ui = [], []
    for _ in range(runs):
        gc.collect()  # each run starts without the previous one's garbage
        alone.append(engine_alone(chunks, delay))
        gc.collect()
        ui.append(asyncio.run(with_ui(chunks, reasoning_tokens, delay)))
        if control is not None:
            gc.collect()
            control.append(engine_alone(chunks, delay))
    return alone, ui


def slowdowns(alone: list[float], ui: list[dict]) -> str:
    """Per-run slowdowns (each UI run against the engine-alone run just before it)."""
    return " ".join(f"{100 * (u['engine_under_ui'] / a - 1):+.0f}%" for a, u in zip(alone, ui))


def ui_share(ui: list[dict]) -> str:
    """The UI thread's CPU time while the engine ran, as a share of the engine's time (per run)."""
    shares = " ".join(f"{100 * u['ui_share']:.1f}%" for u in ui)
    return f"UI thread CPU meanwhile:  {100 * statistics.median(u['ui_share'] for u in ui):5.1f} %   of the engine's time (per run: {shares})"


def engine_alone(chunks: list[str], delay: float = 0.0) -> float:
    backend = TimedBackend([chunks], delay=delay)
    session = ChatSession(backend, generation())
    done = threading.Event()

    def run() -> None:
        for _ in session.send("question"):
            pass
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return backend.finished - backend.started


def press_enter(prompt: PromptInput) -> None:
    """What Enter does in the message box, without `pilot.press`: that waits for the app to be idle
    by polling it every 20 ms, which would wake the UI thread while the engine runs."""
    from medchat.ui.widgets.prompt import PromptInput

    prompt.post_message(PromptInput.Submitted(prompt, prompt.text))


async def with_ui(chunks: list[str], reasoning_tokens: int, delay: float = 0.0) -> dict[str, float]:
    from medchat.ui.app import make_app
    from medchat.ui.widgets.turn import TurnView

    backend = TimedBackend([chunks], delay=delay)
    app = make_app(Settings(model="bench", history=False, generation=generation()), lambda s, p: backend)
    samples: list[tuple[int, float]] = []  # (reasoning tokens shown, UI-thread CPU seconds)
    first: list[float] = []  # when text was first put on screen
    original_add, original_finish = TurnView.add, TurnView.finish
    rendered = asyncio.Event()  # the reply's final full render is done (no polling: a poll loop
    # would wake the UI thread, and take the interpreter lock, 100 times a second)

    async def add(self, kind, text, tokens):
        await original_add(self, kind, text, tokens)
        first.append(time.perf_counter())
        if kind == "reasoning":
            samples.append((self.state.reasoning_tokens, time.thread_time()))

    async def finish(self, *args, **kwargs):
        await original_finish(self, *args, **kwargs)
        rendered.set()

    TurnView.add, TurnView.finish = add, finish
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            while getattr(app.screen, "session", None) is None:
                await pilot.pause(0.01)
            prompt = app.screen.query_one("#prompt")
            prompt.text = "question"
            prompt.focus()
            await pilot.pause()
            sent = time.perf_counter()
            press_enter(prompt)
            await asyncio.wait_for(rendered.wait(), timeout=600)
            await pilot.pause()  # and drawn: one layout and paint of the screen
            ui_done = time.perf_counter()
            view = app.screen.query_one(TurnView)
            assert view.state.reasoning_tokens >= reasoning_tokens, view.state.reasoning_tokens
            assert view.reasoning_md.source == "".join(chunks[1:reasoning_tokens + 1])
    finally:
        TurnView.add, TurnView.finish = original_add, original_finish

    def cost(lo: int, hi: int) -> float:
        """UI-thread CPU per token between the takes that bracket tokens lo..hi."""
        start = max((s for s in samples if s[0] <= lo), default=samples[0])
        end = min((s for s in samples if s[0] >= hi), default=samples[-1])
        if end[0] <= start[0]:
            return float("nan")
        return (end[1] - start[1]) / (end[0] - start[0])

    return {
        "engine_under_ui": backend.finished - backend.started,
        "ui_share": backend.ui_cpu / (backend.finished - backend.started),
        "ui_done": ui_done - sent,
        "first_text": first[0] - sent,
        "cost_early": cost(250, 2250),
        "cost_late": cost(reasoning_tokens - 2250, reasoning_tokens - 250),
        "takes": len(samples),
    }


def real_model(model: str, runs: int, max_new_tokens: int) -> dict[str, Any]:
    """Decode speed of a real model alone vs inside the chat app (same greedy reply, alternating)."""
    from medchat.engine.backends import open_backend
    from medchat.ui.app import make_app
    from medchat.ui.widgets.turn import TurnView

    gen = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    settings = Settings(model=model, history=False, generation=gen)
    backend = open_backend(settings, lambda line: print("  " + line, file=sys.stderr))
    question = "What is hypertension and how is it treated?"
    shares: list[float] = []  # UI thread CPU / generation time, per in-app run
    stream = backend.stream

    def timed_stream(*args, **kwargs):
        cpu, wall = ui_thread_cpu(), time.perf_counter()
        yield from stream(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread() and in_app_running:
            shares.append((ui_thread_cpu() - cpu) / (time.perf_counter() - wall))

    backend.stream = timed_stream
    in_app_running = False

    def alone() -> float:
        result: list = []
        thread = threading.Thread(target=lambda: result.extend(ChatSession(backend, gen).send(question)))
        thread.start()
        thread.join()
        return result[-1].stats.tok_per_s

    async def in_app() -> float:
        nonlocal in_app_running
        in_app_running = True
        app = make_app(settings, lambda s, p: backend)
        original_finish = TurnView.finish
        rendered = asyncio.Event()  # awaited, not polled (a poll loop would wake the UI thread)

        async def finish(self, *args, **kwargs):
            await original_finish(self, *args, **kwargs)
            rendered.set()

        TurnView.finish = finish
        try:
            async with app.run_test(size=(120, 40)) as pilot:
                while getattr(app.screen, "session", None) is None:
                    await asyncio.sleep(0.01)
                prompt = app.screen.query_one("#prompt")
                prompt.text = question
                prompt.focus()
                await pilot.pause()
                press_enter(prompt)
                await asyncio.wait_for(rendered.wait(), timeout=600)
                return app.chat.session.turns[-1].stats.tok_per_s
        finally:
            TurnView.finish = original_finish
            in_app_running = False

    async def beside_idle_app() -> float:
        """The app open and idle (no reply in it) while the same reply is generated alone: what the
        app's mere presence costs, apart from streaming into it."""
        app = make_app(settings, lambda s, p: backend)
        async with app.run_test(size=(120, 40)) as pilot:
            while getattr(app.screen, "session", None) is None:
                await asyncio.sleep(0.01)
            await pilot.pause()
            result: list = []
            thread = threading.Thread(target=lambda: result.extend(ChatSession(backend, gen).send(question)))
            thread.start()
            while thread.is_alive():
                await asyncio.sleep(0.2)
            return result[-1].stats.tok_per_s

    alone()  # warm-up
    a, u, i = [], [], []
    for _ in range(runs):
        a.append(alone())
        u.append(asyncio.run(in_app()))
        i.append(asyncio.run(beside_idle_app()))
    print(f"model {backend.info.model} on {backend.info.device}, {max_new_tokens} tokens greedy, {runs} runs each")
    print(f"alone:      median {statistics.median(a):6.2f} tok/s  {['%.2f' % x for x in a]}")
    print(f"in the app: median {statistics.median(u):6.2f} tok/s  {['%.2f' % x for x in u]}")
    print(f"UI slowdown of generation: {100 * (statistics.median(a) / statistics.median(u) - 1):+.1f} %  (goal <= 5 %)")
    print("  per run:                 " + " ".join(f"{100 * (x / y - 1):+.0f}%" for x, y in zip(a, u)))
    print(f"beside an idle app: median {statistics.median(i):6.2f} tok/s  {['%.2f' % x for x in i]}")
    print(f"  slowdown:                {100 * (statistics.median(a) / statistics.median(i) - 1):+.1f} %  "
          "(the app open, the reply generated in a plain thread, not shown)")
    print(f"UI thread CPU meanwhile:   {100 * statistics.median(shares):.1f} % of the generation's time "
          f"(per run: {' '.join(f'{100 * x:.1f}%' for x in shares)})")
    return {"scenario": "real model", "model": backend.info.model, "device_name": backend.info.device,
            "decoder": backend.info.decoder, "alone_tok_s": a, "in_app_tok_s": u, "beside_idle_app_tok_s": i,
            "ui_slowdown": statistics.median(a) / statistics.median(u) - 1,
            "ui_thread_cpu_share": statistics.median(shares), "ui_thread_cpu_share_per_run": shares}


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--burst-runs", type=int,
                        help="runs of the burst (default: --runs, at least 15: a run takes a second, and "
                             "its best of runs needs many to be firm)")
    parser.add_argument("--reasoning-tokens", type=int, default=20_000)
    parser.add_argument("--answer-tokens", type=int, default=1_000)
    parser.add_argument("--pace", type=float, default=2000.0,
                        help="tokens/s of the paced run that measures UI cost per token (default 2000)")
    parser.add_argument("--steady-pace", type=float, default=100.0,
                        help="tokens/s of the steady run (a fast GPU's speed; CPU models reach 10-20)")
    parser.add_argument("--steady-tokens", type=int, default=2000)
    parser.add_argument("--scenarios", default="burst,paced,steady",
                        help="comma-separated subset of burst,paced,steady (default: all three)")
    parser.add_argument("--model", help="measure this real model instead of the scripted burst")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="also print one RESULT {json} line per scenario")
    args = parser.parse_args(argv)
    rec = harness.recorder("stream_ui", args, echo=args.json)
    if "MEDCHAT_HOME" not in os.environ:
        os.environ["MEDCHAT_HOME"] = tempfile.mkdtemp(prefix="medchat-bench-")
        atexit.register(shutil.rmtree, os.environ["MEDCHAT_HOME"], ignore_errors=True)

    from medchat.ui.app import tune_interpreter

    tune_interpreter()  # as `medchat chat` does
    if args.model:
        rec.emit(**real_model(args.model, args.runs, args.max_new_tokens))
        return 0
    chunks = script(args.reasoning_tokens, args.answer_tokens)
    total = args.reasoning_tokens + args.answer_tokens
    r = args.reasoning_tokens
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each (medians)")
    print(f"tokens: {r} reasoning (paragraph every 50) + {args.answer_tokens} answer = {total}")

    only = set(args.scenarios.split(","))

    # 1. Burst: the fake engine pushes every token as fast as it can.
    if "burst" in only:
        rec.emit(**burst_scenario(args, chunks, total, r))
    if "paced" in only:
        rec.emit(**paced_scenario(args, chunks, total, r))
    if "steady" in only:
        rec.emit(**steady_scenario(args))
    return 0


def figures(alones: list[float], ui: list[dict], **more: Any) -> dict[str, Any]:
    """The record of one scenario: medians, then every run."""
    return {"engine_alone_s": statistics.median(alones),
            "engine_under_ui_s": statistics.median(x["engine_under_ui"] for x in ui),
            "ui_slowdown": statistics.median(x["engine_under_ui"] for x in ui) / statistics.median(alones) - 1,
            "ui_thread_cpu_share": statistics.median(x["ui_share"] for x in ui),
            **more, "alone_runs_s": alones, "ui_runs": ui}


def burst_scenario(args, chunks: list[str], total: int, r: int) -> dict[str, Any]:
    again: list[float] = []
    runs = args.burst_runs or max(args.runs, 15)
    alones, burst = alternate(chunks, r, runs, control=again)
    alone = statistics.median(alones)
    under = statistics.median(x["engine_under_ui"] for x in burst)
    print(f"\n[burst: as fast as the fake engine can; {runs} runs]")
    print(f"engine alone:            {alone:7.3f} s  ({total / alone:,.0f} tok/s)")
    print(f"engine under the UI:     {under:7.3f} s  ({total / under:,.0f} tok/s)")
    print(f"UI slowdown of engine:   {100 * (under / alone - 1):+6.1f} %   (goal <= 5 %)")
    print(f"  per run:               {slowdowns(alones, burst)}")
    print(f"noise: alone vs alone:   {100 * (statistics.median(again) / alone - 1):+6.1f} %   (the engine alone "
          "once more after each UI run, against the run before it)")
    print("  per run:               " + " ".join(f"{100 * (b / a - 1):+.0f}%" for a, b in zip(alones, again)))
    # Noise on a shared box only ever adds time, so the fastest of several runs is the cost itself
    # (timeit's rule); a 0.05 s burst is too short for medians to resolve a few per cent.
    best_alone = min(alones + again)
    best_under = min(x["engine_under_ui"] for x in burst)
    print(f"best of runs:            alone {best_alone:.4f} s, under the UI {best_under:.4f} s: "
          f"{100 * (best_under / best_alone - 1):+.1f} %   (goal <= 5 %)")
    print(ui_share(burst))
    print(f"first text on screen:    {statistics.median(x['first_text'] for x in burst):7.3f} s after Enter")
    print(f"all tokens on screen:    {statistics.median(x['ui_done'] for x in burst):7.3f} s after Enter "
          "(final full render of both panes included)")
    print(f"UI takes of reasoning:   {statistics.median(x['takes'] for x in burst):7.0f}")
    return figures(alones, burst, scenario="burst", runs=runs, tokens=total, best_alone_s=best_alone,
                   best_under_ui_s=best_under, best_slowdown=best_under / best_alone - 1,
                   noise_alone_vs_alone=statistics.median(again) / alone - 1,
                   first_text_s=statistics.median(x["first_text"] for x in burst),
                   all_on_screen_s=statistics.median(x["ui_done"] for x in burst), control_runs_s=again)


def paced_scenario(args, chunks: list[str], total: int, r: int) -> dict[str, Any]:
    # 2. Paced: tokens arrive steadily, so the UI takes many batches and per-token cost is measurable.
    delay = 1.0 / args.pace
    alones, paced = alternate(chunks, r, args.runs, delay)
    alone_p = statistics.median(alones)
    under_p = statistics.median(x["engine_under_ui"] for x in paced)
    early = statistics.median(x["cost_early"] for x in paced)
    late = statistics.median(x["cost_late"] for x in paced)
    print(f"\n[paced: fake engine sleeps {delay * 1e3:.2f} ms per token, nominal {args.pace:,.0f} tok/s]")
    print(f"engine alone:            {alone_p:7.3f} s  ({total / alone_p:,.0f} tok/s)")
    print(f"engine under the UI:     {under_p:7.3f} s  ({total / under_p:,.0f} tok/s)")
    print(f"UI slowdown of engine:   {100 * (under_p / alone_p - 1):+6.1f} %   (goal <= 5 %)")
    print(f"  per run:               {slowdowns(alones, paced)}")
    print(ui_share(paced))
    print(f"UI takes of reasoning:   {statistics.median(x['takes'] for x in paced):7.0f}")
    print(f"UI CPU per token ~1k:    {early * 1e6:7.1f} us  (reasoning tokens 250-2,250)")
    print(f"UI CPU per token ~20k:   {late * 1e6:7.1f} us  (reasoning tokens {r - 2250:,}-{r - 250:,})")
    print(f"late / early:            {late / early:7.2f} x   (goal <= 1.2 x)")
    print("  per run:               " + " ".join(f"{x['cost_late'] / x['cost_early']:.2f}" for x in paced))
    return figures(alones, paced, scenario="paced", runs=args.runs, tokens=total, pace_tok_s=args.pace,
                   ui_cpu_per_token_early_s=early, ui_cpu_per_token_late_s=late, late_over_early=late / early)


def steady_scenario(args) -> dict[str, Any]:
    # 3. Steady: a realistic speed, where the UI's cost per token matters, not its batching.
    steady = script(args.steady_tokens - args.steady_tokens // 10, args.steady_tokens // 10)
    delay = 1.0 / args.steady_pace
    alones, ui_s = alternate(steady, args.steady_tokens - args.steady_tokens // 10, args.runs, delay)
    alone_s = statistics.median(alones)
    under_s = statistics.median(x["engine_under_ui"] for x in ui_s)
    print(f"\n[steady: {args.steady_tokens:,} tokens at a nominal {args.steady_pace:,.0f} tok/s]")
    print(f"engine alone:            {alone_s:7.3f} s  ({args.steady_tokens / alone_s:,.1f} tok/s)")
    print(f"engine under the UI:     {under_s:7.3f} s  ({args.steady_tokens / under_s:,.1f} tok/s)")
    print(f"UI slowdown of engine:   {100 * (under_s / alone_s - 1):+6.1f} %   (goal <= 5 %)")
    print(f"  per run:               {slowdowns(alones, ui_s)}")
    print(ui_share(ui_s))
    return figures(alones, ui_s, scenario="steady", runs=args.runs, tokens=args.steady_tokens,
                   pace_tok_s=args.steady_pace)


if __name__ == "__main__":
    sys.exit(main())
