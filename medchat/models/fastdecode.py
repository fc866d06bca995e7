"""medchat's own batch-1 decode loop for Llama-family models.

Why it exists: at batch 1, transformers' ``generate()`` spends most of each token's time in Python
(logits processors, cache bookkeeping, mask building, one kernel launch per tiny op), not in the
GPU kernels. This module runs the model's own weights through a short, fixed forward pass:

* q/k/v and gate/up projections fused into one matrix each (fewer, larger matmuls);
* a static KV cache owned here (no per-token allocation), reused across turns when the new prompt
  starts with the previous one (the chat re-sends earlier turns);
* on CUDA, optional int4 weight-only matrices (torchao's tile-packed format, group 128, the
  tinygemm kernel), and one CUDA graph per attention-length bucket that replays the whole decode
  step (forward + sampling) with a single launch; the host reads token *t* while the GPU computes
  token *t + 1*;
* sampling (repetition penalty, temperature, top-k, top-p) on the device, in HF's order.

Entry points: ``unsupported_reason(model)``, ``FastDecoder(model, quantize=...)``,
``FastDecoder.generate(prompt_ids, settings, cancel, eos_ids)`` yielding token ids, and
``IncrementalDetokenizer`` turning ids into text deltas.

A LoRA adapter stays unmerged, as it was trained: each projection computes its base matmul (16-bit or
int4) and adds ``scale · (x Aᵀ) Bᵀ`` in 16-bit, inside the same CUDA graph. Rounding a merged update
into int4 would lose most of it (benchmarks/RESULTS.md §5). ``set_adapter`` swaps the small matrices
in place, so an adapter switch does not rebuild the decoder.

Building a decoder takes the weights over: the source model's projection weights are released as
they are fused (memory stays near one copy), so the caller must not use the model afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

if TYPE_CHECKING:
    import torch

    from medchat.config import GenerationSettings
    from medchat.models.lora import LoraWeights

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
Quantize = Literal["none", "int4", "int8"]
PREFILL_CHUNK = 512  # tokens per prefill forward: bounds the attention scores' memory
MIN_BUCKET = 256  # smallest attention length a CUDA graph is captured for
INT4_ALGORITHM = "tinygemm"  # how int4 scales/zeros are chosen: "tinygemm" (min/max) or "hqq" (optimised)
# How one new token's LoRA products are computed on CUDA: "addmm" two GEMMs per projection (measured:
# benchmarks/RESULTS.md), "mv" two GEMVs, "fused" folded into the norm, activation and residual kernels
# (lora_kernels, Triton; checked against torch in Triton's interpreter, not yet timed on a GPU: run
# benchmarks/adapter_switch.py --compare-ops before making it the default). Prompts and the CPU use "addmm".
LORA_OP = "addmm"


class FastPathUnavailable(Exception):
    """This model or machine cannot use the fast path; the message says why (for the status)."""


def _unwrap(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (LoRA layers stay in place and are merged here)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def unsupported_reason(model: Any, quantize: Quantize = "none") -> str | None:
    """Why ``model`` cannot go through FastDecoder, or None when it can. Touches nothing."""
    model = _unwrap(model)
    cfg = getattr(model, "config", None)
    mtype = getattr(cfg, "model_type", "")
    if mtype not in SUPPORTED_TYPES:
        return f"model type {mtype or '?'} is not one of {', '.join(SUPPORTED_TYPES)}"
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or ()):
        return "sliding-window attention layers are not supported"
    if mtype == "mistral" and getattr(cfg, "sliding_window", None):
        return "sliding-window attention is not supported"
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope in ("dynamic", "longrope"):
        return f"rope type {rope} changes with length; not supported"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(model, "lm_head"):
        return "unexpected module layout"
    for name, module in model.named_modules():
        if "Linear8bit" in type(module).__name__:
            return f"{name} is 8-bit quantised; not supported"
        if any(getattr(module, "use_dora", {}).values()):
            return "DoRA adapters are not supported"
    if quantize == "int4":
        import torch

        if not torch.cuda.is_available():
            return "int4 weights need CUDA"
        try:
            import torchao  # noqa: F401
        except ImportError:
            return "int4 weights need torchao (pip install torchao)"
    return None


# ---------------------------------------------------------------------------------------------
# Weights


class _Linear:
    """y = x @ W^T (+ b) (+ LoRA): W plain (any dtype), int4 tile-packed for aten's tinygemm (CUDA), or
    int8 with one scale per output row for aten's int8 weight-only kernel (CPU); the LoRA pair
    (A [r, in], B [out, r] with the scale folded in) is applied in the activations' dtype."""

    def __init__(self, weight: "torch.Tensor", bias: "torch.Tensor | None", quantize: Quantize) -> None:
        import torch

        self.out_features = weight.shape[0]
        self.bias = bias
        self.format = "none"
        self.scale_and_zero = None
        self.pad = 0
        if quantize == "int4" and _int4_ok(weight):
            self.format = "int4"
            self.pad = -weight.shape[1] % 1024  # the kernel wants in_features padded to 1024
            from torchao.quantization.quantize_.workflows.int4.int4_tile_packed_to_4d_tensor import (
                Int4TilePackedTo4dTensor,
            )

            q = Int4TilePackedTo4dTensor.from_hp(weight.to(torch.bfloat16), [1, 128],
                                                 int4_choose_qparams_algorithm=INT4_ALGORITHM)
            self.weight, self.scale_and_zero = q.qdata, q.scale_and_zero
        elif quantize == "int8" and weight.device.type == "cpu":
            # symmetric, per output row: W ~ q * scale, |q| <= 127 (the kernel dequantises row by row)
            self.format = "int8"
            w = weight.to(torch.float32)
            scale = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
            self.weight = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
            self.scale_and_zero = scale.to(weight.dtype)  # the kernel wants the activations' dtype
        else:
            self.weight = weight
        self.lora_a: "torch.Tensor | None" = None
        self.lora_b: "torch.Tensor | None" = None
        self.lora_on = True  # switched off only to measure what the adapter changes (``without_adapter``)

    @property
    def int4(self) -> bool:
        return self.format == "int4"

    def spec(self) -> tuple[int, str, int]:
        """Static facts: identical for every layer (checked), so one decode step serves them all."""
        return (self.out_features, self.format, self.pad)

    @property
    def lora_active(self) -> bool:
        return self.lora_a is not None and self.lora_on

    def set_lora(self, a: "torch.Tensor | None", b: "torch.Tensor | None") -> bool:
        """Use the LoRA pair (a, b), or none. Same shapes: copied into the existing buffers, so captured
        CUDA graphs stay valid; returns True when they must be captured again."""
        if a is not None and self.lora_a is not None and a.shape == self.lora_a.shape:
            self.lora_a.copy_(a)
            self.lora_b.copy_(b)
            return False
        changed = a is not None or self.lora_a is not None
        self.lora_a, self.lora_b = a, b
        return changed

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        y = self.base(x)
        if self.lora_active:  # in place: no copy of y (two kernels in all)
            if LORA_OP == "mv" and x.shape[0] == 1:
                y[0].addmv_(self.lora_b, torch.mv(self.lora_a, x[0]))
            else:
                y.addmm_(torch.nn.functional.linear(x, self.lora_a), self.lora_b.t())
        return y

    def base(self, x: "torch.Tensor") -> "torch.Tensor":
        """x @ W^T (+ b), without the LoRA; contiguous."""
        import torch

        if self.format == "int4":
            xp = torch.nn.functional.pad(x, (0, self.pad)) if self.pad else x
            y = torch.ops.aten._weight_int4pack_mm(xp, self.weight, 128, self.scale_and_zero)[:, : self.out_features]
        elif self.format == "int8":
            y = torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scale_and_zero)
        else:
            y = torch.nn.functional.linear(x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.contiguous()


def _rms(x, w, eps: float, fused: bool = False):
    """LlamaRMSNorm: op for op like transformers (same bits), or torch's one-kernel version (CUDA)."""
    import torch

    if fused:
        return torch.nn.functional.rms_norm(x, (x.shape[-1],), w, eps)
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(dtype)


def _rope(x, cos, sin, fused: bool = False):
    """Rotary embedding. ``fused``: ``sin`` comes with its first half negated, saving two kernels."""
    import torch

    half = x.shape[-1] // 2
    if fused:
        return torch.addcmul(x * cos, torch.cat((x[..., half:], x[..., :half]), dim=-1), sin)
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _pre_attention(x, ln, qkv: _Linear, q_norm, k_norm, cos, sin, dims: tuple, kernels: Any = None):
    """Norm, fused q/k/v projection, q/k norms (Qwen3), rotary embedding -> q [T,nq,hd], k, v [T,nkv,hd].
    ``kernels``: lora_kernels, for one token with a LoRA on CUDA."""
    nq, nkv, hd, eps, fused = dims
    T = x.shape[0]
    if kernels is not None and qkv.lora_active:
        normed, part = kernels.rms_shrink(x, ln, eps, qkv.lora_a)
        qkv = kernels.expand_(qkv.base(normed), part, qkv.lora_b)
    else:
        qkv = qkv(_rms(x, ln, eps, fused))
    v = qkv[:, (nq + nkv) * hd :].view(T, nkv, hd)
    if q_norm is None and fused:  # one rotary pass over q and k together
        qk = _rope(qkv[:, : (nq + nkv) * hd].view(T, nq + nkv, hd), cos, sin, True)
        return qk[:, :nq], qk[:, nq:], v
    q = qkv[:, : nq * hd].view(T, nq, hd)
    k = qkv[:, nq * hd : (nq + nkv) * hd].view(T, nkv, hd)
    if q_norm is not None:
        q = _rms(q, q_norm, eps, fused)
        k = _rms(k, k_norm, eps, fused)
    return _rope(q, cos, sin, fused), _rope(k, cos, sin, fused), v


def _post_attention(x, att, o: _Linear, ln, gate_up: _Linear, down: _Linear, dims: tuple, kernels: Any = None):
    """Output projection + residual, norm, SwiGLU MLP + residual. ``kernels``: as for _pre_attention."""
    import torch

    eps, fused = dims
    if kernels is not None and (o.lora_active or gate_up.lora_active or down.lora_active):
        part = kernels.shrink(att, o.lora_a) if o.lora_active else None
        x = kernels.add_expand(x, o.base(att), part, o.lora_b if o.lora_active else None)
        normed, part = kernels.rms_shrink(x, ln, eps, gate_up.lora_a if gate_up.lora_active else None)
        act, part = kernels.swiglu(gate_up.base(normed), part, gate_up.lora_b if gate_up.lora_active else None,
                                   down.lora_a if down.lora_active else None)
        return kernels.add_expand(x, down.base(act), part, down.lora_b if down.lora_active else None)
    x = x + o(att)
    g, u = gate_up(_rms(x, ln, eps, fused)).chunk(2, dim=-1)
    return x + down(torch.nn.functional.silu(g) * u)


def _lora_kernels() -> Any:
    """medchat.models.lora_kernels when LORA_OP asks for it and Triton imports, else None."""
    if LORA_OP != "fused":
        return None
    try:
        from medchat.models import lora_kernels
    except ImportError:  # no Triton (e.g. a torch build without it): two GEMMs a projection
        return None
    return lora_kernels


def _int4_ok(weight: "torch.Tensor") -> bool:
    return weight.device.type == "cuda" and weight.shape[1] % 128 == 0


@dataclass
class _Layer:
    qkv: _Linear
    o: _Linear
    gate_up: _Linear
    down: _Linear
    ln1: "torch.Tensor"
    ln2: "torch.Tensor"
    q_norm: "torch.Tensor | None"
    k_norm: "torch.Tensor | None"


def _dense(module: Any, device: Any) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """The base weight and bias of a linear layer on ``device`` (a bitsandbytes 4-bit weight is
    dequantised); a LoRA wrapped around it is left out: the decoder applies it separately."""
    base = getattr(module, "base_layer", module)
    w = base.weight
    if getattr(w, "quant_state", None) is not None:  # bitsandbytes Params4bit
        import bitsandbytes.functional as bnbf

        weight = bnbf.dequantize_4bit(w.data, w.quant_state).to(w.quant_state.dtype)
    else:
        weight = w.data
    weight = weight.to(device)
    bias = base.bias.data.to(device) if getattr(base, "bias", None) is not None else None
    return weight, bias


def _release(module: Any) -> None:
    """Drop a layer's weights once they are fused (the source model is not used afterwards)."""
    import torch

    base = getattr(module, "base_layer", module)
    base.weight = torch.nn.Parameter(torch.empty(0, device=base.weight.device), False)


def _take(linears: Sequence[Any], device: Any) -> tuple["torch.Tensor", "torch.Tensor | None"]:
    """Concatenate the effective weights (and biases) of ``linears`` on ``device``; release them."""
    import torch

    parts = [_dense(m, device) for m in linears]
    weight = torch.cat([w for w, _ in parts], 0) if len(parts) > 1 else parts[0][0]
    bias = None
    if any(b is not None for _, b in parts):
        bias = torch.cat([b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=device)
                          for w, b in parts])
    for m in linears:
        _release(m)
    return weight, bias


# ---------------------------------------------------------------------------------------------
# The decoder


class FastDecoder:
    """Batch-1 greedy/sampled decoding over a Llama-family model's weights (see module docstring)."""

    def __init__(
        self,
        model: Any,
        *,
        quantize: Quantize = "none",
        cuda_graphs: bool | None = None,
        max_context: int | None = None,
        device: Any = None,
        fused_ops: bool | None = None,
        adapter: "LoraWeights | None" = None,
    ) -> None:
        """``adapter``: the LoRA to apply; by default the active adapter of a PEFT-wrapped ``model``."""
        import torch

        from medchat.models.lora import UnsupportedLora, lora_from_peft

        reason = unsupported_reason(model, quantize)
        if reason:
            raise FastPathUnavailable(reason)
        try:
            adapter = adapter if adapter is not None else lora_from_peft(model)
        except UnsupportedLora as exc:
            raise FastPathUnavailable(str(exc)) from exc
        model = _unwrap(model)
        cfg = model.config
        inner = model.model
        # weights move to ``device`` one matrix at a time: a model loaded on the CPU reaches the GPU
        # already quantised, so GPU memory never holds the 16-bit copy
        self.device = torch.device(device) if device is not None else inner.embed_tokens.weight.device
        if quantize == "int4" and self.device.type != "cuda":
            self.device = torch.device("cuda")
        if quantize == "int8" and self.device.type != "cpu":
            raise FastPathUnavailable("int8 weights are for the CPU (CUDA uses int4)")
        self.dtype = inner.embed_tokens.weight.dtype
        if self.dtype not in (torch.float32, torch.bfloat16, torch.float16):  # e.g. a 4-bit checkpoint's
            self.dtype = torch.bfloat16
        # CUDA: fewer, fused kernels; CPU: transformers' ops exactly (the same greedy tokens)
        self.fused_ops = self.device.type == "cuda" if fused_ops is None else fused_ops
        self.quantize: Quantize = quantize
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise FastPathUnavailable("CUDA graphs need a CUDA device")
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.vocab = model.lm_head.weight.shape[0]
        limit = getattr(cfg, "max_position_embeddings", 4096) or 4096
        self.max_context = min(limit, max_context) if max_context else limit

        dev = self.device

        def vec(t: Any) -> Any:
            return t.weight.data.to(dev) if t is not None else None

        with torch.no_grad():
            head = model.lm_head
            tied = getattr(head, "base_layer", head).weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
            self.embed = inner.embed_tokens.weight.data.to(dev, self.dtype)
            self.layers: list[_Layer] = []
            for layer in inner.layers:
                att, mlp = layer.self_attn, layer.mlp
                cast = lambda wb: (wb[0].to(self.dtype), wb[1])  # noqa: E731
                qkv = _Linear(*cast(_take([att.q_proj, att.k_proj, att.v_proj], dev)), quantize)
                o = _Linear(*cast(_take([att.o_proj], dev)), quantize)
                gate_up = _Linear(*cast(_take([mlp.gate_proj, mlp.up_proj], dev)), quantize)
                down = _Linear(*cast(_take([mlp.down_proj], dev)), quantize)
                self.layers.append(
                    _Layer(qkv, o, gate_up, down, vec(layer.input_layernorm), vec(layer.post_attention_layernorm),
                           vec(getattr(att, "q_norm", None)), vec(getattr(att, "k_norm", None)))
                )
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            self.norm = vec(inner.norm)
            if tied and quantize == "none":
                self.lm_head = _Linear(self.embed, None, "none")
            else:
                self.lm_head = _Linear(*cast(_take([head], dev)) if not tied else (self.embed, None), quantize)
            self._rotary = inner.rotary_emb
        first = self.layers[0]
        # Each matrix is int4 only where its shape allows it (SmolLM2's 576 columns: down_proj alone).
        self.int4_matrices = [name for name in ("qkv", "o", "gate_up", "down") if getattr(first, name).int4]
        self.int4 = bool(self.int4_matrices)
        self.int8 = first.qkv.format == "int8"
        self._lora_kernels = _lora_kernels() if self.fused_ops and self.device.type == "cuda" else None
        self._pre_dims = (self.n_heads, self.n_kv, self.head_dim, self.eps, self.fused_ops)
        self._post_dims = (self.eps, self.fused_ops)
        # output sizes of the projections fused into each matrix, for placing a LoRA's B blocks
        self._parts = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
                       "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}
        kv = self.n_kv * self.head_dim
        inter = first.gate_up.out_features // 2
        self._part_sizes = {"q_proj": self.n_heads * self.head_dim, "k_proj": kv, "v_proj": kv,
                            "o_proj": first.o.out_features, "gate_proj": inter, "up_proj": inter,
                            "down_proj": first.down.out_features}
        if any((layer.qkv.spec(), layer.o.spec(), layer.gate_up.spec(), layer.down.spec())
               != (first.qkv.spec(), first.o.spec(), first.gate_up.spec(), first.down.spec())
               for layer in self.layers):
            raise FastPathUnavailable("layers differ in shape")
        self._capacity = 0
        self._cache: "torch.Tensor | None" = None
        self._cached_ids: list[int] = []
        self._graphs: dict[tuple[int, bool, bool], Any] = {}
        self._pool = None
        # device-side state read and written by the decode step (static addresses for CUDA graphs)
        dev = self.device
        self._tok = torch.zeros(1, dtype=torch.long, device=dev)
        self._pos = torch.zeros(1, dtype=torch.long, device=dev)
        self._out = torch.zeros(1, dtype=torch.long, device=dev)
        self._seen = torch.zeros(self.vocab, dtype=torch.bool, device=dev)
        self._temperature = torch.ones((), dtype=torch.float32, device=dev)
        self._top_p = torch.ones((), dtype=torch.float32, device=dev)
        self._top_k = torch.full((), self.vocab, dtype=torch.long, device=dev)
        self._penalty = torch.ones((), dtype=torch.float32, device=dev)
        self._ranks = torch.arange(self.vocab, device=dev)
        self.lock = threading.Lock()
        self.adapter_name = ""
        self._lora_on = True  # False inside ``without_adapter``; graphs are captured per state
        self.set_adapter(adapter)

    # -- adapter --------------------------------------------------------------------------------
    def _linears(self) -> "Iterator[tuple[int, str, _Linear]]":
        for i, layer in enumerate(self.layers):
            for name in ("qkv", "o", "gate_up", "down"):
                yield i, name, getattr(layer, name)
        yield -1, "lm_head", self.lm_head

    def _fused_pair(self, adapter: "LoraWeights", layer: int, name: str) -> tuple[Any, Any]:
        """(A, B) of the projections fused into one matrix: A's stacked, B's block-diagonal, scales in B."""
        import torch

        parts = ("lm_head",) if name == "lm_head" else self._parts[name]
        found = [adapter.get(layer, p) for p in parts]
        if not any(found):
            return None, None
        sizes = [self.vocab] if name == "lm_head" else [self._part_sizes[p] for p in parts]
        rank = sum(f[0].shape[0] for f in found if f)
        a = torch.cat([f[0] for f in found if f]).to(self.device, self.dtype)
        b = torch.zeros(sum(sizes), rank, dtype=self.dtype, device=self.device)
        row = col = 0
        for size, f in zip(sizes, found):
            if f:
                lora_a, lora_b, scale = f
                if lora_b.shape != (size, lora_a.shape[0]):
                    raise FastPathUnavailable(f"adapter {adapter.name}: layer {layer} {name} has a LoRA B of shape "
                                              f"{tuple(lora_b.shape)}, expected {(size, lora_a.shape[0])}")
                b[row : row + size, col : col + lora_a.shape[0]] = lora_b.to(self.device, torch.float32) * scale
                col += lora_a.shape[0]
            row += size
        return a, b

    def set_adapter(self, adapter: "LoraWeights | None") -> None:
        """Apply ``adapter``'s LoRA matrices unmerged (None: the base model alone). Matrices of the same
        shapes as the current ones are copied in place, keeping the captured CUDA graphs."""
        import torch

        with self.lock, torch.no_grad():
            pairs = [(linear, *self._fused_pair(adapter, i, name)) if adapter else (linear, None, None)
                     for i, name, linear in self._linears()]
            recapture = False
            for linear, a, b in pairs:
                recapture |= linear.set_lora(a, b)
            if recapture:
                self._drop_graphs()
            self._cached_ids = []  # the cached K/V were computed with the previous adapter
            self.adapter_name = adapter.name if adapter else ""

    @contextlib.contextmanager
    def without_adapter(self) -> "Iterator[None]":
        """The base model alone for the duration (compare mode, the fidelity probe): the LoRA products
        are left out, in eager forwards and in CUDA graphs captured for that state."""
        linears = [linear for _i, _n, linear in self._linears()]

        def turn(on: bool) -> None:
            with self.lock:  # never in the middle of a generation
                for linear in linears:
                    linear.lora_on = on
                self._lora_on = on
                self._cached_ids = []  # K/V computed in the other state must not be reused

        turn(False)
        try:
            yield
        finally:
            turn(True)

    def prompt_logits(self, prompt_ids: Sequence[int]) -> "torch.Tensor":
        """Next-token logits (float32, [len, vocab]) at every position of ``prompt_ids``, without
        sampling; used to measure what the adapter changes. Overwrites the reusable cache."""
        import torch

        with self.lock, torch.inference_mode():
            self._ensure_capacity(len(prompt_ids))
            self._cached_ids = []
            ids = torch.tensor(list(prompt_ids), dtype=torch.long, device=self.device)
            positions = torch.arange(len(prompt_ids), device=self.device)
            return self._forward(ids, positions, len(prompt_ids), every_position=True)

    # -- description ----------------------------------------------------------------------------
    def describe(self) -> str:
        parts = ["medchat decode loop"]
        if self.int4:
            where = "" if len(self.int4_matrices) == 4 else f" on {', '.join(self.int4_matrices)} only"
            parts.append(f"int4 g128{where} (torchao tile-packed)")
        if self.int8:
            parts.append("int8 weights (one scale per row)")
        if self.cuda_graphs:
            parts.append("CUDA graphs")
        return ", ".join(parts)

    # -- cache ----------------------------------------------------------------------------------
    def _ensure_capacity(self, needed: int) -> None:
        import torch

        if needed <= self._capacity:
            return
        cap = 512
        while cap < needed:
            cap *= 2
        cap = min(cap, max(self.max_context, needed))
        shape = (len(self.layers), 2, self.n_kv, cap, self.head_dim)
        cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self._cache is not None:
            cache[:, :, :, : self._capacity].copy_(self._cache)
        self._cache = cache
        with torch.no_grad():
            positions = torch.arange(cap, device=self.device)[None]
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = self._rotary(probe, positions)
        self._cos, self._sin = cos[0], sin[0]  # [cap, head_dim]
        if self.fused_ops:
            half = self.head_dim // 2
            self._sin = torch.cat((-self._sin[:, :half], self._sin[:, half:]), dim=-1)
        self._capacity = cap
        self._drop_graphs()  # captured graphs point at the old buffers

    def _drop_graphs(self) -> None:
        """Forget the captured graphs, and their memory pool: CUDA's allocator refuses to capture into a
        pool whose graphs are all gone."""
        self._graphs.clear()
        self._pool = None

    # -- forward --------------------------------------------------------------------------------
    def _forward(self, ids: "torch.Tensor", positions: "torch.Tensor", attn_len: int,
                 every_position: bool = False) -> "torch.Tensor":
        """Logits (float32) of the last of ``ids`` at ``positions`` (of each with ``every_position``);
        writes their K/V into the cache."""
        import torch

        T = ids.shape[0]
        nq, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        group = nq // nkv
        x = self.embed.index_select(0, ids)  # [T, H]
        cos = self._cos.index_select(0, positions)[:, None]  # [T, 1, hd]
        sin = self._sin.index_select(0, positions)[:, None]
        keys = torch.arange(attn_len, device=ids.device)
        mask = torch.where(keys[None] <= positions[:, None], 0.0, float("-inf")).to(x.dtype)  # [T, L]
        if self.fused_ops:  # rows ordered (group, T) like the grouped queries below
            mask = mask.repeat(group, 1)
        else:  # as transformers calls SDPA: no mask for one new token over exactly its keys, causal for
            # a fresh prompt (the CPU path attends over exactly the positions so far)
            causal = T > 1 and T == attn_len
            sdpa_mask = None if causal or (T == 1 and not self.cuda_graphs) else mask
        cache = self._cache
        kernels = self._lora_kernels if T == 1 else None
        for i, layer in enumerate(self.layers):
            q, k, v = _pre_attention(x, layer.ln1, layer.qkv, layer.q_norm, layer.k_norm, cos, sin, self._pre_dims,
                                     kernels)
            kc, vc = cache[i, 0], cache[i, 1]  # [nkv, cap, hd]
            kc.index_copy_(1, positions, k.transpose(0, 1))
            vc.index_copy_(1, positions, v.transpose(0, 1))
            if self.fused_ops:
                # grouped-query attention without copying K/V: each KV head's query rows side by side;
                # scale, mask and q @ k^T in one kernel; softmax accumulates in fp32
                qg = q.view(T, nkv, group, hd).permute(1, 2, 0, 3).reshape(nkv, group * T, hd)
                scores = torch.baddbmm(mask, qg, kc[:, :attn_len].transpose(1, 2), alpha=self.scale)
                att = torch.bmm(torch.softmax(scores, dim=-1), vc[:, :attn_len]).view(nkv, group, T, hd)
                att = att.permute(2, 0, 1, 3).reshape(T, nq * hd)
            else:  # transformers' own kernel, called the way it calls it (one op, the same numbers)
                att = torch.nn.functional.scaled_dot_product_attention(
                    q.transpose(0, 1)[None], kc[None, :, :attn_len], vc[None, :, :attn_len],
                    attn_mask=sdpa_mask, is_causal=causal, scale=self.scale, enable_gqa=True,
                )  # [1, nq, T, hd]
                att = att[0].transpose(0, 1).reshape(T, nq * hd)
            x = _post_attention(x, att, layer.o, layer.ln2, layer.gate_up, layer.down, self._post_dims, kernels)
        x = _rms(x if every_position else x[-1:], self.norm, self.eps, self.fused_ops)
        logits = self.lm_head(x).to(torch.float32)
        return logits if every_position else logits[0]

    # -- sampling (HF order: repetition penalty, temperature, top-k, top-p) ----------------------
    def _sample(self, logits: "torch.Tensor", greedy: bool) -> "torch.Tensor":
        import torch

        pen = self._penalty
        logits = torch.where(self._seen, torch.where(logits > 0, logits / pen, logits * pen), logits)
        if greedy:
            return torch.argmax(logits).view(1)
        logits = logits / self._temperature
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_logits = torch.where(self._ranks < self._top_k, sorted_logits, float("-inf"))
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
        probs = torch.where((before < self._top_p) | (self._ranks == 0), probs, 0.0)
        race = torch.empty_like(probs).exponential_(1.0)  # argmax(p / Exp(1)) samples from p
        return order.index_select(0, torch.argmax(probs / race).view(1))

    def _step(self, attn_len: int, greedy: bool) -> None:
        """One decode step on device state: feed _tok at _pos, write the next token everywhere."""
        logits = self._forward(self._tok, self._pos, attn_len)
        nxt = self._sample(logits, greedy)
        self._out.copy_(nxt)
        self._tok.copy_(nxt)
        self._seen.index_fill_(0, nxt, True)
        self._pos.add_(1)

    def _bucket(self, position: int) -> int:
        """Attention length for a step at ``position``: exact without CUDA graphs; with them a power
        of two (>= MIN_BUCKET, <= capacity), so that a few captured graphs cover every length."""
        if not self.cuda_graphs:
            return position + 1
        length = MIN_BUCKET
        while length < position + 1:
            length *= 2
        return min(length, self._capacity)

    def _graph(self, attn_len: int, greedy: bool) -> Any:
        import torch

        key = (attn_len, greedy, self._lora_on)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph
        saved = [t.clone() for t in (self._tok, self._pos, self._seen)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up kernels/workspaces outside the capture
            self._step(attn_len, greedy)
        torch.cuda.current_stream().wait_stream(side)
        for t, s in zip((self._tok, self._pos, self._seen), saved):
            t.copy_(s)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(attn_len, greedy)
        self._graphs[key] = graph
        return graph

    # -- generation -----------------------------------------------------------------------------
    def _set_sampling(self, settings: "GenerationSettings") -> bool:
        import torch

        greedy = settings.temperature <= 0
        self._temperature.fill_(max(settings.temperature, 1e-5))
        self._top_p.fill_(settings.top_p)
        self._top_k.fill_(settings.top_k if settings.top_k > 0 else self.vocab)
        self._penalty.fill_(settings.repetition_penalty)
        if settings.seed >= 0 and not greedy:
            torch.manual_seed(settings.seed)
        return greedy

    def _prefill(self, prompt: Sequence[int]) -> None:
        """Fill the cache for ``prompt`` (reusing the common prefix of the last one); leave the
        last prompt token in _tok at _pos, ready for the first decode step."""
        import torch

        reuse = 0
        limit = min(len(self._cached_ids), len(prompt) - 1)
        while reuse < limit and self._cached_ids[reuse] == prompt[reuse]:
            reuse += 1
        ids = torch.tensor(list(prompt), dtype=torch.long, device=self.device)
        for start in range(reuse, len(prompt) - 1, PREFILL_CHUNK):
            end = min(start + PREFILL_CHUNK, len(prompt) - 1)
            positions = torch.arange(start, end, device=self.device)
            self._forward(ids[start:end], positions, self._bucket(end - 1))
        self._tok.fill_(prompt[-1])
        self._pos.fill_(len(prompt) - 1)
        self._seen.zero_()
        self._seen.index_fill_(0, ids, True)

    def generate(
        self,
        prompt_ids: Sequence[int],
        settings: "GenerationSettings",
        cancel: threading.Event | None = None,
        eos_ids: Sequence[int] = (),
    ) -> Iterator[int]:
        """Yield up to ``settings.max_new_tokens`` new token ids (an EOS id ends it, unyielded).
        Stops within one token of ``cancel`` being set. One generation at a time per decoder."""
        import torch

        if not prompt_ids:
            raise ValueError("empty prompt")
        if not self.lock.acquire(blocking=False):
            raise RuntimeError("this decoder is already generating")
        try:
            with torch.inference_mode():
                yield from self._generate(list(prompt_ids), settings, cancel or threading.Event(), set(eos_ids))
        finally:
            self.lock.release()

    def _generate(self, prompt: list[int], settings: "GenerationSettings", cancel: threading.Event,
                  eos: set[int]) -> Iterator[int]:
        import torch

        budget = min(settings.max_new_tokens, self.max_context - len(prompt))
        if budget <= 0:
            raise ValueError(f"the prompt ({len(prompt)} tokens) fills the context ({self.max_context})")
        self._ensure_capacity(len(prompt) + budget)
        greedy = self._set_sampling(settings)
        self._cached_ids = []  # invalid while the cache is being rewritten
        self._prefill(prompt)
        seq = list(prompt)
        if not self.cuda_graphs:
            for _ in range(budget):
                if cancel.is_set():
                    break
                self._step(self._bucket(len(seq) - 1), greedy)
                tok = int(self._out.item())
                if tok in eos:
                    break
                seq.append(tok)
                yield tok
            self._cached_ids = seq[:-1]  # every fed position holds valid K/V
            return
        # CUDA: keep one step in flight; read token t while the GPU computes t + 1
        slots = [torch.zeros(1, dtype=torch.long, pin_memory=True) for _ in range(2)]
        events = [torch.cuda.Event() for _ in range(2)]
        launched = 0  # steps launched; step n feeds position len(prompt) - 1 + n

        def launch() -> None:
            nonlocal launched
            position = len(prompt) - 1 + launched
            self._graph(self._bucket(position), greedy).replay()
            slot = launched % 2
            slots[slot].copy_(self._out, non_blocking=True)
            events[slot].record()
            launched += 1

        received = 0
        launch()
        try:
            while received < launched:
                if launched < budget and not cancel.is_set():
                    launch()
                events[received % 2].synchronize()
                tok = int(slots[received % 2][0])
                received += 1
                if tok in eos or cancel.is_set():
                    break
                seq.append(tok)
                yield tok
        finally:
            torch.cuda.current_stream().synchronize()
            # positions up to len(seq) - 2 hold valid K/V (the last token was never fed back)
            self._cached_ids = seq[:-1]


# ---------------------------------------------------------------------------------------------
# Text


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas without re-decoding everything, holding
    back bytes that do not yet form a whole character (a multi-byte character split over tokens),
    for at most 4 tokens (a character has at most 4 bytes; longer runs are invalid and shown as is)."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True, window: int = 6) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # decode from here, so that word-boundary spacing is right
        self.read = 0  # text up to here has been emitted
        self.window = window

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip, clean_up_tokenization_spaces=False)

    def push(self, token: int) -> str:
        """Add one token; return the new text it completes (may be "")."""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix : self.read])
        now = self._decode(self.ids[self.prefix :])
        # a character is at most 4 bytes: bytes still invalid after 4 tokens are emitted as they are
        stuck = len(self.ids) - self.read >= 4
        if len(now) > len(before) and (not now.endswith("\ufffd") or stuck):
            delta = now[len(before) :]
            self.read = len(self.ids)
            self.prefix = max(self.prefix, self.read - self.window)
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back at the end (possibly a lone replacement character)."""
        before = self._decode(self.ids[self.prefix : self.read])
        now = self._decode(self.ids[self.prefix :])
        self.read = len(self.ids)
        return now[len(before) :] if len(now) > len(before) else ""


def stream_text(
    decoder: FastDecoder,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    settings: "GenerationSettings",
    cancel: threading.Event | None = None,
    eos_ids: Sequence[int] = (),
    skip_special_tokens: bool = True,
) -> Iterator[tuple[str, int]]:
    """(text delta, tokens it came from) pairs; tokens of held-back text count toward the next one."""
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens)
    pending = 0
    for tok in decoder.generate(prompt_ids, settings, cancel, eos_ids):
        pending += 1
        text = detok.push(tok)
        if text:
            yield text, pending
            pending = 0
    tail = detok.flush()
    if tail or pending:
        yield tail, pending
