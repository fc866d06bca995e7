"""LoRA fine-tuning, one module per phase, run in order by run.py:

plan.py (checks that need no model) → load.py (tokenizer, model, LoRA) → rows.py (tokenised, masked
rows from data.py's examples) → train.py (TRL glue, batching, Ctrl+C; progress.py draws the progress)
→ save.py (manifest, merged model, push, --resume state). packing.py regroups packed rows;
recipes.py holds the bundled recipes; distributed.py runs the same phases on several GPUs (torchrun,
`accelerate launch`, --gpus) and caches.py keeps compiled kernels in medchat's cache folder. The CLI
prints what these return.

Nothing in this package imports torch, transformers or textual at module level.
"""
