"""`medchat bench`: speed on this machine, in one run, with one prompt and one set of settings.

Measured, each in its own subprocess (so that loads, memory and Unsloth's patches do not leak
between them):
* engine   - medchat's chat engine: ``stream_events`` over the backend the settings open (text
             reaching the consumer): time to first text, decode tokens/s;
* generate - the same model loaded the way medchat's generate() path loads it, then plain
             ``model.generate`` for the same number of tokens;
* unsloth  - Unsloth ``FastLanguageModel.for_inference`` + generate (CUDA, when installed);
* startup  - ``medchat --help`` in a fresh interpreter;
* train    - with ``--train``: ``medchat finetune`` on generated medical-o1-shaped rows (median about
             800 tokens, tail about 1,500), effective (non-padding) tokens/s and peak GPU memory.
Decode figures are greedy, after one warm-up run; tokens/s excludes the first token (that is TTFT).

Modules: ``measure`` runs the measurements and collects one result dict (no torch imported there);
``worker`` is the subprocess side (``python -m medchat.bench.worker KIND SPEC.json``); ``rows`` writes
the generated training rows (``benchmarks/train_probe.py`` uses them too). The command and its table
are ``medchat.cli.bench``; the benchmark scripts of the repository (``benchmarks/``) are not part of
the package.
"""

from __future__ import annotations

from medchat.bench.measure import run_bench

__all__ = ["run_bench"]
