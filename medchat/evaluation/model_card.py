"""The adapter's Hugging Face model card (``README.md`` in the adapter folder), from its manifest.

Follows the hub's conventions: a YAML metadata block (base model, library, data set, tags, and a
``model-index`` with one result per benchmark, written by ``huggingface_hub.ModelCardData``), then
what the adapter is, how it was evaluated, how to use it, its intended use and that it is not medical
advice. ``medchat finetune --push-to-hub`` uploads the folder, so the card goes with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medchat.paths import atomic_write_text

if TYPE_CHECKING:
    from medchat.store.manifest import Manifest

FILENAME = "README.md"
NOT_ADVICE = ("This adapter is a research and education artefact. It is **not a medical device** and its "
              "output is **not medical advice**: it can be wrong, incomplete or out of date. Do not use it "
              "to diagnose or treat anyone; in an emergency, call your local emergency number.")


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _ci(ci: Any) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "–"


def latest_per_benchmark(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for ev in evaluations:  # in order of creation: later ones replace earlier ones
        latest[str(ev.get("benchmark_name") or ev.get("benchmark"))] = ev
    return list(latest.values())


def render(manifest: "Manifest") -> str:
    from huggingface_hub import EvalResult, ModelCardData

    name = manifest.name or "adapter"
    data = manifest.dataset
    results = []
    for ev in latest_per_benchmark(manifest.evaluations):
        tuned = ev.get("adapter") or {}
        if tuned.get("accuracy") is None:
            continue
        results.append(EvalResult(
            task_type="question-answering", task_name="Medical question answering",
            dataset_type=str(ev.get("benchmark_id") or ev.get("benchmark_name")),
            dataset_name=str(ev.get("benchmark_name")), dataset_split=ev.get("split") or None,
            metric_type="accuracy", metric_value=tuned["accuracy"],
            metric_name=f"accuracy ({ev.get('rows')} rows, think budget {ev.get('think_budget')}, greedy)",
            verified=False,
        ))
    card = ModelCardData(
        base_model=manifest.base_model.id or None,
        library_name="peft",
        pipeline_tag="text-generation",
        tags=["medchat", "lora", "peft", "medical", "reasoning"],
        datasets=[data.id] if data.kind == "hub" and data.id else None,
        model_name=name,
        eval_results=results or None,
    )
    lines = [
        "---", card.to_yaml(), "---", "",
        f"# {name}", "",
        f"A LoRA adapter for [{manifest.base_model.id}](https://huggingface.co/{manifest.base_model.id}), "
        f"fine-tuned with medchat on "
        + (f"`{data.id}`" if data.id else "medical reasoning data")
        + (f" ({data.rows_used} rows)" if data.rows_used else "") + ". "
        "It writes its reasoning inside `<think>…</think>`, then a short answer.", "",
        "## Evaluation", "",
    ]
    evaluations = latest_per_benchmark(manifest.evaluations)
    if not evaluations:
        lines += ["Not evaluated yet (`medchat eval --adapter NAME --benchmark FILE`).", ""]
    else:
        lines += [
            "Base model and adapter answer the same rows with the same prompt, greedy decoding and thinking "
            "budget. The answer is read strictly from the text after `</think>`; a reply without a readable "
            "answer counts as wrong. Intervals are 95% bootstrap intervals; p is McNemar's exact test. Rows "
            "that also occur in the training data (same or near-duplicate question) are removed first.", "",
            "| benchmark | rows | base | adapter | difference [95% CI] | McNemar p | extraction failures "
            "(base / adapter) | think budget |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for ev in evaluations:
            base, tuned, paired = ev.get("base") or {}, ev.get("adapter") or {}, ev.get("paired") or {}
            diff = (f"{100 * paired['difference']:+.1f} pts {_ci(paired.get('ci95'))}"
                    if paired.get("difference") is not None else "–")
            lines.append(
                f"| {ev.get('benchmark_name')} | {ev.get('rows')} | {_pct(base.get('accuracy'))} "
                f"{_ci(base.get('ci95'))} | {_pct(tuned.get('accuracy'))} {_ci(tuned.get('ci95'))} | {diff} | "
                f"{paired.get('mcnemar_p', '–')} | {_pct(base.get('extraction_failure_rate'))} / "
                f"{_pct(tuned.get('extraction_failure_rate'))} | {ev.get('think_budget')} |"
            )
        lines.append("")
    lines += [
        "## How to use", "",
        "```bash",
        f"medchat --model {manifest.base_model.name or manifest.base_model.id} --adapter ./{name}",
        "```", "",
        "or with PEFT:", "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'base = AutoModelForCausalLM.from_pretrained("{manifest.base_model.id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{manifest.base_model.id}")',
        'model = PeftModel.from_pretrained(base, "PATH_OR_REPO_OF_THIS_ADAPTER")',
        "```", "",
        f"Prompt style: `{manifest.prompt_style or 'chat_template'}`"
        + (" (the system prompt the adapter was trained with is in `medchat.json`)." if manifest.system_prompt else "."),
        "",
        "## Intended use", "",
        "Studying and comparing small medical reasoning models: reading their step-by-step reasoning on "
        "exam-style questions, and measuring what a fine-tune changes. Not for clinical decisions.", "",
        "## Not medical advice", "",
        NOT_ADVICE, "",
        "## Training", "",
        f"medchat {manifest.medchat_version}, LoRA r {manifest.finetune_setting('lora_r')}, "
        f"{manifest.training.steps} steps; every setting is in `medchat.json` beside this card.", "",
    ]
    return "\n".join(lines)


def write_card(adapter_dir: Path, manifest: "Manifest") -> Path:
    path = adapter_dir / FILENAME
    atomic_write_text(path, render(manifest), mode=0o644)
    return path
