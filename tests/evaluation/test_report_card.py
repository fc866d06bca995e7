"""The report card's scoring, run through the real engine session code on a scripted backend."""

from __future__ import annotations

import io

from medchat.cli.reports import print_report
from medchat.config import Settings
from medchat.engine.backends.fake import FakeBackend
from medchat.evaluation.report_card import Reply, closed_and_answered, evaluate_backend
from medchat.finetune.data import Example

MC = Example("Which drug reverses benzodiazepines?\nA. Naloxone\nB. Flumazenil", "r", "B. Flumazenil",
             options=(("A", "Naloxone"), ("B", "Flumazenil")), gold="B")
OPEN = Example("Why does CKD cause anaemia?", "r", "Less erythropoietin.")


def test_closed_and_answered():
    assert closed_and_answered(Reply("thinking", "answer", 3, 1, "stop"))
    assert not closed_and_answered(Reply("", "answer only", 0, 2, "stop"))
    assert not closed_and_answered(Reply("never closed", "", 5, 0, "length_in_reasoning"))


def test_base_vs_adapter_report_card():
    backend = FakeBackend(
        [
            ["A. Naloxone"],  # base, MC row: wrong, no reasoning
            ["Kidneys make less EPO."],  # base, open row
            ["<think>", "Flumazenil antagonises.", "</think>", "B. Flumazenil"],  # adapter: right, closed
            ["<think>", "EPO falls.", "</think>", "Less EPO."],
        ],
        known_adapters={"demo": "fake-model"},
    )
    report = evaluate_backend(backend, Settings(), "demo", [MC, OPEN], "chat_template", 64, lambda m: None)
    base, tuned = report["summary"]["base"], report["summary"]["adapter"]
    assert (base["share_closed"], tuned["share_closed"]) == (0.0, 1.0)
    assert (base["mc_rows"], base["accuracy"], tuned["accuracy"]) == (1, 0.0, 1.0)
    assert tuned["reasoning_chars_mean"] > 0 and base["reasoning_chars_mean"] == 0
    assert report["rows"][0]["adapter_answer"] == "B. Flumazenil" and report["decoding"] == "greedy"
    # Both sides were asked the same prompt (the system prompt plus the question).
    assert backend.calls[0] == backend.calls[2]
    out = io.StringIO()
    print_report(report, out)
    assert "closes </think> then answers" in out.getvalue() and "100%" in out.getvalue()


def test_no_reasoning_style_reports_no_closing_share():
    backend = FakeBackend([["Answer."], ["Answer."]], known_adapters={"demo": "fake-model"})
    report = evaluate_backend(backend, Settings(), "demo", [OPEN], "medical-qa", 16, lambda m: None)
    assert report["summary"]["adapter"]["share_closed"] is None
