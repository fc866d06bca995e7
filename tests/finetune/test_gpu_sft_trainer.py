"""medchat's SFTTrainer computes TRL's loss and metrics without waiting on the GPU (CUDA only).

GPU_TEST_MODEL names a local model folder, e.g. the 2-layer one the GPU kit's mkmodel.py writes:
`GPU_TEST_MODEL=/tmp/tiny python -m pytest -m gpu tests/finetune/test_gpu_sft_trainer.py`.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not os.environ.get("GPU_TEST_MODEL"), reason="set GPU_TEST_MODEL to a model folder"),
]


def test_loss_and_metrics_match_trl(tmp_path):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from medchat.finetune.sft_trainer import sft_trainer_class

    path = os.environ["GPU_TEST_MODEL"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map={"": 0})
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    rows = [{"prompt": f"Question {i}: what causes anaemia?", "completion": f" Iron deficiency, case {i}."}
            for i in range(8)]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, bf16=True, report_to=[],
                     max_length=64, completion_only_loss=True)
    trainer = sft_trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model.train()
    with torch.no_grad():
        ours = trainer.compute_loss(model, dict(batch))
        tokens, entropy, hits = trainer._pending.tolist()
        trainer._metrics["train"].clear()
        theirs = SFTTrainer.compute_loss(trainer, model, dict(batch))
    assert torch.allclose(ours.float(), theirs.float(), rtol=1e-5), (ours, theirs)
    assert tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert entropy / tokens == pytest.approx(trainer._metrics["train"]["entropy"][0], rel=1e-4)
    assert hits / tokens == pytest.approx(trainer._metrics["train"]["mean_token_accuracy"][0], rel=1e-4)

    trainer.log({"loss": float(ours)})  # the pending sums become the logged averages, then reset
    assert trainer._pending is None
