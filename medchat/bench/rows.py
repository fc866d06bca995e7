"""Generated training rows for `medchat bench --train` (and benchmarks/train_probe.py): the shape and
lengths of medical-o1 (Question, Complex_CoT, Response), without downloading it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SENTENCES = (
    "The patient is a 64-year-old woman with progressive exertional dyspnoea over three months.",
    "Her haemoglobin is 8.1 g/dL with a mean corpuscular volume of 71 fL and low ferritin.",
    "Iron deficiency limits haem synthesis, so red cells are small and carry less haemoglobin.",
    "Occult gastrointestinal blood loss must be excluded in any older adult with iron deficiency.",
    "First, consider the differential diagnosis: thalassaemia trait, anaemia of chronic disease, "
    "sideroblastic anaemia.",
    "A low ferritin is specific for depleted iron stores, whereas inflammation raises it.",
    "Next, weigh the urgency: chest pain or syncope would call for transfusion and admission.",
    "Oral iron on alternate days improves absorption and tolerability compared with daily dosing.",
    "Colonoscopy and gastroscopy are indicated to look for a bleeding lesion or malignancy.",
    "So the most likely diagnosis is iron deficiency anaemia from chronic blood loss.",
)


def make_rows(path: Path, tokenizer: Any, n: int, seed: int = 0) -> list[int]:
    """Write ``n`` medical-o1-shaped rows (Question, Complex_CoT, Response) whose token lengths follow
    a log-normal law with median about 800 and a tail to about 1,500; returns the lengths."""
    rng = random.Random(seed)
    lengths = []
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            target = int(min(max(rng.lognormvariate(6.685, 0.33), 250), 1550))  # e^6.685 = 800
            parts: dict[str, list[str]] = {"Question": [], "Complex_CoT": [], "Response": []}
            count = 0
            while count < target:
                key = "Question" if count < target * 0.1 else ("Complex_CoT" if count < target * 0.85 else "Response")
                sentence = rng.choice(SENTENCES)
                parts[key].append(sentence)
                count += len(tokenizer(sentence + " ", add_special_tokens=False)["input_ids"])
            for key in parts:
                parts[key] = parts[key] or [SENTENCES[0]]
            row = {k: " ".join(v) for k, v in parts.items()}
            fh.write(json.dumps(row) + "\n")
            lengths.append(count)
    return lengths
