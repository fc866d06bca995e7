"""Packed-row attention kernels on CUDA, forward + backward (a probe, not a test).

Times the kernels a packed micro-batch of the 8B shape can run (32 query heads, 8 key/value heads, head
dim 128; rows of medical-o1 length in one 4,096-token sequence) and checks them against each other:
  flash      aten's FlashAttention-2 varlen, what Unsloth runs for packed rows
  cudnn      cuDNN's ragged (cu_seqlens) attention, key/value heads repeated for the grouped queries
  cudnn_gqa  the same without repeating them
  dense      cuDNN causal attention over the whole 4,096 tokens (rows not kept apart: the raw loop's cost)
Times come from CUDA events around --iters calls after 5 warm-up calls. Needs a CUDA GPU.

usage: python benchmarks/attn_probe.py [--rows 1100,900,1200,896] [--iters 50]
"""

from __future__ import annotations

import harness


def flash(q, k, v, cu, max_len, scale):
    import torch

    return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, max_len, max_len, 0.0, True, False,
                                                   scale=scale)[0]


def cudnn(q, k, v, cu, max_len, scale):
    import torch

    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, max_len, max_len, True, 0.0, True, False,
                                                   scale=scale)[0]


def cudnn_gqa(q, k, v, cu, max_len, scale):
    import torch

    return torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, max_len, max_len, True, 0.0, True, False,
                                                   scale=scale)[0]


def dense(q, k, v, cu, max_len, scale):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], is_causal=True,
            scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


KERNELS = {"flash": flash, "cudnn": cudnn, "cudnn_gqa": cudnn_gqa, "dense": dense}


def cuda_ms(fn, iters: int) -> float:
    """Milliseconds per call of ``fn``, from CUDA events around ``iters`` calls."""
    import torch

    harness.sync()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    harness.sync()
    return start.elapsed_time(end) / iters


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__)
    p.add_argument("--rows", default="1100,900,1200,896", help="token lengths of the packed rows")
    p.add_argument("--iters", type=int, default=50)
    a = p.parse_args(argv)
    rec = harness.recorder("attn_probe", a)

    import torch

    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    rows = [int(x) for x in a.rows.split(",")]
    total, dev = sum(rows), "cuda"
    cu = torch.tensor([0] + [sum(rows[:i + 1]) for i in range(len(rows))], dtype=torch.int32, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    # the layout the model produces: (1, H, T, D) seen as (T, H, D) without a copy
    q0 = torch.randn(1, 32, total, 128, device=dev, dtype=torch.bfloat16, generator=g)[0].transpose(0, 1)
    k0 = torch.randn(1, 8, total, 128, device=dev, dtype=torch.bfloat16, generator=g)[0].transpose(0, 1)
    v0 = torch.randn(1, 8, total, 128, device=dev, dtype=torch.bfloat16, generator=g)[0].transpose(0, 1)
    grad = torch.randn(total, 32, 128, device=dev, dtype=torch.bfloat16, generator=g)
    scale = 128 ** -0.5
    results, outs = {}, {}
    for name, fn in KERNELS.items():
        try:
            q, k, v = (t.detach().requires_grad_() for t in (q0, k0, v0))
            out = fn(q, k, v, cu, max(rows), scale)
            out.backward(grad)
            outs[name] = (out.detach().float(), q.grad.float(), k.grad.float(), v.grad.float())

            def step(fn=fn, q=q, k=k, v=v):
                fn(q, k, v, cu, max(rows), scale).backward(grad)

            for _ in range(5):
                step()
            ms = cuda_ms(step, a.iters)
            results[name] = {"ms_fwd_bwd": round(ms, 3), "us_per_token": round(ms * 1000 / total, 3)}
        except Exception as exc:  # noqa: BLE001
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    ref = outs.get("flash")
    for name, got in outs.items():
        if ref is not None and name not in ("flash", "dense"):
            results[name]["max_rel_err_vs_flash"] = [round(float((x - y).abs().max() / y.abs().max()), 4)
                                                     for x, y in zip(got, ref)]
    rec.emit(rows=rows, torch=torch.__version__, cudnn=torch.backends.cudnn.version(), **results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
