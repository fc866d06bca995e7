"""Does the fast decoder run a LoRA adapter as it was trained? Measured on real weights (issue #18).

On CUDA, medchat's fast decoder folds the LoRA into the base weights (W + s·B·A, in bf16) and rounds
the sum to int4 (torchao's tinygemm format: asymmetric min/max per group of 128, bf16 scales and
zeros); a bitsandbytes 4-bit checkpoint is first dequantised from NF4, so its weights are rounded
twice. This script measures, on the embedded model (SmolLM2-135M-Instruct) and an adapter trained by
`medchat finetune`, what each way of running the adapter keeps of it, on the CPU: every quantisation
is reproduced exactly (same parameters, same rounding, the kernel's own dequantisation), then the
model runs in float32 (or bf16 where a variant says so).

The adapter's *effect* is the next-token logits with the adapter minus those without it, each way
of running it paired with its own base (int4 merged against int4 without the adapter, ...). Every
position of the prompt and of the reference's 64-token greedy continuation counts. Against the
reference the adapter was trained with (the base as trained + PEFT's LoRA unmerged, float32):

* cosine and relative norm ‖effect − effect_ref‖ / ‖effect_ref‖ of the effect (over all positions);
* KL(ref ‖ variant) of the next-token distributions with the adapter (nats, mean over positions);
* greedy agreement: teacher-forced along the reference's 64 greedy tokens (share of them the variant
  also puts first; and, of the positions where the adapter changes the reference's first choice,
  the share where the variant makes the same change), and free-running (the variant's own 64
  greedy tokens against the reference's, position by position, and the common prefix).

``--refs`` names variants that every later variant is also scored against (``vs_<name>`` in the JSON),
e.g. int4 merged against int4 + LoRA unmerged: what merging loses on the same base. The positions and
the teacher-forced figures stay those of the primary reference's greedy path (``ref``) in every
``vs_`` block; the free-running agreement is against that block's own reference's greedy tokens.

Variants (``--variants``, default all):

  ref              base as trained + LoRA unmerged, float32 (the reference)
  nf4_lora         NF4 base (bitsandbytes' blockwise-64 NF4, double quant) + LoRA unmerged, float32:
                   what QLoRA training on a 4-bit base saw; the second reference
  int4_merged      (a) merged in bf16, then int4 g128 (today's CUDA fast path), float32 activations
  int4_lora16      (b) int4 base + LoRA unmerged in bf16 (x·Aᵀ·Bᵀ·s added), float32 activations
  bf16_merged      (c) merged in bf16, the whole model in bf16 (the fast path with quantize = "none")
  bf16_lora        (d) bf16 base + LoRA unmerged, all in bf16 (transformers + PEFT in bf16)
  nf4_int4_merged  (e) NF4 → dequantised → merged in bf16 → int4 (a bitsandbytes checkpoint today)
  nf4_int4_lora16  (e') int4 of the dequantised NF4 base + LoRA unmerged in bf16 (item 2 for such a checkpoint)
  int4_merged_bf16 (a) with bf16 activations: the CUDA fast path's arithmetic on an 8B-shaped model
  cuda_today       what `medchat` runs for this model on CUDA today: int4 only where the fast path
                   accepts the shape (in_features % 128 == 0: down_proj here), bf16 elsewhere, merged
  no_adapter       the base alone (the adapter dropped entirely): the floor every figure is read against

The mechanism is reported too, per layer type: the LoRA update |s·B·A| per weight against the int4
step of its group (the scale, (max − min) / 15), the share of int4 codes the merge changes, and how
much of the update survives in weight space (cosine and relative error of int4(W + Δ) − int4(W)
against Δ).

Checks of the emulation: ``--check-libs`` (on by default when they import) compares the int4 rounding
with torchao's own ``_choose_qparams_affine_tinygemm`` / ``_quantize_affine_tinygemm`` and the NF4
rounding with bitsandbytes' ``quantize_4bit`` / ``dequantize_4bit`` on the CPU. ``--export-check FILE``
writes a few layers' weights and LoRA matrices (about 25 MB); ``--check-cuda FILE`` (on a CUDA machine
with torchao and bitsandbytes) quantises them with medchat's own int4 path (``fastdecode._Linear``, i.e.
``Int4TilePackedTo4dTensor.from_hp`` + ``aten._weight_int4pack_mm``) and bitsandbytes' CUDA kernels and
compares the weights the kernels multiply by, bit for bit, with this CPU emulation.

usage:
  MEDCHAT_HOME=… python benchmarks/adapter_fidelity.py --adapter NAME [--adapter NAME2] --out FILE.json
  python benchmarks/adapter_fidelity.py --adapter NAME --export-check probe.safetensors
  python benchmarks/adapter_fidelity.py --check-cuda probe.safetensors --out cuda-check.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# torch is imported by main() (``--help`` stays instant and works without it; tests/benchmarks checks that)
torch: Any = None
F: Any = None


def load_torch() -> None:
    """Import torch into this module's globals (main() calls it; call it first when importing the module)."""
    global torch, F
    import torch as _torch
    import torch.nn.functional as _functional

    torch, F = _torch, _functional


ROOT = Path(__file__).resolve().parent.parent
GROUP = 128  # int4 group size (fastdecode: Int4TilePackedTo4dTensor.from_hp(w, [1, 128]))
PAD_K = 1024  # from_hp pads in_features to a multiple of 1024 (with zeros) before quantising
NF4_BLOCK = 64  # bitsandbytes' default blocksize (transformers' BitsAndBytesConfig leaves it)
NF4_ABSMAX_BLOCK = 256  # double quant: the absmax values are 8-bit quantised in blocks of 256
LAYER_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The extra questions after the adapter's held-out rows: clinical questions in the sample's style,
# written for this benchmark (none of them is in the bundled sample).
EXTRA_QUESTIONS = (
    "A 58-year-old man with type 2 diabetes has a serum creatinine that rose from 1.1 to 1.9 mg/dL two "
    "weeks after starting lisinopril. What is the most likely mechanism, and what should be done?",
    "A 24-year-old woman has fatigue, cold intolerance, weight gain and a TSH of 11 mIU/L with a low free "
    "T4. What is the most likely cause and the first-line treatment?",
    "A 70-year-old woman on warfarin for atrial fibrillation starts clarithromycin for pneumonia. Three days "
    "later her INR is 6.2 without bleeding. Why did this happen and how should it be managed?",
    "A 6-year-old boy has a sore throat, fever of 39 °C, tender anterior cervical nodes and no cough. Which "
    "organism is most likely, and why is treating it important?",
)

VARIANTS: dict[str, str] = {
    "ref": "base as trained + LoRA unmerged, float32 (reference)",
    "nf4_lora": "(f) NF4 base + LoRA unmerged, float32 (what QLoRA training sees; second reference)",
    "int4_merged": "(a) merged in bf16 → int4 g128 (today's CUDA fast path), float32 activations",
    "int4_lora16": "(b) int4 g128 base + LoRA unmerged in bf16, float32 activations",
    "bf16_merged": "(c) merged in bf16, model in bf16",
    "bf16_lora": "(d) bf16 base + LoRA unmerged, all bf16",
    "nf4_int4_merged": "(e) NF4 → dequantised → merged in bf16 → int4 g128, float32 activations",
    "nf4_int4_lora16": "(e') int4 g128 of dequantised NF4 + LoRA unmerged in bf16, float32 activations",
    "int4_merged_bf16": "(a) with bf16 activations (the CUDA fast path's arithmetic, all layers int4)",
    "cuda_today": "medchat on CUDA today for this model: merged, int4 where in_features % 128 == 0 "
                  "(down_proj), bf16 elsewhere, bf16 activations",
    "no_adapter": "base as trained without the adapter (the adapter dropped entirely)",
}


# =================================================================================================
# Exact CPU emulation of the two 4-bit formats


def round_to_bf16(v: torch.Tensor) -> torch.Tensor:
    """Round float64 values to the nearest bfloat16 (ties to even), once: what a bf16 FMA returns.
    (``v.to(torch.bfloat16)`` from float64 would round twice, through float32.)"""
    m, e = torch.frexp(v)  # v = m * 2**e, 0.5 <= |m| < 1: bf16 keeps 8 significant bits
    return torch.ldexp(torch.round(m * 256.0), (e - 8).to(torch.float64)).to(torch.bfloat16)


def int4_tinygemm(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """What medchat's CUDA path does to a weight ``w`` [out, in]: torchao's
    ``Int4TilePackedTo4dTensor.from_hp(w.bf16(), [1, 128], int4_choose_qparams_algorithm="tinygemm")``
    (in_features zero-padded to a multiple of 1024; per group of 128: scale = (max − min) / 15,
    zero = min + 8·scale, all in bf16 tensor arithmetic; q = clamp(round((w − (zero − 8·scale)) / scale),
    0, 15)), then the tinygemm kernel's dequantisation, one bf16 FMA: w' = (q − 8)·scale + zero.

    Returns ``weight`` (bf16, what the kernel multiplies by), ``q`` (int codes), ``scale``, ``zero``
    (bf16, one per group), all with the padding cut off except scale/zero (per padded group)."""
    w = w.to(torch.bfloat16)
    n, k = w.shape
    kp = -(-k // PAD_K) * PAD_K
    x = F.pad(w, (0, kp - k)).view(n, kp // GROUP, GROUP)
    mn = x.amin(-1, keepdim=True)
    mx = x.amax(-1, keepdim=True)
    scale = ((mx - mn) / 15.0).clamp(min=torch.finfo(torch.bfloat16).smallest_normal)
    zero = mn + scale * 8.0
    low = zero - scale * 8.0
    q = torch.clamp(torch.round((x - low) / scale), 0, 15)
    deq = round_to_bf16((q.double() - 8.0) * scale.double() + zero.double())
    return {"weight": deq.view(n, kp)[:, :k], "q": q.to(torch.int32).view(n, kp)[:, :k],
            "scale": scale.view(n, -1), "zero": zero.view(n, -1)}


NF4_CODE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
            -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
            0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
            0.7229568362236023, 1.0)


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' ``create_dynamic_map(signed=True)``: the 8-bit code of the double-quantised absmax."""
    data: list[float] = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def _cuda_dquantize(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' CUDA ``dQuantize<0>`` (kQuantizeBlockwise's 8-bit path): a 7-step binary search over
    the 256-value code from index 127, then the nearer of the last pivot and its bracketing neighbour.
    It is not always the nearest code value (the search can stop one bracket off), so it is reproduced
    step by step."""
    pivot = torch.full_like(x, 127, dtype=torch.long)
    upper_p = torch.full_like(pivot, 255)
    lower_p = torch.zeros_like(pivot)
    lower = torch.full_like(x, -1.0)
    upper = torch.full_like(x, 1.0)
    val = code[pivot]
    for i in (64, 32, 16, 8, 4, 2, 1):
        gt = x > val
        lower_p, lower = torch.where(gt, pivot, lower_p), torch.where(gt, val, lower)
        upper_p, upper = torch.where(gt, upper_p, pivot), torch.where(gt, upper, val)
        pivot = torch.where(gt, pivot + i, pivot - i)
        val = code[pivot]
    upper = torch.where(upper_p == 255, code[255], upper)
    lower = torch.where(lower_p == 0, code[0], lower)
    gt = x > val
    return torch.where(gt, torch.where(x > (upper + val) * 0.5, upper_p, pivot),
                       torch.where(x < (lower + val) * 0.5, lower_p, pivot))


def _blockwise(flat: torch.Tensor, code: torch.Tensor, block: int,
               search: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' blockwise absmax quantisation to a sorted code: "nearest" value (ties to the lower;
    the NF4 kernel's decision tree, and bitsandbytes' CPU code) or the CUDA 8-bit kernel's "cuda" search."""
    n = flat.numel()
    full = n - n % block
    absmax = flat[:full].view(-1, block).abs().amax(-1)
    scaled = torch.clamp(flat[:full].view(-1, block) * (1.0 / absmax.clamp(min=1e-38))[:, None], -1, 1).reshape(-1)
    if full < n:
        am = flat[full:].abs().amax().clamp(min=1e-38)
        absmax = torch.cat([absmax, am[None]])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / am, -1, 1)])
    if search == "cuda":
        return _cuda_dquantize(scaled, code), absmax
    bounds = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, bounds), absmax


def nf4_bnb(w: torch.Tensor, double_quant: bool = True, absmax_search: str = "cuda") -> dict[str, torch.Tensor]:
    """What loading with ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=bfloat16)`` (medchat's 4-bit load) stores for a
    bf16 weight, and what ``dequantize_4bit`` gives back: NF4 codes per block of 64 scaled by the
    block's absmax; the absmax values themselves 8-bit quantised (dynamic code, blocks of 256) after
    subtracting their mean (``absmax_search``: "cuda", as bitsandbytes' CUDA kernel picks those 8-bit
    codes, or "nearest", as its CPU code does; they differ for a few absmax values). Returns ``weight`` (bf16, dequantised), ``q``, ``absmax`` (float32, as used)."""
    shape = w.shape
    flat = w.to(torch.bfloat16).reshape(-1).float()
    code = torch.tensor(NF4_CODE, dtype=torch.float32)
    q, absmax = _blockwise(flat, code, NF4_BLOCK)
    if double_quant:
        offset = absmax.mean()
        dcode = dynamic_map()
        qa, absmax2 = _blockwise(absmax - offset, dcode, NF4_ABSMAX_BLOCK, absmax_search)
        n = qa.numel()
        full = n - n % NF4_ABSMAX_BLOCK
        deq = dcode[qa]
        deq = torch.cat([(deq[:full].view(-1, NF4_ABSMAX_BLOCK) * absmax2[: full // NF4_ABSMAX_BLOCK, None]).reshape(-1),
                         deq[full:] * absmax2[-1]]) if full < n else (
            deq.view(-1, NF4_ABSMAX_BLOCK) * absmax2[:, None]).reshape(-1)
        absmax = deq + offset
    out = (code[q].view(-1, NF4_BLOCK) * absmax[:, None]).reshape(shape).to(torch.bfloat16)
    return {"weight": out, "q": q.view(shape), "absmax": absmax, "absmax_q": qa if double_quant else None}


def bf16_ulp(w: torch.Tensor) -> torch.Tensor:
    """The spacing of bfloat16 numbers at each value of ``w`` (8 significant bits)."""
    _m, e = torch.frexp(w.float().abs().clamp(min=1e-30))
    return torch.ldexp(torch.ones_like(w, dtype=torch.float32), (e - 8).float())


def nf4_step(q: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """The local NF4 grid spacing at each weight: the mean gap to its code's neighbours, times its absmax."""
    code = torch.tensor(NF4_CODE, dtype=torch.float32)
    up = code[(q + 1).clamp(max=15)] - code[q]
    down = code[q] - code[(q - 1).clamp(min=0)]
    gaps = torch.where((q == 0) | (q == 15), up + down, (up + down) / 2)
    return gaps.view(-1, NF4_BLOCK) * absmax[:, None]


def merge_bf16(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """fastdecode._dense: ``weight + get_delta_weight(name).to(weight.dtype)`` on a bf16 weight."""
    return w.to(torch.bfloat16) + delta.to(torch.bfloat16)


# =================================================================================================
# Checks of the emulation against the libraries (CPU) and the CUDA kernels


def check_libs(weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Compare the emulation with torchao's and bitsandbytes' own Python/CPU code, where they import."""
    out: dict[str, Any] = {}
    try:
        import torchao
        from torchao.quantization.quant_primitives import (
            MappingType,
            _choose_qparams_affine_tinygemm,
            _dequantize_affine_tinygemm,
            _quantize_affine_tinygemm,
        )
    except Exception as exc:  # noqa: BLE001
        out["torchao"] = f"not checked: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        n_w = n_q = n_sz = n_deq = n_half = 0
        max_deq_ulps = 0.0
        for name, (w, merged) in weights.items():
            for m in (w, merged):
                m = m.to(torch.bfloat16)
                mine = int4_tinygemm(m)
                k = m.shape[1]
                padded = F.pad(m, (0, -k % PAD_K))
                scale, zero = _choose_qparams_affine_tinygemm(
                    padded, MappingType.ASYMMETRIC, (1, GROUP), torch.int32, 0, 15,
                    scale_dtype=torch.bfloat16, zero_point_dtype=torch.bfloat16)
                q = _quantize_affine_tinygemm(padded, [1, GROUP], scale, zero, torch.int32, 0, 15)
                deq32 = _dequantize_affine_tinygemm(q, (1, GROUP), scale, zero, torch.int32, 0, 15,
                                                    output_dtype=torch.float32)[:, :k]
                n_w += m.numel()
                n_q += int((q[:, :k] != mine["q"]).sum())
                n_sz += int((scale.view(m.shape[0], -1) != mine["scale"]).sum()
                            + (zero.view(m.shape[0], -1) != mine["zero"]).sum())
                # torchao dequantises in float32; the kernel rounds its one FMA to bf16: equal after that
                n_deq += int((deq32.to(torch.bfloat16) != mine["weight"]).sum())
                err = (deq32 - mine["weight"].float()).abs() / bf16_ulp(deq32)
                max_deq_ulps = max(max_deq_ulps, float(err.max()))
                n_half += int((err > 0.5 + 1e-6).sum())
        out["torchao"] = {
            "version": torchao.__version__, "weights": n_w, "codes_differing": n_q, "scales_zeros_differing": n_sz,
            "dequant_differing_after_bf16_rounding": n_deq,
            "dequant_float32_vs_emulated_bf16_max_ulps": round(max_deq_ulps, 3),
            "note": "torchao's CPU primitives quantise exactly as the emulation; its float32 dequantisation "
                    "differs from the kernel's bf16 FMA by at most half a bf16 ulp, as expected",
        }
    try:
        import bitsandbytes
        import bitsandbytes.functional as bnbf
    except Exception as exc:  # noqa: BLE001
        out["bitsandbytes"] = f"not checked: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        n_w = n_q = n_deq = n_deq_out = n_aq = n_blocks = 0
        for name, (w, _merged) in weights.items():
            m = w.to(torch.bfloat16)
            mine = nf4_bnb(m, absmax_search="nearest")  # bitsandbytes' CPU code picks the nearest 8-bit code
            packed, state = bnbf.quantize_4bit(m, blocksize=NF4_BLOCK, compress_statistics=True, quant_type="nf4")
            flat = packed.view(torch.uint8).reshape(-1)
            codes = torch.stack([flat >> 4, flat & 0xF], 1).reshape(-1)[: m.numel()].long()
            deq = bnbf.dequantize_4bit(packed, state)
            n_w += m.numel()
            n_q += int((codes != mine["q"].reshape(-1)).sum())
            bad = (deq.view(m.shape) != mine["weight"]).reshape(-1, NF4_BLOCK)
            other = state.absmax.long().cpu() != mine["absmax_q"]  # the blocks whose 8-bit absmax code differs
            n_aq += int(other.sum())
            n_blocks += other.numel()
            n_deq += int(bad.sum())
            n_deq_out += int(bad[~other].sum())
        out["bitsandbytes"] = {
            "version": bitsandbytes.__version__, "weights": n_w, "nf4_codes_differing": n_q,
            "absmax_blocks": n_blocks, "absmax_8bit_codes_differing": n_aq, "dequant_differing": n_deq,
            "dequant_differing_outside_those_blocks": n_deq_out,
            "note": "bitsandbytes' CPU code picks the 8-bit absmax codes with its own search, which is not the "
                    "nearest value at near-ties; the NF4 codes and every other dequantised weight are identical"}
    return out


def check_cuda(path: Path) -> dict[str, Any]:
    """On a CUDA machine: medchat's int4 path and bitsandbytes' CUDA NF4 kernels against the emulation."""
    from safetensors.torch import load_file

    import medchat.models.fastdecode as fd

    assert torch.cuda.is_available(), "--check-cuda needs a CUDA GPU"
    tensors = load_file(str(path))
    names = sorted({k.rsplit(".", 1)[0] for k in tensors})
    dev = torch.device("cuda")
    rows = []
    tot = {"int4_weights": 0, "int4_differing": 0, "int4_via_medchat_Linear": 0, "nf4_weights": 0,
           "nf4_codes_differing": 0, "nf4_dequant_differing": 0, "nf4_then_int4_differing": 0}
    worst_mm = 0.0
    import bitsandbytes.functional as bnbf
    from torchao.quantization.quantize_.workflows.int4.int4_tile_packed_to_4d_tensor import Int4TilePackedTo4dTensor

    def kernel_weight(w_bf16: torch.Tensor) -> tuple[torch.Tensor, Any, bool]:
        """The weights tinygemm multiplies by: medchat's _Linear (or from_hp with its arguments where the
        fast path refuses the shape), probed with the identity matrix (each output is one weight × 1)."""
        n, k = w_bf16.shape
        lin = fd._Linear(w_bf16.to(dev), None, "int4")
        if lin.int4:
            qdata, sz, via = lin.weight, lin.scale_and_zero, True
        else:  # in_features % 128 != 0: medchat keeps bf16; quantise as from_hp would anyway
            q = Int4TilePackedTo4dTensor.from_hp(w_bf16.to(dev), [1, GROUP],
                                                 int4_choose_qparams_algorithm=fd.INT4_ALGORITHM)
            qdata, sz, via = q.qdata, q.scale_and_zero, False
        kp = -(-k // PAD_K) * PAD_K
        eye = torch.eye(kp, dtype=torch.bfloat16, device=dev)
        probe = torch.ops.aten._weight_int4pack_mm(eye, qdata, GROUP, sz)[:k, :n]  # [k, n] = W'^T
        return probe.t().contiguous().cpu(), (qdata, sz, kp), via

    for name in names:
        w = tensors[f"{name}.weight"]
        a, b, s = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"], float(tensors[f"{name}.scaling"])
        delta = (b @ a) * s
        merged = merge_bf16(w, delta)
        row: dict[str, Any] = {"matrix": name, "shape": list(w.shape)}
        for label, m in (("base", w.to(torch.bfloat16)), ("merged", merged)):
            emu = int4_tinygemm(m)["weight"]
            got, (qdata, sz, kp), via = kernel_weight(m)
            diff = int((got != emu).sum())
            tot["int4_weights"] += m.numel()
            tot["int4_differing"] += diff
            tot["int4_via_medchat_Linear"] += m.numel() if via else 0
            row[f"int4_{label}_differing"] = diff
            # a real product: the kernel (bf16 in, fp32 accumulate, bf16 out) against float32 x @ W'^T
            x = torch.randn(16, m.shape[1], generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
            y = torch.ops.aten._weight_int4pack_mm(F.pad(x, (0, kp - m.shape[1])).to(dev), qdata, GROUP, sz)
            y = y[:, : m.shape[0]].float().cpu()
            ref = x.float() @ emu.float().t()
            rel = float((y - ref).norm() / ref.norm())
            worst_mm = max(worst_mm, rel)
            row[f"int4_{label}_matmul_rel_err"] = rel
        # NF4 (double quant) with bitsandbytes' CUDA kernels
        wb = w.to(torch.bfloat16)
        mine = nf4_bnb(wb)
        packed, state = bnbf.quantize_4bit(wb.to(dev), blocksize=NF4_BLOCK, compress_statistics=True, quant_type="nf4")
        flat = packed.view(torch.uint8).reshape(-1).cpu()
        codes = torch.stack([flat >> 4, flat & 0xF], 1).reshape(-1)[: wb.numel()].long()
        deq = bnbf.dequantize_4bit(packed, state).cpu().view(wb.shape)
        tot["nf4_weights"] += wb.numel()
        tot["nf4_codes_differing"] += int((codes != mine["q"].reshape(-1)).sum())
        tot["nf4_dequant_differing"] += int((deq != mine["weight"]).sum())
        row["nf4_dequant_differing"] = int((deq != mine["weight"]).sum())
        # NF4 -> merged -> int4 as fastdecode does for a bitsandbytes checkpoint
        m2 = merge_bf16(deq, delta)
        got, _, _ = kernel_weight(m2)
        tot["nf4_then_int4_differing"] += int((got != int4_tinygemm(merge_bf16(mine["weight"], delta))["weight"]).sum())
        rows.append(row)
    import bitsandbytes
    import torchao

    return {"matrices": rows, "totals": tot, "worst_matmul_rel_err_vs_float32": worst_mm,
            "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "torchao": torchao.__version__,
            "bitsandbytes": bitsandbytes.__version__, "int4_algorithm": fd.INT4_ALGORITHM}


# =================================================================================================
# The model, its adapter and the variants


class Setup:
    """The base model (float32) with the adapter attached, the original tensors, and the LoRA layers."""

    def __init__(self, model_spec: str, adapter: str) -> None:
        from medchat.models.adapters import adapter_prompt_style, attach_adapter, check_adapter_base
        from medchat.models.catalog import resolve_model
        from medchat.models.loading import load_hf_model
        from medchat.store.adapters import resolve_adapter

        self.resolved = resolve_model(model_spec, device="cpu", offline=True, fallback=False)
        self.adapter_path = resolve_adapter(adapter)
        check_adapter_base(self.adapter_path, self.resolved)
        base, self.tokenizer = load_hf_model(self.resolved, device="cpu", dtype="float32", quantize="none")
        self.model = attach_adapter(base, self.adapter_path, self.resolved).eval()
        self.style = adapter_prompt_style(self.adapter_path, self.resolved)
        from medchat.store.manifest import read_manifest

        self.manifest = read_manifest(self.adapter_path)
        from peft.tuners.lora import Linear as LoraLinear

        self.lora = {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLinear)}
        for m in self.lora.values():
            m.lora_A["default"].float()
            m.lora_B["default"].float()
        self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.base_w = {n: m.base_layer.weight.detach().clone() for n, m in self.lora.items()}
        self.delta = {n: m.get_delta_weight("default").detach().float() for n, m in self.lora.items()}
        first = next(iter(self.lora.values()))
        cfg = self.model.peft_config["default"]
        self.lora_info = {"r": cfg.r, "alpha": cfg.lora_alpha, "scaling": first.scaling["default"],
                          "rslora": bool(getattr(cfg, "use_rslora", False)),
                          "targets": sorted({n.rsplit(".", 1)[-1] for n in self.lora}), "layers": len(self.lora)}

    def restore(self) -> None:
        self.model.float()
        self.model.load_state_dict(self.saved)


def build_variant_weights(setup: Setup, variant: str) -> tuple[dict, dict, str, bool]:
    """(base weights, with-adapter weights or None for unmerged, lora dtype, bf16 model) for a variant."""
    bw, dl = setup.base_w, setup.delta
    q4 = lambda t: int4_tinygemm(t)["weight"]  # noqa: E731
    if variant in ("ref", "no_adapter"):
        return bw, None, "float32", False
    if variant == "nf4_lora":
        return {n: nf4_bnb(w)["weight"] for n, w in bw.items()}, None, "float32", False
    if variant in ("int4_merged", "int4_merged_bf16"):
        return ({n: q4(w) for n, w in bw.items()}, {n: q4(merge_bf16(w, dl[n])) for n, w in bw.items()}, "",
                variant.endswith("bf16"))
    if variant == "int4_lora16":
        return {n: q4(w) for n, w in bw.items()}, None, "bfloat16", False
    if variant == "bf16_merged":
        return {n: w.to(torch.bfloat16) for n, w in bw.items()}, {n: merge_bf16(w, dl[n]) for n, w in bw.items()}, "", True
    if variant == "bf16_lora":
        return bw, None, "bfloat16", True
    if variant in ("nf4_int4_merged", "nf4_int4_lora16"):
        nf = {n: nf4_bnb(w)["weight"] for n, w in bw.items()}
        base = {n: q4(w) for n, w in nf.items()}
        if variant == "nf4_int4_lora16":
            return base, None, "bfloat16", False
        return base, {n: q4(merge_bf16(w, dl[n])) for n, w in nf.items()}, "", False
    if variant == "cuda_today":
        def fast(w: torch.Tensor) -> torch.Tensor:  # fastdecode._int4_ok: in_features % 128 == 0
            return q4(w) if w.shape[1] % GROUP == 0 else w.to(torch.bfloat16)
        return ({n: fast(w) for n, w in bw.items()}, {n: fast(merge_bf16(w, dl[n])) for n, w in bw.items()}, "",
                True)
    raise SystemExit(f"unknown variant {variant}")


class Runner:
    """Puts the model in one state (base or with adapter) of a variant and runs it."""

    def __init__(self, setup: Setup) -> None:
        self.s = setup

    def configure(self, weights: dict, lora_dtype: str | None, bf16: bool) -> None:
        """``lora_dtype`` None: the adapter is off; else the LoRA branch runs in that dtype."""
        s = self.s
        s.restore()
        with torch.no_grad():
            for n, m in s.lora.items():
                m.base_layer.weight.copy_(weights[n].float())
        if bf16:
            s.model.to(torch.bfloat16)
        if lora_dtype:
            dt = getattr(torch, lora_dtype)
            for m in s.lora.values():
                m.lora_A["default"].to(dt)
                m.lora_B["default"].to(dt)
        self.adapter_on = lora_dtype is not None

    def logits(self, seq: list[int]) -> torch.Tensor:
        """Next-token logits (float32) at every position of ``seq``, in one forward."""
        with torch.inference_mode():
            if self.adapter_on:
                return self.s.model(input_ids=torch.tensor([seq]))["logits"][0].float()
            with self.s.model.disable_adapter():
                return self.s.model(input_ids=torch.tensor([seq]))["logits"][0].float()

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """``n`` greedy tokens (EOS does not stop it: every variant is compared over the same length)."""
        from transformers import DynamicCache

        out: list[int] = []
        with torch.inference_mode():
            past = DynamicCache()
            if self.adapter_on:
                res = self.s.model(input_ids=torch.tensor([prompt]), past_key_values=past, use_cache=True)
            else:
                with self.s.model.disable_adapter():
                    res = self.s.model(input_ids=torch.tensor([prompt]), past_key_values=past, use_cache=True)
            for _ in range(n):
                tok = int(res["logits"][0, -1].argmax())
                out.append(tok)
                if len(out) == n:
                    break
                ids = torch.tensor([[tok]])
                if self.adapter_on:
                    res = self.s.model(input_ids=ids, past_key_values=res["past_key_values"], use_cache=True)
                else:
                    with self.s.model.disable_adapter():
                        res = self.s.model(input_ids=ids, past_key_values=res["past_key_values"], use_cache=True)
        return out


# =================================================================================================
# Metrics


class Metrics:
    """One variant against one reference, accumulated prompt by prompt."""

    def __init__(self) -> None:
        self.dot = self.nv = self.nr = self.nd = 0.0
        self.dot_c = self.nv_c = self.nr_c = 0.0
        self.pos_cos: list[float] = []
        self.pos_rel: list[float] = []
        self.kl: list[float] = []
        self.kl_base: list[float] = []
        self.tf_hits = self.tf_total = 0
        self.flips = self.flips_kept = 0
        self.free_hits = self.free_total = 0
        self.prefixes: list[int] = []

    def add(self, v_with: torch.Tensor, v_base: torch.Tensor, r_with: torch.Tensor, r_base: torch.Tensor,
            cont: slice, ref_next: torch.Tensor, free_v: list[int], free_r: list[int]) -> None:
        ev, er = v_with - v_base, r_with - r_base
        self.dot += float((ev * er).sum())
        self.nv += float((ev * ev).sum())
        self.nr += float((er * er).sum())
        self.nd += float(((ev - er) ** 2).sum())
        evc, erc = ev - ev.mean(-1, keepdim=True), er - er.mean(-1, keepdim=True)  # softmax ignores a shift
        self.dot_c += float((evc * erc).sum())
        self.nv_c += float((evc * evc).sum())
        self.nr_c += float((erc * erc).sum())
        self.pos_cos += F.cosine_similarity(ev, er, dim=-1).tolist()
        self.pos_rel += ((ev - er).norm(dim=-1) / er.norm(dim=-1).clamp(min=1e-12)).tolist()
        lr, lv = F.log_softmax(r_with, -1), F.log_softmax(v_with, -1)
        self.kl += (lr.exp() * (lr - lv)).sum(-1).clamp(min=0).tolist()
        lrb, lvb = F.log_softmax(r_base, -1), F.log_softmax(v_base, -1)
        self.kl_base += (lrb.exp() * (lrb - lvb)).sum(-1).clamp(min=0).tolist()
        top_v = v_with[cont].argmax(-1)
        self.tf_hits += int((top_v == ref_next).sum())
        self.tf_total += int(ref_next.numel())
        flipped = r_with[cont].argmax(-1) != r_base[cont].argmax(-1)
        self.flips += int(flipped.sum())
        self.flips_kept += int((flipped & (top_v == ref_next)).sum())
        self.free_hits += sum(a == b for a, b in zip(free_v, free_r))
        self.free_total += len(free_r)
        prefix = 0
        while prefix < min(len(free_v), len(free_r)) and free_v[prefix] == free_r[prefix]:
            prefix += 1
        self.prefixes.append(prefix)

    def summary(self) -> dict[str, Any]:
        def r(x: float, d: int = 4) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, d)

        cos = self.dot / math.sqrt(self.nv * self.nr) if self.nv > 0 and self.nr > 0 else float("nan")
        cos_c = self.dot_c / math.sqrt(self.nv_c * self.nr_c) if self.nv_c > 0 and self.nr_c > 0 else float("nan")
        finite_cos = [c for c in self.pos_cos if not math.isnan(c)]
        q10 = statistics.quantiles(finite_cos, n=10)[0] if len(finite_cos) >= 10 else float("nan")
        return {
            "effect_cosine": r(cos),
            "effect_cosine_centred": r(cos_c),
            "effect_rel_err": r(math.sqrt(self.nd / self.nr) if self.nr > 0 else float("nan")),
            "effect_norm_ratio": r(math.sqrt(self.nv / self.nr) if self.nr > 0 else float("nan")),
            "effect_cosine_per_position_median": r(statistics.median(finite_cos)) if finite_cos else None,
            "effect_cosine_per_position_p10": r(q10),
            "effect_rel_err_per_position_median": r(statistics.median(self.pos_rel)),
            "kl_ref_to_variant_mean": r(statistics.fmean(self.kl), 5),
            "kl_ref_to_variant_median": r(statistics.median(self.kl), 5),
            "kl_base_ref_to_variant_base_mean": r(statistics.fmean(self.kl_base), 5),
            "teacher_forced_top1_agreement": r(self.tf_hits / self.tf_total),
            "adapter_flips": self.flips,
            "adapter_flips_kept": r(self.flips_kept / self.flips) if self.flips else None,
            "free_running_agreement": r(self.free_hits / self.free_total) if self.free_total else None,
            "free_running_common_prefix_mean": r(statistics.fmean(self.prefixes), 2) if self.prefixes else None,
            "positions": len(self.kl),
        }


# =================================================================================================
# The mechanism: the LoRA update per weight against the rounding steps


def mechanism(setup: Setup) -> dict[str, Any]:
    per: dict[str, dict[str, list]] = {t: {} for t in LAYER_TYPES}
    for n, w in setup.base_w.items():
        t = n.rsplit(".", 1)[-1]
        if t not in per:
            continue
        d = setup.delta[n]
        wb = w.to(torch.bfloat16)
        qw = int4_tinygemm(wb)
        k = w.shape[1]
        step = qw["scale"].float().repeat_interleave(GROUP, dim=1)[:, :k]
        merged = merge_bf16(w, d)
        qm = int4_tinygemm(merged)
        moved_q = (qm["weight"].float() - qw["weight"].float()).reshape(-1)
        moved_b = (merged.float() - wb.float()).reshape(-1)
        nf4 = nf4_bnb(wb)
        nf = nf4["weight"]
        qn, qnm = int4_tinygemm(nf)["weight"].float(), int4_tinygemm(merge_bf16(nf, d))["weight"].float()
        moved_n = (qnm - qn).reshape(-1)
        nstep = nf4_step(nf4["q"].reshape(-1), nf4["absmax"]).view(w.shape)
        dd = d.reshape(-1)
        ulp = bf16_ulp(wb)
        row = per[t]
        for key, value in (
            ("ratio_to_int4_step", (d.abs() / step).reshape(-1)),
            ("ratio_to_nf4_step", (d.abs() / nstep).reshape(-1)),
            ("ratio_to_bf16_ulp", (d.abs() / ulp).reshape(-1)),
            ("ratio_to_weight", (d.abs() / wb.float().abs().clamp(min=1e-30)).reshape(-1)),
        ):
            row.setdefault(key, []).append(value.median().item())
        row.setdefault("share_above_half_int4_step", []).append(float((d.abs() > step / 2).float().mean()))
        row.setdefault("share_int4_values_changed", []).append(float((moved_q != 0).float().mean()))
        row.setdefault("int4_kept_cosine", []).append(float(F.cosine_similarity(moved_q, dd, dim=0)))
        row.setdefault("int4_kept_rel_err", []).append(float((moved_q - dd).norm() / dd.norm()))
        row.setdefault("bf16_kept_cosine", []).append(float(F.cosine_similarity(moved_b, dd, dim=0)))
        row.setdefault("bf16_kept_rel_err", []).append(float((moved_b - dd).norm() / dd.norm()))
        row.setdefault("nf4_int4_kept_cosine", []).append(float(F.cosine_similarity(moved_n, dd, dim=0)))
        row.setdefault("delta_rms", []).append(float(dd.pow(2).mean().sqrt()))
        row.setdefault("int4_step_median", []).append(float(step.median()))
    out = {}
    for t, row in per.items():
        if row:
            out[t] = {k: round(statistics.median(v), 4 if "rms" not in k and "step_median" not in k else 7)
                      for k, v in row.items()}
    return out


# =================================================================================================
# Prompts


def prompts_for(setup: Setup, count: int) -> list[dict[str, Any]]:
    """The adapter's held-out rows of its data set (its manifest records them; never trained on), then
    the extra questions, rendered as the chat renders them: the adapter's prompt style and system prompt."""
    from medchat.chatformat.messages import Message
    from medchat.chatformat.prompt import render_prompt
    from medchat.config import DEFAULT_SYSTEM_PROMPT
    from medchat.finetune.data import load_dataset

    manifest = setup.manifest
    chosen: list[tuple[str, int | None, str]] = []
    if manifest is not None and manifest.dataset.kind == "sample" and manifest.dataset.eval_indices:
        examples = load_dataset("sample").examples
        chosen = [("sample, held out", i, examples[i].question) for i in manifest.dataset.eval_indices]
    chosen += [("written for this benchmark", None, q) for q in EXTRA_QUESTIONS]
    system = (manifest.system_prompt if manifest is not None else "") or DEFAULT_SYSTEM_PROMPT
    out = []
    for source, idx, question in chosen[:count]:
        text = render_prompt(setup.tokenizer, [Message("system", system), Message("user", question)], setup.style)
        ids = setup.tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append({"source": source, "row": idx, "question": question, "ids": ids})
    return out


# =================================================================================================


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    vers = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "torchao", "bitsandbytes"):
        try:
            vers[name] = md.version(name)
        except md.PackageNotFoundError:
            mod = sys.modules.get(name)
            if mod is not None and hasattr(mod, "__version__"):
                vers[name] = f"{mod.__version__} (on PYTHONPATH)"
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"versions": vers, "commit": head, "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2),
            "utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def measure(args: argparse.Namespace, adapter: str) -> dict[str, Any]:
    started = time.time()
    setup = Setup(args.model, adapter)
    say = lambda m: print(f"[{adapter} {time.time() - started:6.0f}s] {m}", file=sys.stderr, flush=True)  # noqa: E731
    prompts = prompts_for(setup, args.prompts)
    say(f"{len(prompts)} prompts ({setup.style}), lengths {[len(p['ids']) for p in prompts]}; LoRA {setup.lora_info}")
    runner = Runner(setup)
    # the reference: its greedy continuation fixes the positions every variant is scored on
    runner.configure(setup.base_w, "float32", False)
    ref_free = [runner.greedy(p["ids"], args.new_tokens) for p in prompts]
    seqs = [p["ids"] + g for p, g in zip(prompts, ref_free)]
    ref_with = [runner.logits(seq[:-1]) for seq in seqs]
    runner.configure(setup.base_w, None, False)
    ref_base = [runner.logits(seq[:-1]) for seq in seqs]
    say("reference done")
    refs = {"ref": (ref_with, ref_base, ref_free)}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    extra_refs = [r.strip() for r in args.refs.split(",") if r.strip() and r.strip() in variants]
    # the extra references first, so that every later variant is scored against each of them too
    variants = extra_refs + [v for v in variants if v not in extra_refs]
    results: dict[str, Any] = {}
    prompt_tokens = [len(p["ids"]) for p in prompts]
    for variant in variants:
        t0 = time.time()
        if variant == "ref":
            v_with, v_base, v_free = ref_with, ref_base, ref_free
        elif variant == "no_adapter":
            v_with, v_base = ref_base, ref_base
            runner.configure(setup.base_w, None, False)
            v_free = [runner.greedy(p["ids"], args.new_tokens) for p in prompts]
        else:
            base_w, with_w, lora_dtype, bf16 = build_variant_weights(setup, variant)
            if with_w is None:  # LoRA unmerged over the variant's base
                runner.configure(base_w, lora_dtype, bf16)
            else:  # merged: the adapter is in the weights
                runner.configure(with_w, None, bf16)
            v_with = [runner.logits(seq[:-1]) for seq in seqs]
            v_free = [runner.greedy(p["ids"], args.new_tokens) for p in prompts]
            runner.configure(base_w, None, bf16)
            v_base = [runner.logits(seq[:-1]) for seq in seqs]
            del base_w, with_w
        scores = {}
        for ref_name, (r_with, r_base, r_free) in refs.items():
            m = Metrics()
            for i, seq in enumerate(seqs):
                start = prompt_tokens[i] - 1  # the position whose next token is the first generated one
                cont = slice(start, len(seq) - 1)
                m.add(v_with[i], v_base[i], r_with[i], r_base[i], cont, torch.tensor(seq[start + 1:]),
                      v_free[i], r_free[i])
            scores[f"vs_{ref_name}"] = m.summary()
        results[variant] = {"what": VARIANTS[variant], **scores, "seconds": round(time.time() - t0, 1)}
        if variant in extra_refs:
            refs[variant] = (v_with, v_base, v_free)
        say(f"{variant}: {json.dumps(scores['vs_ref'])}")
    results["ref"] = results.get("ref") or {"what": VARIANTS["ref"]}
    say("mechanism")
    mech = mechanism(setup)
    man = setup.manifest
    ft = man.settings.get("finetune", {}) if man is not None else {}
    training = {} if man is None else {
        "learning_rate": man.training.model_dump().get("learning_rate") or ft.get("learning_rate"),
        "steps": man.training.steps, "dataset": man.dataset.id, "rows_used": man.dataset.rows_used,
        "eval_rows": man.dataset.eval_indices, "finetune_settings": {k: ft.get(k) for k in (
            "max_steps", "learning_rate", "lora_r", "lora_alpha", "batch_size", "grad_accum", "precision")},
        "base_model": man.base_model.id, "losses": man.losses.model_dump(), "device": man.hardware}
    texts = {"reference": [setup.tokenizer.decode(g) for g in ref_free[:2]]}
    out = {
        "adapter": adapter, "adapter_path": str(setup.adapter_path), "lora": setup.lora_info,
        "training": training,
        "prompt_style": setup.style,
        "prompts": [{k: p[k] for k in ("source", "row", "question")} | {"tokens": len(p["ids"])} for p in prompts],
        "new_tokens": args.new_tokens, "positions": sum(len(s) - 1 for s in seqs),
        "variants": results, "mechanism": mech, "sample_text": texts,
        "seconds": round(time.time() - started, 1),
    }
    if args.check_libs:
        say("checking the emulation against torchao / bitsandbytes on the CPU")
        picks = {n: (w, merge_bf16(w, setup.delta[n])) for n, w in setup.base_w.items()
                 if any(f"layers.{i}." in n for i in (0, 15, 29))}
        out["emulation_checks_cpu"] = check_libs(picks)
    del setup
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = ["| variant | effect cosine | effect rel. error | KL(ref‖v) nats | TF top-1 agreement | adapter flips kept "
            "| free-running agreement (prefix) |", "|---|---|---|---|---|---|---|"]
    for a in result["adapters"]:
        rows.append(f"| **{a['adapter']}** (r{a['lora']['r']}, α{a['lora']['alpha']}, {a['positions']} positions) "
                    "| | | | | | |")
        for name, v in a["variants"].items():
            s = v.get("vs_ref")
            if not s:
                continue
            rows.append(f"| {name} | {s['effect_cosine']} | {s['effect_rel_err']} | {s['kl_ref_to_variant_mean']} | "
                        f"{s['teacher_forced_top1_agreement']} | {s['adapter_flips_kept']} | "
                        f"{s['free_running_agreement']} ({s['free_running_common_prefix_mean']}) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="base model (default: the embedded smollm2)")
    p.add_argument("--adapter", action="append", default=[], help="stored adapter name or folder (repeatable)")
    p.add_argument("--prompts", type=int, default=8, help="prompts: the adapter's held-out rows, then fixed questions")
    p.add_argument("--new-tokens", type=int, default=64, help="greedy tokens generated after each prompt")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    p.add_argument("--refs", default="nf4_lora,int4_lora16,nf4_int4_lora16,bf16_lora",
                   help="variants that every later variant is also scored against (besides ref): the unmerged "
                        "LoRA over the same base isolates what merging loses")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--check-libs", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the emulation with torchao / bitsandbytes on the CPU where they import")
    p.add_argument("--export-check", metavar="FILE", help="write layers 0, 15, 29's weights + LoRA for --check-cuda")
    p.add_argument("--check-cuda", metavar="FILE", help="on a CUDA machine: kernels against the emulation")
    p.add_argument("--out", metavar="FILE", help="write the JSON result here")
    args = p.parse_args(argv)
    load_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix() if sys.argv else "adapter_fidelity.py", *(argv or sys.argv[1:])])
    if args.check_cuda:
        result = {"bench": "adapter_fidelity --check-cuda", "command": command, **environment(),
                  "check": check_cuda(Path(args.check_cuda))}
    elif args.export_check:
        if len(args.adapter) != 1:
            p.error("--export-check needs one --adapter")
        from safetensors.torch import save_file

        setup = Setup(args.model, args.adapter[0])
        tensors = {}
        for n, m in setup.lora.items():
            if any(f"layers.{i}." in n for i in (0, 15, 29)):
                key = n.split("model.layers.", 1)[-1]
                tensors[f"{key}.weight"] = setup.base_w[n].to(torch.bfloat16).contiguous()
                tensors[f"{key}.lora_A"] = m.lora_A["default"].weight.detach().float().contiguous()
                tensors[f"{key}.lora_B"] = m.lora_B["default"].weight.detach().float().contiguous()
                tensors[f"{key}.scaling"] = torch.tensor(float(m.scaling["default"]))
        save_file(tensors, args.export_check)
        print(f"wrote {len(tensors)} tensors to {args.export_check}")
        return 0
    else:
        if not args.adapter:
            p.error("name at least one --adapter")
        result = {"bench": "adapter_fidelity", "command": command, "model": args.model, **environment(),
                  "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
                  "adapters": [measure(args, a) for a in args.adapter]}
        print(markdown(result))
    text = json.dumps(result, indent=1, ensure_ascii=False)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
