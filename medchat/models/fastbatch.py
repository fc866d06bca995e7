"""Many independent prompts decoded together over a ``FastDecoder``'s weights (evaluation's batched path).

Why beside the batch-1 loop and not transformers' ``generate``: a left-padded ``generate`` batch runs
until its longest reply ends, finished rows still computed as padding, and on the CPU it cannot use the
decoder's int8 weights. Here every row owns a *slot* of a static KV cache and its own positions (no
padding: a row attends to its own keys only). A row that ends frees its slot at once; the next prompt is
prefilled into it, so the batch stays full until the prompts run out, and then shrinks (the last slot
moves into the freed one, keeping the live rows in ``[0, n)``: one contiguous slice per step, no gather).

The weights, the LoRA (unmerged, ``set_adapter``/``without_adapter``) and the per-layer maths are the
decoder's own (``_pre_attention``/``_post_attention``); only attention differs: per row, over its slot.
Eager on CUDA too (no CUDA graphs: the batch changes shape as rows come and go).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from medchat.models.fastdecode import PREFILL_CHUNK, FastDecoder, _post_attention, _pre_attention, _rms

if TYPE_CHECKING:
    import torch

BLOCK = 256  # keys per attention block: every row's sums run over the same blocks whatever the batch


def slot_bytes(decoder: FastDecoder, tokens: int) -> int:
    """Bytes of one slot's K/V for ``tokens`` positions."""
    import torch

    width = torch.empty((), dtype=decoder.dtype).element_size()
    return len(decoder.layers) * 2 * decoder.n_kv * tokens * decoder.head_dim * width


class SlotBatch:
    """A static K/V cache of ``slots`` rows × ``capacity`` positions; ``prefill`` one prompt into a slot,
    ``step`` every live slot by one token, ``move`` a slot (compaction). The caller keeps each slot's
    position (the number of tokens whose K/V it holds) and holds ``decoder.lock``."""

    def __init__(self, decoder: FastDecoder, slots: int, capacity: int) -> None:
        import torch

        capacity = -(-capacity // BLOCK) * BLOCK  # whole attention blocks
        decoder._ensure_capacity(capacity)  # the rotary tables cover every position (the cache is reused)
        self.decoder = decoder
        self.capacity = capacity
        self.cache = torch.zeros((len(decoder.layers), 2, slots, decoder.n_kv, capacity, decoder.head_dim),
                                 dtype=decoder.dtype, device=decoder.device)

    def _logits(self, x: "torch.Tensor") -> "torch.Tensor":
        d = self.decoder
        import torch

        return d.lm_head(_rms(x, d.norm, d.eps, d.fused_ops)).to(torch.float32)

    def prefill(self, slot: int, ids: Sequence[int]) -> "torch.Tensor":
        """Write the K/V of ``ids`` (positions 0..) into ``slot``; the next-token logits [vocab]."""
        import torch

        d = self.decoder
        all_ids = torch.tensor(list(ids), dtype=torch.long, device=d.device)
        nq = d.n_heads
        x_last = None
        for start in range(0, len(ids), PREFILL_CHUNK):
            end = min(start + PREFILL_CHUNK, len(ids))
            positions = torch.arange(start, end, device=d.device)
            x = d.embed.index_select(0, all_ids[start:end])
            cos = d._cos.index_select(0, positions)[:, None]
            sin = d._sin.index_select(0, positions)[:, None]
            T = end - start
            mask = None
            if start:  # a later chunk attends to every earlier position and causally within itself
                keys = torch.arange(end, device=d.device)
                mask = keys[None] <= positions[:, None]
            for i, layer in enumerate(d.layers):
                q, k, v = _pre_attention(x, layer.ln1, layer.qkv, layer.q_norm, layer.k_norm, cos, sin, d._pre_dims)
                kc, vc = self.cache[i, 0, slot], self.cache[i, 1, slot]  # [nkv, cap, hd]
                kc[:, start:end] = k.transpose(0, 1)
                vc[:, start:end] = v.transpose(0, 1)
                att = torch.nn.functional.scaled_dot_product_attention(
                    q.transpose(0, 1)[None], kc[None, :, :end], vc[None, :, :end],
                    attn_mask=mask, is_causal=mask is None, scale=d.scale, enable_gqa=True,
                )[0].transpose(0, 1).reshape(T, nq * d.head_dim)
                x = _post_attention(x, att, layer.o, layer.ln2, layer.gate_up, layer.down, d._post_dims)
            x_last = x[-1:]
        return self._logits(x_last)[0]

    def step(self, tokens: "torch.Tensor", positions: "torch.Tensor", attn_len: int) -> "torch.Tensor":
        """Feed ``tokens[r]`` at ``positions[r]`` for the live slots ``r < len(tokens)``; next-token
        logits [n, vocab]. ``attn_len`` > every position (the keys each row may see end there)."""
        import torch

        d = self.decoder
        n = tokens.shape[0]
        nq, hd = d.n_heads, d.head_dim
        x = d.embed.index_select(0, tokens)  # [n, H]
        cos = d._cos.index_select(0, positions)[:, None]  # [n, 1, hd]
        sin = d._sin.index_select(0, positions)[:, None]
        blocks = -(-attn_len // BLOCK)
        length = blocks * BLOCK
        keys = torch.arange(length, device=d.device).view(blocks, BLOCK)
        hidden = (keys[None] > positions[:, None, None])[:, None, :, None]  # [n, 1, blocks, 1, BLOCK]
        empty = hidden.all(dim=-1)  # [n, 1, blocks, 1]: blocks wholly past the row's position
        rows = torch.arange(n, device=d.device)
        group = nq // d.n_kv
        for i, layer in enumerate(d.layers):
            q, k, v = _pre_attention(x, layer.ln1, layer.qkv, layer.q_norm, layer.k_norm, cos, sin, d._pre_dims)
            kc, vc = self.cache[i, 0, :n], self.cache[i, 1, :n]  # [n, nkv, cap, hd]
            kc[rows, :, positions] = k
            vc[rows, :, positions] = v
            att = _blocked_attention(q.view(n, d.n_kv, group, hd), kc[:, :, :length], vc[:, :, :length],
                                     hidden, empty, d.scale)
            x = _post_attention(x, att.reshape(n, nq * hd), layer.o, layer.ln2, layer.gate_up, layer.down,
                                d._post_dims)
        return self._logits(x)

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``source`` into slot ``target``."""
        self.cache[:, :, target, :, :length].copy_(self.cache[:, :, source, :, :length])


def _blocked_attention(qg: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", hidden: "torch.Tensor",
                       empty: "torch.Tensor", scale: float) -> "torch.Tensor":
    """One query per row over its keys, in fixed blocks of ``BLOCK`` keys combined flash-style.

    Why blocks: a matmul or softmax over all keys rounds differently when the batch's longest row
    makes the key axis longer, so a 16-bit greedy near-tie could flip with the batch's make-up. Over
    fixed blocks each row's arithmetic is the same whatever else is in flight; blocks wholly past a
    row's position add exact zeros. qg [n, nkv, group, hd]; k, v [n, nkv, L, hd], L a multiple of
    BLOCK; hidden [n, 1, blocks, 1, BLOCK] (True = masked); empty [n, 1, blocks, 1]. -> [n, nkv, group, hd].
    """
    import torch

    n, nkv, group, hd = qg.shape
    blocks = k.shape[2] // BLOCK
    kb = k.view(n, nkv, blocks, BLOCK, hd)
    vb = v.view(n, nkv, blocks, BLOCK, hd)
    scores = torch.matmul(qg[:, :, None], kb.transpose(-1, -2)).float().mul_(scale)  # [n, nkv, blocks, group, BLOCK]
    scores.masked_fill_(hidden, float("-inf"))
    peak = scores.amax(dim=-1, keepdim=True)  # [n, nkv, blocks, group, 1]; -inf for an empty block
    top = peak.amax(dim=2, keepdim=True)  # the row's own maximum (block 0 always holds key 0)
    weight = torch.exp(peak - top)  # an empty block weighs exp(-inf) = 0
    p = torch.exp(scores - peak.masked_fill(empty[..., None], 0.0))  # masked keys: exp(-inf) = 0
    total = p.sum(dim=-1, keepdim=True)
    part = torch.matmul(p.to(qg.dtype), vb).float()  # [n, nkv, blocks, group, hd]
    out = (part * weight).sum(dim=2) / (total * weight).sum(dim=2)
    return out.to(qg.dtype)
