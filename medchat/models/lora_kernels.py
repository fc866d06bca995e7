"""One new token's LoRA work on CUDA, folded into the kernels the decode step runs anyway (Triton).

For one token, ``x·Aᵀ·Bᵀ`` is two tiny products per projection; as cuBLAS GEMMs they cost about
10 µs a projection in a CUDA graph (launches, not arithmetic), 1.3 ms a token on an 8B model. Here the
"shrink" (``t = A·x``) is computed beside the norm or activation that produces ``x``, and the "expand"
(``y += B·t``) beside the residual add or activation that consumes ``y``:

  ``rms_shrink``  norm of the residual stream, plus A·(normed x)          (replaces the norm kernel)
  ``shrink``      A·x for the attention output (the one added kernel before o_proj)
  ``expand_``     y += B·t in place, for q/k/v (the other added kernel)
  ``add_expand``  h + (y + B·t), the residual add after o_proj and down_proj
  ``swiglu``      silu(g + B·t)·(u + B·t), plus A_down·(that)              (replaces silu and mul)

A shrink is split over the input (split-K): each program writes its partial products to a small
float32 buffer ``[splits, rank]`` and the kernel that reads them adds them up, so there are no atomics
and nothing to zero. ``B`` carries the LoRA scale (see ``fastdecode._Linear``). The rounding to the
activations' dtype happens where the separate torch ops round (after ``y + B·t``, after silu, after
the product), so the text stays what the two-GEMM path gives up to float32 summation order.

Only for one token on CUDA; prompts (many tokens) keep torch's GEMMs. Without Triton the decoder uses
those for every step. Tested on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

if TYPE_CHECKING:
    import torch

SPLIT = 128  # input elements per shrink program
BLOCK_OUT = 64  # output elements per expand program
WARPS = 4


def _p2(n: int) -> int:
    return triton.next_power_of_2(n)


@triton.jit
def _partial(A, x, pid, part, K, R, SPLIT: tl.constexpr, R_P2: tl.constexpr):
    """part[pid, :] = A[:, chunk] · x (x: this program's chunk of the input, float32)."""
    k = pid * SPLIT + tl.arange(0, SPLIT)
    r = tl.arange(0, R_P2)
    a = tl.load(A + r[:, None] * K + k[None, :], mask=(r[:, None] < R) & (k[None, :] < K), other=0.0)
    tl.store(part + pid * R_P2 + r, tl.sum(a.to(tl.float32) * x[None, :], axis=1))


@triton.jit
def _lora_t(part, S, S_P2: tl.constexpr, R_P2: tl.constexpr):
    """t = the sum of the shrink programs' partial products (float32, R_P2 long; zeros past the rank)."""
    s = tl.arange(0, S_P2)
    r = tl.arange(0, R_P2)
    p = tl.load(part + s[:, None] * R_P2 + r[None, :], mask=s[:, None] < S, other=0.0)
    return tl.sum(p, axis=0)


@triton.jit
def _delta(B, t, n, N, R, R_P2: tl.constexpr):
    """(B·t)[n] for a block of output rows n (float32)."""
    r = tl.arange(0, R_P2)
    b = tl.load(B + n[:, None] * R + r[None, :], mask=(n[:, None] < N) & (r[None, :] < R), other=0.0)
    return tl.sum(b.to(tl.float32) * t[None, :], axis=1)


@triton.jit
def _rms_shrink_kernel(x, w, out, A, part, K, R, eps, HAS_LORA: tl.constexpr, K_P2: tl.constexpr,
                       SPLIT: tl.constexpr, R_P2: tl.constexpr):
    pid = tl.program_id(0)
    every = tl.arange(0, K_P2)
    xs = tl.load(x + every, mask=every < K, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xs * xs, axis=0) / K + eps)  # each program: the whole row (a few KB)
    k = pid * SPLIT + tl.arange(0, SPLIT)
    xk = tl.load(x + k, mask=k < K, other=0.0).to(tl.float32)
    wk = tl.load(w + k, mask=k < K, other=0.0).to(tl.float32)
    normed = (xk * rstd * wk).to(out.dtype.element_ty)
    tl.store(out + k, normed, mask=k < K)
    if HAS_LORA:
        _partial(A, normed.to(tl.float32), pid, part, K, R, SPLIT, R_P2)


@triton.jit
def _shrink_kernel(x, A, part, K, R, SPLIT: tl.constexpr, R_P2: tl.constexpr):
    pid = tl.program_id(0)
    k = pid * SPLIT + tl.arange(0, SPLIT)
    _partial(A, tl.load(x + k, mask=k < K, other=0.0).to(tl.float32), pid, part, K, R, SPLIT, R_P2)


@triton.jit
def _expand_kernel(y, part, B, N, R, S, S_P2: tl.constexpr, R_P2: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    t = _lora_t(part, S, S_P2, R_P2)
    yn = tl.load(y + n, mask=n < N, other=0.0).to(tl.float32)
    tl.store(y + n, (yn + _delta(B, t, n, N, R, R_P2)).to(y.dtype.element_ty), mask=n < N)


@triton.jit
def _add_expand_kernel(h, y, out, part, B, N, R, S, HAS_LORA: tl.constexpr, S_P2: tl.constexpr,
                       R_P2: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    yn = tl.load(y + n, mask=n < N, other=0.0)
    if HAS_LORA:
        t = _lora_t(part, S, S_P2, R_P2)
        yn = (yn.to(tl.float32) + _delta(B, t, n, N, R, R_P2)).to(y.dtype.element_ty)
    hn = tl.load(h + n, mask=n < N, other=0.0)
    tl.store(out + n, (hn.to(tl.float32) + yn.to(tl.float32)).to(out.dtype.element_ty), mask=n < N)


@triton.jit
def _swiglu_kernel(gu, act, part, B, R, S, A_down, part_down, R_down, INTER, HAS_LORA: tl.constexpr,
                   HAS_DOWN: tl.constexpr, S_P2: tl.constexpr, R_P2: tl.constexpr, R_DOWN_P2: tl.constexpr,
                   SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    j = pid * SPLIT + tl.arange(0, SPLIT)
    g = tl.load(gu + j, mask=j < INTER, other=0.0)
    u = tl.load(gu + INTER + j, mask=j < INTER, other=0.0)
    if HAS_LORA:  # gate rows are 0..INTER-1 of the fused matrix, up rows INTER..2I-1
        t = _lora_t(part, S, S_P2, R_P2)
        g = (g.to(tl.float32) + _delta(B, t, j, 2 * INTER, R, R_P2)).to(gu.dtype.element_ty)
        u = (u.to(tl.float32) + _delta(B, t, INTER + j, 2 * INTER, R, R_P2)).to(gu.dtype.element_ty)
    gf = g.to(tl.float32)
    silu = (gf / (1.0 + tl.exp(-gf))).to(gu.dtype.element_ty)
    a = (silu.to(tl.float32) * u.to(tl.float32)).to(act.dtype.element_ty)
    tl.store(act + j, a, mask=j < INTER)
    if HAS_DOWN:
        _partial(A_down, a.to(tl.float32), pid, part_down, INTER, R_down, SPLIT, R_DOWN_P2)


# -- what the decode step calls (x, y, h: one token, shape [1, features]) -----------------------------

def _parts(A: "torch.Tensor", K: int) -> "torch.Tensor":
    import torch

    return torch.empty(triton.cdiv(K, SPLIT), _p2(A.shape[0]), dtype=torch.float32, device=A.device)


def rms_shrink(x: "torch.Tensor", w: "torch.Tensor", eps: float, A: "torch.Tensor | None"):
    """(rms_norm(x)·w, the partial products of A·that, or None without A)."""
    import torch

    K = x.shape[-1]
    out = torch.empty_like(x)
    part = _parts(A, K) if A is not None else None
    _rms_shrink_kernel[(triton.cdiv(K, SPLIT),)](
        x, w, out, A if A is not None else x, part if part is not None else out, K, A.shape[0] if A is not None else 0,
        eps, HAS_LORA=A is not None, K_P2=_p2(K), SPLIT=SPLIT, R_P2=_p2(A.shape[0]) if A is not None else 1,
        num_warps=WARPS)
    return out, part


def shrink(x: "torch.Tensor", A: "torch.Tensor") -> "torch.Tensor":
    """The partial products of A·x."""
    K = x.shape[-1]
    part = _parts(A, K)
    _shrink_kernel[(part.shape[0],)](x, A, part, K, A.shape[0], SPLIT=SPLIT, R_P2=part.shape[1], num_warps=WARPS)
    return part


def expand_(y: "torch.Tensor", part: "torch.Tensor", B: "torch.Tensor") -> "torch.Tensor":
    """y += B·t in place (t: the sum of ``part``)."""
    N = y.shape[-1]
    _expand_kernel[(triton.cdiv(N, BLOCK_OUT),)](
        y, part, B, N, B.shape[1], part.shape[0], S_P2=_p2(part.shape[0]), R_P2=part.shape[1], BLOCK=BLOCK_OUT,
        num_warps=WARPS)
    return y


def add_expand(h: "torch.Tensor", y: "torch.Tensor", part: "torch.Tensor | None", B: "torch.Tensor | None"):
    """h + (y + B·t): a residual add with the projection's LoRA (or none) added on the way."""
    import torch

    N = y.shape[-1]
    out = torch.empty_like(h)
    lora = part is not None
    _add_expand_kernel[(triton.cdiv(N, BLOCK_OUT),)](
        h, y, out, part if lora else y, B if lora else y, N, B.shape[1] if lora else 0, part.shape[0] if lora else 0,
        HAS_LORA=lora, S_P2=_p2(part.shape[0]) if lora else 1, R_P2=part.shape[1] if lora else 1, BLOCK=BLOCK_OUT,
        num_warps=WARPS)
    return out


def swiglu(gu: "torch.Tensor", part: "torch.Tensor | None", B: "torch.Tensor | None",
           A_down: "torch.Tensor | None"):
    """(silu(g)·u of the fused gate/up output with its LoRA added, the partial products of A_down·that
    or None)."""
    import torch

    inter = gu.shape[-1] // 2
    act = torch.empty(gu.shape[:-1] + (inter,), dtype=gu.dtype, device=gu.device)
    lora, down = part is not None, A_down is not None
    part_down = _parts(A_down, inter) if down else None
    _swiglu_kernel[(triton.cdiv(inter, SPLIT),)](
        gu, act, part if lora else gu, B if lora else gu, B.shape[1] if lora else 0, part.shape[0] if lora else 0,
        A_down if down else gu, part_down if down else act, A_down.shape[0] if down else 0, inter,
        HAS_LORA=lora, HAS_DOWN=down, S_P2=_p2(part.shape[0]) if lora else 1, R_P2=part.shape[1] if lora else 1,
        R_DOWN_P2=part_down.shape[1] if down else 1, SPLIT=SPLIT, num_warps=WARPS)
    return act, part_down
