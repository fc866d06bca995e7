"""One flash-attention call per layer for packed and padding-free batches under Unsloth, on torch 2.11.

Unsloth keeps the rows of a concatenated batch apart either with torch's variable-length flash kernel
(one call per layer) or, where it does not find that kernel, with one SDPA call per row -- and a step
makes three of those per layer (forward, checkpoint recompute, backward), each costing the host about
0.3 ms. It looks for the kernel through `torch.nn.attention.varlen.varlen_attn` and needs that
function's `enable_gqa` argument, which arrived in torch 2.12. Its own lean route does not use that
function at all: it calls the aten flash op, which takes grouped-query heads on any torch with flash
attention. `enable()` turns that route on where only the signature check kept it off, after checking
it against per-row SDPA on a small packed batch; elsewhere (torch 2.12+, other Unsloth internals, no
CUDA) it does nothing. MEDCHAT_VARLEN=0 turns it off.
"""

from __future__ import annotations

import os

_NEEDED = ("_TORCH_VARLEN_ATTN", "_LEAN_VARLEN", "_LeanFlashVarlen", "_varlen_can_use_cudnn", "_varlen_attn_call")


def enable() -> bool:
    """True if Unsloth now runs packed attention through the flash varlen kernel (newly or already)."""
    if os.environ.get("MEDCHAT_VARLEN", "1") == "0":
        return False
    try:
        import torch
        from unsloth.utils import attention_dispatch as dispatch
    except Exception:  # noqa: BLE001 - no Unsloth, or one laid out differently
        return False
    if not all(hasattr(dispatch, name) for name in _NEEDED):
        return False
    if dispatch._TORCH_VARLEN_ATTN is not None:
        return True  # this torch already has it
    if not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8):
        return False
    if not hasattr(torch.ops.aten, "_flash_attention_forward") or not matches_per_row_sdpa(dispatch._LeanFlashVarlen):
        return False

    def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        return dispatch._LeanFlashVarlen.apply(q, k, v, cu_q, max_q, window_size == (-1, 0), scale, *window_size)

    dispatch._TORCH_VARLEN_ATTN = varlen_attn
    dispatch._LEAN_VARLEN = True
    dispatch._varlen_can_use_cudnn = lambda *args, **kwargs: False
    return True


def matches_per_row_sdpa(lean) -> bool:
    """Forward and backward of the lean flash route equal causal SDPA run row by row (GQA 4:1, bf16)."""
    import torch
    import torch.nn.functional as F

    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        lengths, heads, kv_heads, dim = [40, 56, 24], 8, 2, 64
        total = sum(lengths)

        def rand(h):
            return torch.randn(total, h, dim, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()

        q, k, v = rand(heads), rand(kv_heads), rand(kv_heads)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
        out = lean.apply(q, k, v, cu, max(lengths), True, None, -1, 0)
        weight = torch.randn(out.shape, device="cuda", dtype=torch.bfloat16, generator=g)
        grads = torch.autograd.grad((out.float() * weight).sum(), (q, k, v))

        rows, start = [], 0
        for n in lengths:
            qs, ks, vs = (x[start:start + n].transpose(0, 1) for x in (q, k, v))
            ks, vs = (x.repeat_interleave(heads // kv_heads, dim=0) for x in (ks, vs))
            rows.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True).transpose(0, 1))
            start += n
        ref = torch.cat(rows)
        ref_grads = torch.autograd.grad((ref.float() * weight).sum(), (q, k, v))
        close = [torch.allclose(a.float(), b.float(), atol=3e-2, rtol=3e-2) for a, b in zip((out, *grads), (ref, *ref_grads))]
        return all(close)
    except Exception:  # noqa: BLE001 - any failure means: keep Unsloth's own path
        return False
