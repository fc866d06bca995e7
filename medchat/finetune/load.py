"""Load phase: the tokenizer, the base model and its LoRA layers.

Weights load through the loading core (medchat.models.loading), as chat's do: Unsloth on CUDA when
installed, otherwise transformers + peft. Never through a chat backend.
"""

from __future__ import annotations

from typing import Any

from medchat.errors import UsageError
from medchat.finetune.plan import Plan, Say
from medchat.finetune.train import batching, gradient_checkpointing, micro_batch


def load_tokenizer(plan: Plan) -> Any:
    from transformers import AutoTokenizer

    from medchat.models.loading import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(plan.resolved.source, local_files_only=plan.resolved.local_only)
    ensure_pad_token(tok)
    return tok


def load_model(plan: Plan, say: Say) -> tuple[Any, Any]:
    """(peft model with LoRA layers, tokenizer)."""
    s, ft = plan.settings, plan.settings.finetune
    say(f"loading {plan.resolved.name} on {plan.device} ({plan.backend})")
    if plan.backend == "unsloth":
        from medchat.models.loading import load_unsloth_model

        # FastModel, not FastLanguageModel: its stock transformers layers run as one compiled region each,
        # packed rows included; FastLanguageModel's own Llama layers take packed rows eagerly, which left
        # an H100 waiting on Python (0.6-0.8x the raw loop against 0.9-1.0x, benchmarks/RESULTS.md).
        model, tok = load_unsloth_model(plan.resolved, dtype=s.dtype, quantize=s.quantize,
                                        max_seq_length=micro_batch(plan, batching(plan))[1], generic=True)
        from unsloth import FastModel

        gc_mode = {"auto": "unsloth", "unsloth": "unsloth", "on": True, "off": False}[ft.gradient_checkpointing]
        model = FastModel.get_peft_model(
            model, r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout, bias="none",
            target_modules=list(ft.target_modules), use_gradient_checkpointing=gc_mode,
            random_state=ft.seed, use_rslora=ft.use_rslora,
        )
        return model, tok
    from medchat.models.loading import load_hf_model

    # On CPU, float32 weights under bf16 autocast train several times faster than bf16 weights.
    dtype = "float32" if plan.device == "cpu" and s.dtype == "auto" else s.dtype
    model, tok = load_hf_model(plan.resolved, device=plan.device, dtype=dtype, quantize=s.quantize, for_training=True)
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    torch.manual_seed(ft.seed)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing(plan))
    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in ft.target_modules if m not in present]
    if len(missing) == len(ft.target_modules):
        raise UsageError(f"none of the target modules {list(ft.target_modules)} exist in {plan.resolved.name}")
    config = LoraConfig(
        r=ft.lora_r, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout, bias="none", task_type="CAUSAL_LM",
        target_modules=[m for m in ft.target_modules if m in present], use_rslora=ft.use_rslora,
    )
    return get_peft_model(model, config), tok
