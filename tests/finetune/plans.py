"""A plan for unit tests: two rows, no model, the plain task-query-answer prompt."""

from __future__ import annotations

import dataclasses

from medchat.config import Settings
from medchat.finetune import data as D
from medchat.finetune.plan import Plan

ROWS = [D.Example("Why does CKD cause anaemia?", "Less erythropoietin.", "Reduced EPO production."),
        D.Example("What is gout? " + "Explain. " * 40, "Urate crystals deposit in joints.", "Crystal arthritis.")]


def plan(**finetune) -> Plan:
    settings = Settings()
    settings = dataclasses.replace(settings, finetune=dataclasses.replace(settings.finetune, **finetune))
    dataset = D.Dataset(D.DataSource("x", "file"), "medical-o1", ROWS)
    p = Plan(settings, "demo", dataset, D.Selection((0, 1), ()))
    p.style = "task-query-answer"
    return p
