"""TRL's SFTTrainer, minus the GPU round trips it makes on every micro-batch.

As soon as a forward pass ends, TRL reads its metrics back to the CPU (entropy and token accuracy, each
behind a `> 0` test, and a token count), and Trainer does the same for its own token count and a NaN
check on the loss: about eight waits per micro-batch. Each one drains the GPU's queue, and the GPU then
idles while Python queues the next work: 7 % of an H100's training step (benchmarks/RESULTS.md §4).
Here the metrics stay on the GPU until a line is logged, and tokens are counted from tensor shapes.
What is computed, and logged, is unchanged.
"""

from __future__ import annotations

from typing import Any


def sft_trainer_class() -> type:
    """The SFTTrainer subclass medchat trains with (imports TRL, so only when training)."""
    import torch
    import trl.trainer.sft_trainer as trl_sft
    from trl import SFTTrainer

    fused_head = hasattr(trl_sft, "add_fused_lm_head")  # TRL >= 1.15 trains through a fused LM head

    class SFTTrainerWithoutSyncs(SFTTrainer):
        _pending: Any = None  # [label tokens, entropy sum, top-1 hits] since the last log, on the GPU

        def _plain_training_loss(self, return_outputs: bool) -> bool:
            """The case this class handles: a training step of TRL's fused-head NLL loss on one GPU (TRL >= 1.15).
            Everything else (evaluation, custom or smoothed losses, MoE aux loss, several processes) is TRL's."""
            return (
                not return_outputs
                and self.model.training
                and fused_head
                and self.compute_loss_func is None
                and self.label_smoother is None
                and self.args.loss_type == "nll"
                and not self.aux_loss_enabled
                and self.accelerator.num_processes == 1
            )

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self._plain_training_loss(return_outputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            # As TRL computes it: per-token log-probabilities from the fused LM head, zero where ignored.
            outputs = model(**inputs, fused_lm_head=True)
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -outputs.log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            step = torch.stack([outputs.label_mask.sum().float(), outputs.entropy.detach().sum().float(),
                                outputs.is_top1.sum().float()])
            self._pending = step if self._pending is None else self._pending + step
            return loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if self._pending is not None:
                tokens, entropy, hits = self._pending.tolist()  # the one wait, once per logged line
                self._pending = None
                if tokens > 0:
                    self._metrics["train"]["entropy"].append(entropy / tokens)
                    self._metrics["train"]["mean_token_accuracy"].append(hits / tokens)
            super().log(logs, start_time)

        def _track_num_input_tokens(self, inputs):
            # Concatenated batches hold no padding: their token count is their shape, known on the CPU.
            if self.args.include_num_input_tokens_seen == "all" and self.accelerator.num_processes == 1:
                self.state.num_input_tokens_seen += inputs["input_ids"].numel()
            else:
                super()._track_num_input_tokens(inputs)

    return SFTTrainerWithoutSyncs
