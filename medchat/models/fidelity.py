"""Does the fast decoder run the adapter that was trained? A probe, run when an adapter loads.

The adapter's *effect* is what it changes in the next-token logits (with the adapter − without). The
reference computes it the way training did: PEFT's LoRA, unmerged, on the weights as loaded. The probe
computes the same on the decode loop (int4 or 16-bit base, LoRA added in 16-bit) and reports the cosine
between the two effects over every position of one fixed prompt — one forward pass each, well under a
second on a GPU. Measured on real weights (benchmarks/RESULTS.md §5): a 16-bit base keeps ≥ 0.997; an
int4 base keeps about 0.74 on the embedded model, which is why the chat says so below ``WARN_BELOW``.
"""

from __future__ import annotations

from typing import Any, Sequence

PROBE_QUESTION = (
    "A 64-year-old woman has had fever, a productive cough and right-sided chest pain for three days. "
    "What is the most likely diagnosis, and which test confirms it?"
)
WARN_BELOW = 0.9  # effect cosine under which the chat and `ask` say the adapter is not run as trained


def reference_effect(peft_model: Any, prompt_ids: Sequence[int]) -> Any:
    """The adapter's effect on the logits at every position, by PEFT (float32, on the CPU)."""
    import torch

    device = next(p.device for p in peft_model.parameters() if p.device.type != "meta")
    ids = torch.tensor([list(prompt_ids)], device=device)
    with torch.inference_mode():
        with_adapter = peft_model(input_ids=ids).logits[0].float()
        with peft_model.disable_adapter():
            without = peft_model(input_ids=ids).logits[0].float()
    return (with_adapter - without).cpu()


def decoder_effect(decoder: Any, prompt_ids: Sequence[int]) -> Any:
    """The same effect as the decode loop computes it."""
    with_adapter = decoder.prompt_logits(prompt_ids)
    with decoder.without_adapter():
        without = decoder.prompt_logits(prompt_ids)
    return (with_adapter - without).cpu()


def effect_cosine(reference: Any, candidate: Any) -> float:
    """Cosine between two effects, over all positions and the whole vocabulary."""
    import torch

    ref, got = reference.flatten().double(), candidate.flatten().double()
    return float(torch.nn.functional.cosine_similarity(ref, got, dim=0))


def describe(cosine: float | None, weights: str) -> str:
    """One line for the status and `ask`: how much of the adapter's effect the decode loop keeps."""
    if cosine is None:
        return ""
    line = f"adapter effect kept: {cosine:.3f} (cosine with PEFT's on the loaded weights, {weights} decode loop)"
    if cosine < WARN_BELOW:
        line += "; --quantize none or --decoder generate runs it as trained"
    return line
