"""The parity gate: does an exported model answer like the adapter on its base?

Before an export reports success, what was written is loaded back (a merged folder with
``from_pretrained``, a GGUF file with transformers' GGUF reader, which dequantises it) and compared
with the *reference*: the base model in float32 with the LoRA attached, unmerged, as PEFT runs it.
Everything runs in float32 on the CPU or GPU the export used, so the only differences measured are
the ones the written file brings (merging, rounding to 16 bits, quantising).

For a few fixed prompts, rendered exactly as medchat renders them for this adapter:

* greedy replies (``NEW_TOKENS`` tokens): the export's own, against the reference's;
* teacher-forced along the reference's greedy path: the share of its tokens the export also puts
  first, and, where they differ, whether the reference itself was at a near-tie (its top two logits
  within ``TIE_MARGIN``: any rounding of the weights can flip such a choice);
* the adapter's effect, the change in (centred) logits with vs without the adapter: the share of it
  the export keeps, ``<E_export, E_ref> / |E_ref|^2`` with ``E_export = logits(export) - logits(base)``
  (1 = all of it, 0 = as if the adapter were dropped), and the cosine of the two.
  benchmarks/adapter_fidelity.py measures the same effect in more detail.

A 16-bit export (merged folder, f16/bf16/f32 GGUF) must give the same tokens: every teacher-forced
disagreement must be a near-tie, and it must keep at least ``MIN_EFFECT_16BIT`` of the effect. A
quantised file must agree on ``MIN_AGREEMENT`` of the tokens and keep ``MIN_EFFECT_QUANT`` of the effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from medchat.chatformat.messages import Message
from medchat.chatformat.prompt import render_prompt
from medchat.errors import MedchatError
from medchat.store.manifest import ParityRecord

Say = Callable[[str], None]

# Short questions in the bundled sample's style; none of them is a training row of the sample.
PROMPTS = (
    "A 67-year-old man has crushing chest pain radiating to his left arm for 40 minutes. What is the first "
    "investigation?",
    "Why does iron deficiency cause a microcytic anaemia?",
    "Which electrolyte disturbance is typical of a patient taking a loop diuretic?",
)
NEW_TOKENS = 24
TIE_MARGIN = 0.15  # logits; rounding merged weights to bf16 moves this model's logits by up to ~0.1
MIN_EFFECT_16BIT = 0.9
MIN_AGREEMENT = 0.9
MIN_EFFECT_QUANT = 0.75


class ParityError(MedchatError):
    """The exported model does not behave like the adapter on its base (or cannot be read back)."""

    exit_code = 8


@dataclass
class Reference:
    """What the adapter on its base does on the fixed prompts (float32, unmerged)."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    greedy: list[list[int]] = field(default_factory=list)  # the adapter's greedy continuation per prompt
    logits: list[Any] = field(default_factory=list)  # [len(greedy), vocab] logits that chose each token
    base_logits: list[Any] = field(default_factory=list)  # the same positions, adapter switched off


def render_prompts(tokenizer: Any, style: str, system_prompt: str) -> list[str]:
    """The fixed prompts as medchat renders them for this adapter (its prompt style, its system prompt)."""
    out = []
    for question in PROMPTS:
        messages = [Message("system", system_prompt)] if system_prompt else []
        out.append(render_prompt(tokenizer, [*messages, Message("user", question)], style))
    return out


def encode(tokenizer: Any, prompt: str) -> list[int]:
    return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])


def _eos_ids(model: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.config.eos_token_id
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]


def _greedy(model: Any, ids: list[int], new_tokens: int, eos: list[int]) -> list[int]:
    import torch

    inputs = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=new_tokens,
                             do_sample=False, temperature=None, top_p=None, top_k=None,
                             eos_token_id=eos or None, pad_token_id=(eos or [0])[0])
    return out[0, len(ids):].tolist()


def _path_logits(model: Any, ids: list[int], continuation: list[int]) -> Any:
    """Logits (float32, CPU) at the positions that predict each token of ``continuation``."""
    import torch

    seq = torch.tensor([ids + continuation], device=model.device)
    with torch.inference_mode():
        logits = model(seq).logits[0, len(ids) - 1 : len(ids) + len(continuation) - 1]
    return logits.float().cpu()


def reference(peft_model: Any, tokenizer: Any, prompts: list[str], say: Say = lambda _m: None) -> Reference:
    """Run the adapter (attached, unmerged, float32) on the prompts; also the base alone on the same path."""
    ref = Reference(prompts=prompts, prompt_ids=[encode(tokenizer, p) for p in prompts])
    run_reference(peft_model, ref, say)
    return ref


def run_reference(peft_model: Any, ref: Reference, say: Say = lambda _m: None) -> None:
    """Fill in ``ref``'s greedy replies and logits (before the adapter is merged away)."""
    if ref.greedy:
        return
    say(f"parity reference: the adapter on its base, {len(ref.prompts)} prompts x {NEW_TOKENS} greedy tokens")
    eos = _eos_ids(peft_model)
    for ids in ref.prompt_ids:
        greedy = _greedy(peft_model, ids, NEW_TOKENS, eos)
        ref.greedy.append(greedy)
        ref.logits.append(_path_logits(peft_model, ids, greedy))
        with peft_model.disable_adapter():
            ref.base_logits.append(_path_logits(peft_model, ids, greedy))


def compare(model: Any, ref: Reference, *, sixteen_bit: bool) -> ParityRecord:
    """The exported model (loaded back, float32) against the reference: the figures and the verdict."""
    import torch

    eos = _eos_ids(model)
    same = True
    matched = total = free_matched = free_total = near_ties = 0
    dot = norm_ref = norm_exp = 0.0
    hard_mismatch = 0
    for ids, greedy, ref_logits, base_logits in zip(ref.prompt_ids, ref.greedy, ref.logits, ref.base_logits):
        own = _greedy(model, ids, NEW_TOKENS, eos)
        same = same and own == greedy
        free_matched += sum(a == b for a, b in zip(own, greedy))
        free_total += max(len(own), len(greedy))

        logits = _path_logits(model, ids, greedy)
        picks = logits.argmax(-1)
        wanted = torch.tensor(greedy)
        agree = picks == wanted
        matched += int(agree.sum())
        total += len(greedy)
        for pos in (~agree).nonzero().flatten().tolist():
            gap = float(ref_logits[pos, greedy[pos]] - ref_logits[pos, int(picks[pos])])
            if gap <= TIE_MARGIN:
                near_ties += 1
            else:
                hard_mismatch += 1

        def centred(x: Any) -> Any:
            return x - x.mean(-1, keepdim=True)

        e_ref = centred(ref_logits) - centred(base_logits)
        e_exp = centred(logits) - centred(base_logits)
        dot += float((e_ref * e_exp).sum())
        norm_ref += float((e_ref * e_ref).sum())
        norm_exp += float((e_exp * e_exp).sum())

    kept = dot / norm_ref if norm_ref > 0 else 0.0
    cosine = dot / (norm_ref**0.5 * norm_exp**0.5) if norm_ref > 0 and norm_exp > 0 else 0.0
    agreement = matched / total if total else 0.0
    if sixteen_bit:
        rule = (f"16-bit: same greedy tokens (disagreements only at near-ties, margin {TIE_MARGIN}) and "
                f"effect kept >= {MIN_EFFECT_16BIT}")
        passed = hard_mismatch == 0 and kept >= MIN_EFFECT_16BIT
    else:
        rule = f"quantised: token agreement >= {MIN_AGREEMENT} and effect kept >= {MIN_EFFECT_QUANT}"
        passed = agreement >= MIN_AGREEMENT and kept >= MIN_EFFECT_QUANT
    return ParityRecord(
        passed=passed, prompts=len(ref.prompts), new_tokens=NEW_TOKENS, same_tokens=same,
        token_agreement=round(agreement, 4), free_running_agreement=round(free_matched / free_total, 4) if free_total else 0.0,
        near_ties=near_ties, effect_kept=round(kept, 4), effect_cosine=round(cosine, 4), rule=rule,
    )


def verdict_line(record: ParityRecord) -> str:
    """One line of figures, for the success message and for the failure."""
    same = "same greedy tokens" if record.same_tokens else "greedy tokens differ"
    ties = f", {record.near_ties} near-tie(s)" if record.near_ties else ""
    return (f"{same} ({record.free_running_agreement:.0%} by position{ties}), token agreement "
            f"{record.token_agreement:.1%}, adapter effect kept {record.effect_kept:.1%} (cosine {record.effect_cosine:.3f})")


def enforce(record: ParityRecord, what: str) -> None:
    if not record.passed:
        raise ParityError(f"parity gate failed for {what}: {verdict_line(record)}; needed {record.rule}; nothing was written")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_tokenizer(loaded_tokenizer: Any, ref: Reference, what: str) -> None:
    """The written tokenizer must encode every prompt into the same ids as the base model's."""
    for prompt, want in zip(ref.prompts, ref.prompt_ids):
        got = encode(loaded_tokenizer, prompt)
        if got != want:
            at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise ParityError(
                f"{what}: its tokenizer encodes the parity prompts differently from the base model's "
                f"(first difference at token {at} of {len(want)}); it is not this model's tokenizer"
            )


def load_back_folder(folder: Path) -> tuple[Any, Any]:
    """A merged folder as a user would load it: safetensors, no peft, float32 for the comparison."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ParityError(f"cannot read back {folder}: {first_line(exc)}") from exc
    return model.eval(), tok
