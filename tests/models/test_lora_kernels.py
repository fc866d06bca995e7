"""The one-token LoRA kernels (Triton) against the torch ops they replace, in Triton's CPU interpreter.

Triton picks the interpreter when it is imported (``TRITON_INTERPRET=1``), and transformers imports it
early, so the checks run in a fresh process: ``python tests/models/test_lora_kernels.py`` runs them all.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

CHECKS = ("rms_shrink_expand", "add_expand", "swiglu", "decoder")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (pip install triton)")
@pytest.mark.parametrize("check", CHECKS)
def test_kernel_equals_the_torch_ops_it_replaces(check):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, __file__, check], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(f"{check}: ok")


def lora(rank, fan_in, fan_out, seed):
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(rank, fan_in, generator=gen) / fan_in**0.5).bfloat16()
    b = (torch.randn(fan_out, rank, generator=gen) * 0.05).bfloat16()
    return a, b


def close(got, want, tol=2e-2):
    """Equal up to bf16 rounding of sums taken in another order."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.allclose(got.float(), want.float(), atol=tol, rtol=tol), (got - want).abs().max()


def two_gemm(y, x, a, b):  # what the decoder does without the kernels (fastdecode._Linear)
    return y.clone().addmm_(torch.nn.functional.linear(x, a), b.t())


def check_rms_shrink_expand(kernels):
    for K, R in [(576, 48), (320, 16), (4096, 16)]:
        gen = torch.Generator().manual_seed(K)
        x = torch.randn(1, K, generator=gen).bfloat16()
        w = (1 + 0.1 * torch.randn(K, generator=gen)).bfloat16()
        a, b = lora(R, K, 3 * K, seed=R)
        y = torch.randn(1, 3 * K, generator=gen).bfloat16()
        normed, part = kernels.rms_shrink(x, w, 1e-5, a)
        close(normed, torch.nn.functional.rms_norm(x, (K,), w, 1e-5))
        close(kernels.expand_(y.clone(), part, b), two_gemm(y, normed, a, b))
        plain, none = kernels.rms_shrink(x, w, 1e-5, None)
        assert none is None and torch.equal(plain, normed)


def check_add_expand(kernels):
    gen = torch.Generator().manual_seed(1)
    att, h, y = (torch.randn(1, n, generator=gen).bfloat16() for n in (960, 576, 576))
    a, b = lora(16, 960, 576, seed=2)
    close(kernels.add_expand(h, y, kernels.shrink(att, a), b), h + two_gemm(y, att, a, b))
    close(kernels.add_expand(h, y, None, None), h + y)  # (the interpreter may round bf16 another way)


def check_swiglu(kernels):
    for with_gate_up, with_down in [(True, True), (True, False), (False, True), (False, False)]:
        gen = torch.Generator().manual_seed(3)
        K, inter = 576, 1536
        xn = torch.randn(1, K, generator=gen).bfloat16()
        gu = torch.randn(1, 2 * inter, generator=gen).bfloat16()
        a, b = lora(32, K, 2 * inter, seed=4)
        a_down, _ = lora(16, inter, K, seed=5)
        part = kernels.shrink(xn, a) if with_gate_up else None
        act, part_down = kernels.swiglu(gu, part, b if with_gate_up else None, a_down if with_down else None)
        want_gu = two_gemm(gu, xn, a, b) if with_gate_up else gu
        g, u = want_gu.chunk(2, dim=-1)
        want = torch.nn.functional.silu(g) * u
        close(act, want)
        if with_down:
            t = part_down.sum(0)[:16]
            close(t.bfloat16()[None], torch.nn.functional.linear(want, a_down), tol=5e-2)
        else:
            assert part_down is None


def check_decoder(kernels):
    """The decode loop with the kernels gives PEFT's greedy tokens, whichever projections carry a LoRA."""
    import transformers
    from peft import LoraConfig, get_peft_model

    from medchat.config import GenerationSettings
    from medchat.models.fastdecode import FastDecoder

    prompt, greedy = [3, 17, 42, 99, 5, 64, 7, 120, 33], GenerationSettings(temperature=0.0, max_new_tokens=12)
    every = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for kind, targets in [("llama", every), ("qwen2", every), ("llama", ["q_proj", "v_proj"]),
                          ("llama", ["o_proj", "down_proj"]), ("llama", ["gate_proj"])]:
        torch.manual_seed(0)
        common = dict(vocab_size=128, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        cfg, cls = ((transformers.LlamaConfig, transformers.LlamaForCausalLM) if kind == "llama"
                    else (transformers.Qwen2Config, transformers.Qwen2ForCausalLM))
        model = cls(cfg(**common)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.3)
        torch.manual_seed(1)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=targets))
        ids = torch.tensor([prompt])
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                              do_sample=False, pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        decoder = FastDecoder(model.eval(), fused_ops=True)
        decoder._lora_kernels = kernels  # on CUDA by default; here through the interpreter
        assert list(decoder.generate(prompt, greedy)) == want, (kind, targets)


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import medchat.models.lora_kernels

    globals()[f"check_{sys.argv[1]}"](medchat.models.lora_kernels)
    print(f"{sys.argv[1]}: ok")
