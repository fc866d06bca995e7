"""Real CPU fine-tuning of the embedded SmolLM2 (slow: each test trains a few real steps)."""

from __future__ import annotations

import json
import shutil

import pytest

from medchat.cli.main import main
from medchat.finetune import checkpoints, plan, train
from medchat.store import adapters

QUESTION = "A 58-year-old man has crushing central chest pain radiating to the left arm. What is the diagnosis?"


def ask(capsys, *extra: str) -> str:
    capsys.readouterr()
    main(["ask", QUESTION, "--model", "smollm2", "--temperature", "0", "--max-new-tokens", "48", "--json", *extra])
    return capsys.readouterr().out


@pytest.mark.slow
def test_finetune_creates_an_adapter_that_ask_loads_and_that_changes_output(embedded_model, capsys):
    main(["finetune", "--model", "smollm2", "--dataset", "sample", "--samples", "16", "--dry-run"])
    dry = capsys.readouterr().out
    assert "tokens per row: min" in dry and "<think>" in dry and "nothing was trained" in dry
    assert [a for a in adapters.list_adapters() if not a.bundled] == []

    # The issue's own command, at the default ("auto") learning rate: 1e-3 for a model this small.
    main(["finetune", "--model", "smollm2", "--dataset", "sample", "--samples", "16", "--max-steps", "3",
          "--eval-rows", "1", "--eval-max-new-tokens", "8", "--name", "smoke"])
    out = capsys.readouterr().out
    assert "adapter smoke saved" in out and "medchat --model smollm2 --adapter smoke" in out

    folder = adapters.store_dir() / "smoke"
    manifest = json.loads((folder / "medchat.json").read_text())
    assert manifest["training"]["steps"] == 3
    assert manifest["settings"]["finetune"]["learning_rate"] == 1e-3  # "auto" settled for a 135M model
    assert len(manifest["dataset"]["train_indices"]) == 16 and len(manifest["dataset"]["eval_indices"]) == 1
    assert not set(manifest["dataset"]["train_indices"]) & set(manifest["dataset"]["eval_indices"])
    assert manifest["prompt_style"] == "chat_template" and manifest["chat_template_hash"].startswith("sha256:")
    assert manifest["base_model"]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # PEFT's own files name the hub id; the local folder the weights came from stays in the manifest only.
    peft_config = json.loads((folder / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    local = manifest["base_model"]["source"]
    assert local not in (folder / "README.md").read_text() and local not in json.dumps(peft_config)
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest["versions"])
    assert manifest["losses"]["final_train"] is not None
    assert (folder / "report.json").is_file() and "adapter" in manifest["eval"]
    assert adapters.stale_temporaries() == [] and not (plan.runs_dir() / "smoke").exists()

    base = json.loads(ask(capsys))
    tuned = json.loads(ask(capsys, "--adapter", "smoke"))
    assert (base["reasoning"], base["answer"]) != (tuned["reasoning"], tuned["answer"])


@pytest.mark.slow
def test_stop_saves_a_checkpoint_and_resume_finishes_the_run_and_merges(embedded_model, monkeypatch, capsys):
    real_enter = train.StopFlag.__enter__

    def stop_at_once(self):  # as if Ctrl+C arrived during the first step
        real_enter(self)
        self.requested = True
        return self

    monkeypatch.setattr(train.StopFlag, "__enter__", stop_at_once)
    with pytest.raises(SystemExit) as stopped:
        # --learning-rate 1e-2: two steps at the auto 1e-3 change less than 16-bit rounding keeps, and the
        # merge's parity gate (rightly) refuses a merged model that lost the adapter
        main(["finetune", "--model", "smollm2", "--dataset", "sample", "--samples", "8", "--max-steps", "2",
              "--learning-rate", "1e-2", "--eval-rows", "0", "--merge", "--name", "resumable"])
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert "medchat finetune --resume resumable" in err
    run_dir = plan.runs_dir() / "resumable"
    assert checkpoints.last_complete(run_dir).name == "checkpoint-1"
    assert [a for a in adapters.list_adapters() if not a.bundled] == []  # nothing half-made in the store
    first = json.loads((run_dir / "checkpoint-1" / "trainer_state.json").read_text())

    # As if killed while the next checkpoint was written: a folder with only its first file. Resuming from
    # it failed ("Can't find a valid checkpoint"); it must be skipped for the last complete one.
    (run_dir / "checkpoint-2").mkdir()
    shutil.copy(run_dir / "checkpoint-1" / "adapter_model.safetensors", run_dir / "checkpoint-2")
    monkeypatch.setattr(train.StopFlag, "__enter__", real_enter)
    main(["finetune", "--resume", "resumable"])
    err = capsys.readouterr().err
    assert "skipping checkpoint-2" in err and "resuming from checkpoint-1" in err
    manifest = json.loads((adapters.store_dir() / "resumable" / "medchat.json").read_text())
    assert manifest["training"]["steps"] == 2
    # The whole run's history, not only what came after the resume.
    assert [step for step, _ in manifest["losses"]["history"]] == [1, 2]
    assert manifest["losses"]["first_train"] == round(first["log_history"][0]["loss"], 4)
    assert manifest["training"]["tokens"] > first["num_input_tokens_seen"] > 0
    merged = adapters.store_dir() / "resumable" / "merged"
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert not (plan.runs_dir() / "resumable").exists()


@pytest.mark.slow
def test_a_run_shorter_than_logging_steps_records_and_prints_its_last_loss(embedded_model, capsys):
    main(["finetune", "--model", "smollm2", "--dataset", "sample", "--samples", "8", "--max-steps", "2",
          "--logging-steps", "10", "--eval-rows", "0", "--name", "short"])
    out, err = capsys.readouterr()
    losses = json.loads((adapters.store_dir() / "short" / "medchat.json").read_text())["losses"]
    assert losses["first_train"] is not None and losses["final_train"] is not None
    assert losses["history"][-1][0] == 2
    assert f"loss {losses['first_train']} → {losses['final_train']}" in out and "None" not in out
    # Not a terminal: one plain progress line (the last step logs), no control codes.
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(progress) == 1 and progress[0].startswith("step 2/2 loss ") and "tok/s" in progress[0]
    assert "\x1b" not in progress[0] and "\r" not in progress[0]
