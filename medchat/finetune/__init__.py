"""LoRA fine-tuning: data loading and formatting (data.py), recipes, the trainer's phases, evaluation.

Nothing in this package imports torch, transformers or textual at module level.
"""
