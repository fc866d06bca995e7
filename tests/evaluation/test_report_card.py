"""The paired evaluation run through the real engine session code on a scripted backend."""

from __future__ import annotations

import io
import json

from medchat.chatformat.example import Example
from medchat.cli.reports import format_eval_line, print_evaluation
from medchat.engine.backends.fake import FakeBackend
from medchat.evaluation.benchmarks import Benchmark, heldout_items
from medchat.evaluation.record import manifest_entry, public_summary, save_report
from medchat.evaluation.report_card import evaluate_items
from medchat.evaluation.run import EvalSettings, Reply, closed_and_answered

MC = Example("Which drug reverses benzodiazepines?\nA. Naloxone\nB. Flumazenil", "r", "B. Flumazenil",
             options=(("A", "Naloxone"), ("B", "Flumazenil")), gold="B")
OPEN = Example("Why does CKD cause anaemia?", "r", "Less erythropoietin.")


def test_closed_and_answered():
    assert closed_and_answered(Reply("thinking", "answer", 3, 1, "stop"))
    assert not closed_and_answered(Reply("", "answer only", 0, 2, "stop"))
    assert not closed_and_answered(Reply("never closed", "", 5, 0, "length_in_reasoning"))


def test_base_vs_adapter_on_held_out_rows(tmp_path):
    backend = FakeBackend(
        [
            ["A. Naloxone"],  # base, MC row: wrong, no reasoning
            ["Kidneys make less EPO."],  # base, open row
            ["<think>", "Flumazenil antagonises.", "</think>", "B. Flumazenil"],  # adapter: right, closed
            ["<think>", "EPO falls.", "</think>", "Less EPO."],
        ],
        known_adapters={"demo": "fake-model"},
    )
    bench = Benchmark("heldout", "heldout", heldout_items([MC, OPEN], [3, 7]))
    report, records = evaluate_items(backend, bench, bench.items, "demo", EvalSettings(64), lambda m: None)
    base, tuned = report["base"], report["adapter"]
    assert (base["closed_rate"], tuned["closed_rate"]) == (0.0, 1.0)
    assert (base["scored"], base["accuracy"], tuned["accuracy"]) == (1, 0.0, 1.0)
    assert report["paired"]["difference"] == 1.0 and report["paired"]["mcnemar_p"] == 1.0
    assert records[0]["adapter"]["extracted"] == "B" and records[0]["gold"] == "B" and records[1]["gold"] == ""
    assert backend.calls[0] == backend.calls[2]  # both sides asked the same prompt
    summary = public_summary(report)
    assert list(summary)[:8] == ["benchmark", "rows", "skipped", "contaminated", "think_budget", "base", "adapter",
                                 "paired"]
    path = save_report(report, records, tmp_path / "evals", relative_to=tmp_path)
    assert report["report"] == f"evals/{path.name}"
    lines = (tmp_path / report["rows_file"]).read_text().splitlines()
    assert json.loads(lines[0])["adapter"]["answer"] == "B. Flumazenil"
    out = io.StringIO()
    print_evaluation(report, out)
    assert "McNemar exact p" in out.getvalue() and "closes </think> then answers" in out.getvalue()
    assert "accuracy 0% → 100%" in format_eval_line(manifest_entry(report))


def test_base_alone_has_no_pairing():
    backend = FakeBackend([["The answer is B"]])
    bench = Benchmark("heldout", "heldout", heldout_items([MC], [0]))
    report, _ = evaluate_items(backend, bench, bench.items, None, EvalSettings(16), lambda m: None)
    assert report["adapter"] is None and report["paired"] is None and report["base"]["accuracy"] == 1.0
