"""Load test for `medchat serve` on loopback: N concurrent streaming clients (the official openai client).

Every reply is checked complete and uninterleaved; it reports requests/s and time to first token.

    python benchmarks/serve_load.py                      # scripted model: the server's own overhead
    python benchmarks/serve_load.py --backend embedded   # the real embedded SmolLM2 on this machine
    python benchmarks/serve_load.py --url http://127.0.0.1:8000/v1 --model NAME   # any running server
    PYTHONPATH=/tmp/old-checkout python benchmarks/serve_load.py --note before    # another checkout's server

The report names the medchat checkout it imported (and its commit); --save keeps each run in
results/<date>-<device>/serve_load.jsonl with the harness's record (device, versions, command).

With one model and one generation at a time, time to first token grows with the queue: the p95 is
roughly (clients - 1) x the time of one reply. That is the design (no batching), measured here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import harness


@dataclass
class Result:
    question: str
    ttft: float
    seconds: float
    reasoning: str
    answer: str
    finish: str | None
    chunks: int


def one_request(url: str, model: str, key: str, question: str, max_tokens: int) -> Result:
    import openai

    api = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    start = time.perf_counter()
    ttft = None
    reasoning, answer, finish, chunks = [], [], None, 0
    stream = api.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True, max_tokens=max_tokens,
        temperature=0,
    )
    for chunk in stream:
        for choice in chunk.choices:
            r = getattr(choice.delta, "reasoning_content", None) or ""
            a = choice.delta.content or ""
            if (r or a) and ttft is None:
                ttft = time.perf_counter() - start
            reasoning.append(r)
            answer.append(a)
            chunks += 1
            finish = choice.finish_reason or finish
    return Result(question, ttft if ttft is not None else float("nan"), time.perf_counter() - start,
                  "".join(reasoning), "".join(answer), finish, chunks)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class EchoModel:
    """A scripted backend whose reply names the question, so interleaving would be caught."""

    def __init__(self, tokens: int, delay: float) -> None:
        from medchat.engine.backends.fake import FakeBackend

        self.tokens, self.delay = tokens, delay
        self.fake = FakeBackend(delay=delay)
        self.info = self.fake.info

    def expected(self, q: str) -> tuple[str, str]:
        half = self.tokens // 2
        return "".join(f"{q}.r{i} " for i in range(half)), "".join(f"{q}.a{i} " for i in range(self.tokens - half))

    def stream(self, messages, settings, cancel, continue_final=False):
        q = messages[-1].content
        half = self.tokens // 2
        self.fake.replies.append(["<think>", *[f"{q}.r{i} " for i in range(half)], "</think>",
                                  *[f"{q}.a{i} " for i in range(self.tokens - half)]])
        return self.fake.stream(messages, settings, cancel, continue_final)

    def count_tokens(self, messages):
        return self.fake.count_tokens(messages)

    def set_adapter(self, adapter):
        self.fake.set_adapter(adapter)

    def close(self):
        pass


def code_measured(module_file: str) -> str:
    """The checkout medchat was imported from, and its commit: PYTHONPATH picks the code under test."""
    folder = Path(module_file).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return f"{folder}@{head}" if head else str(folder)


def stack_versions() -> dict[str, str]:
    out = {}
    for name in ("fastapi", "starlette", "uvicorn", "h11", "pydantic", "httpx", "openai"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser(__doc__)
    ap.add_argument("--backend", choices=["fake", "embedded"], default="fake")
    ap.add_argument("--url", help="benchmark an already running server instead of starting one")
    ap.add_argument("--model", default="", help="model id for --url (default: the first listed)")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--clients", type=int, default=16, help="concurrent streaming clients")
    ap.add_argument("--requests", type=int, default=64, help="requests in total")
    ap.add_argument("--tokens", type=int, default=64, help="scripted tokens per reply (fake) / max_tokens")
    ap.add_argument("--token-delay", type=float, default=0.002, help="seconds per scripted token (fake)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (instead of the table)")
    args = ap.parse_args(argv)
    record = harness.recorder("serve_load", args, echo=False)
    import medchat

    check = None
    with contextlib.ExitStack() as stack:
        if args.url:
            url, model = args.url, args.model
            if not model:
                import openai

                model = openai.OpenAI(base_url=url, api_key=args.api_key).models.list().data[0].id
        else:
            from medchat.server import ServerConfig
            from medchat.server.background import serve_in_thread

            if args.backend == "fake":
                backend = EchoModel(args.tokens, args.token_delay)
                check = backend.expected
            else:
                from medchat.config import load_settings

                try:
                    from medchat.engine.backends import open_local
                except ImportError:  # the package layout before the 2026-11 restructuring (before/after runs)
                    from medchat.engine.backends.local import open_local

                backend = open_local(load_settings({"model": "smollm2", "offline": True}), lambda m: print(m, file=sys.stderr))
            server = stack.enter_context(serve_in_thread(backend, config=ServerConfig()))
            url, model = server.base_url, server.models.default

        questions = [f"q{i:03d}" for i in range(args.requests)]
        if args.backend == "embedded" and not args.url:
            questions = [f"Question {i}: name one cause of anaemia." for i in range(args.requests)]
        # The scripted reply is exactly --tokens long plus its two tags; never cut it short.
        budget = args.tokens + 2 if check else args.tokens
        one_request(url, model, args.api_key, "warm-up", budget)  # load caches, first-call costs
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(lambda q: one_request(url, model, args.api_key, q, budget), questions))
        wall = time.perf_counter() - start

    bad = []
    for r in results:
        if r.finish not in ("stop", "length"):
            bad.append(f"{r.question}: finish_reason {r.finish}")
        elif check and (r.reasoning, r.answer) != check(r.question):
            bad.append(f"{r.question}: incomplete or interleaved reply")
    ttfts = [r.ttft for r in results]
    report = {
        "backend": "url" if args.url else args.backend,
        "clients": args.clients,
        "requests": len(results),
        "tokens_per_reply": args.tokens,
        "token_delay_s": args.token_delay if args.backend == "fake" and not args.url else None,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 2),
        "ttft_p50_s": round(percentile(ttfts, 0.50), 4),
        "ttft_p95_s": round(percentile(ttfts, 0.95), 4),
        "ttft_min_s": round(min(ttfts), 4),
        "reply_p50_s": round(statistics.median(r.seconds for r in results), 4),
        "all_complete_and_uninterleaved": not bad,
        "medchat": code_measured(medchat.__file__),  # which checkout was imported (before/after runs)
        "server_stack": stack_versions(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
                   f"python {platform.python_version()}",
    }
    record.emit(**report)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:32} {v}")
        for line in bad[:10]:
            print("FAILED", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
