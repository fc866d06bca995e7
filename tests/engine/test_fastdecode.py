"""medchat's own decode loop (medchat.models.fastdecode) on tiny random models, CPU, float32.

The reference is transformers' generate(): greedy tokens must match exactly, for each supported
architecture, with a LoRA adapter applied unmerged (as PEFT does), after switching adapters in place,
and with the KV cache reused across calls.
"""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from medchat.config import GenerationSettings  # noqa: E402
from medchat.models.fastdecode import (  # noqa: E402
    FastDecoder,
    FastPathUnavailable,
    IncrementalDetokenizer,
    unsupported_reason,
)

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=24)
PROMPT = [3, 17, 42, 99, 5, 64, 7, 120, 33]


def tiny(kind: str = "llama", seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**common)
        cls = transformers.LlamaForCausalLM
    elif kind == "qwen2":  # q/k/v biases
        cfg = transformers.Qwen2Config(**common)
        cls = transformers.Qwen2ForCausalLM
    else:  # qwen3: per-head q/k norms, explicit head_dim
        cfg = transformers.Qwen3Config(**common, head_dim=32)
        cls = transformers.Qwen3ForCausalLM
    model = cls(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the default init, so that logits are not near-ties
            p.normal_(0, 0.3)
    return model


def hf_greedy(model, prompt, n):
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_greedy_tokens_match_generate(kind):
    want = hf_greedy(tiny(kind), PROMPT, 24)
    got = list(FastDecoder(tiny(kind)).generate(PROMPT, GREEDY))
    assert got == want


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def with_adapter(seed: int = 1, targets=ALL_LINEAR, kind: str = "llama", **extra):
    from peft import LoraConfig, get_peft_model

    model = tiny(kind)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=targets, **extra)
    return get_peft_model(model, cfg).eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_lora_adapter_runs_unmerged_like_peft(kind):
    want = hf_greedy(with_adapter(kind=kind), PROMPT, 24)
    assert want != hf_greedy(tiny(kind), PROMPT, 24)  # the adapter matters
    assert list(FastDecoder(with_adapter(kind=kind)).generate(PROMPT, GREEDY)) == want


def test_adapter_read_from_its_folder_equals_the_peft_wrapped_one(tmp_path):
    from medchat.models.lora import lora_from_peft, read_lora

    peft_model = with_adapter(use_rslora=True, rank_pattern={"down_proj": 2})
    peft_model.save_pretrained(tmp_path / "a")
    from_folder, from_model = read_lora(tmp_path / "a", n_layers=2), lora_from_peft(peft_model)
    assert from_folder.matrices.keys() == from_model.matrices.keys() and len(from_folder.matrices) == 14
    for key, (a, b, scale) in from_model.matrices.items():
        fa, fb, fscale = from_folder.matrices[key]
        assert torch.equal(a, fa) and torch.equal(b, fb) and fscale == pytest.approx(scale)


def test_switching_adapters_in_place_equals_a_fresh_decoder(tmp_path):
    from medchat.models.lora import read_lora

    for seed in (1, 2):
        with_adapter(seed).save_pretrained(tmp_path / f"a{seed}")
    only_attention = with_adapter(3, ["q_proj", "v_proj"])
    only_attention.save_pretrained(tmp_path / "a3")
    decoder = FastDecoder(tiny())
    base = list(decoder.generate(PROMPT, GREEDY))
    for seed in (1, 2, 3, 1):
        decoder.set_adapter(read_lora(tmp_path / f"a{seed}", n_layers=2))
        want = hf_greedy(only_attention if seed == 3 else with_adapter(seed), PROMPT, 24)
        assert list(decoder.generate(PROMPT, GREEDY)) == want, seed
    decoder.set_adapter(None)
    assert list(decoder.generate(PROMPT, GREEDY)) == base


def test_same_shaped_adapter_is_copied_into_the_same_buffers(tmp_path):
    from medchat.models.lora import read_lora

    for seed in (1, 2):
        with_adapter(seed).save_pretrained(tmp_path / f"a{seed}")
    decoder = FastDecoder(tiny(), adapter=read_lora(tmp_path / "a1", n_layers=2))
    buffer = decoder.layers[0].qkv.lora_a
    decoder.set_adapter(read_lora(tmp_path / "a2", n_layers=2))
    assert decoder.layers[0].qkv.lora_a is buffer  # CUDA graphs captured over it stay valid


def test_without_adapter_gives_the_base_logits():
    decoder, plain = FastDecoder(with_adapter()), FastDecoder(tiny())
    with decoder.without_adapter():
        off = decoder.prompt_logits(PROMPT)
    assert torch.allclose(off, plain.prompt_logits(PROMPT), atol=1e-5)
    assert not torch.allclose(decoder.prompt_logits(PROMPT), off, atol=1e-3)


def test_adapter_whose_tensors_fit_nothing_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from medchat.errors import AdapterError
    from medchat.models.lora import read_lora

    with_adapter().save_pretrained(tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    save_file({k.replace("lora_A", "lora_X"): v for k, v in load_file(weights).items()}, weights)
    with pytest.raises(AdapterError, match="match no layer"):
        read_lora(tmp_path / "a", n_layers=2)
    save_file({}, weights)
    with pytest.raises(AdapterError, match="no LoRA matrices"):
        read_lora(tmp_path / "a", n_layers=2)


def test_cache_reuse_across_turns_gives_the_same_tokens():
    first = list((dec := FastDecoder(tiny())).generate(PROMPT, GREEDY))
    follow_up = PROMPT + first[:10] + [11, 12]
    reused = list(dec.generate(follow_up, GREEDY))
    assert dec._cached_ids[: len(follow_up)] == follow_up
    assert reused == list(FastDecoder(tiny()).generate(follow_up, GREEDY))


def test_fused_ops_agree_on_cpu():
    assert list(FastDecoder(tiny(), fused_ops=True).generate(PROMPT, GREEDY)) == hf_greedy(tiny(), PROMPT, 24)


def teacher_forced_agreement(dec, prompt, reference):
    """Share of the reference's tokens the decoder predicts itself, given the reference's history
    (each call reuses the cached prefix, so this costs about one token per step)."""
    one = GenerationSettings(temperature=0.0, max_new_tokens=1)
    hits = sum(list(dec.generate(prompt + reference[:i], one)) == [tok] for i, tok in enumerate(reference))
    return hits / len(reference)


def test_int8_weights_are_close_to_the_dense_ones():
    from medchat.models.fastdecode import _Linear

    torch.manual_seed(0)
    w, x = torch.randn(96, 64), torch.randn(3, 64)
    lin = _Linear(w, None, "int8")
    assert lin.format == "int8" and lin.weight.dtype == torch.int8 and lin.scale_and_zero.shape == (96,)
    want = x @ w.T
    assert ((lin(x) - want).norm() / want.norm()).item() < 0.01  # per-row int8: about 0.3 % here


def test_int8_decoder_follows_generate_closely():
    """int8 weights change the numbers a little, so the text may part from generate's; the test pins
    how far: nearly every next token agrees when both see the same history."""
    model = tiny()
    want = hf_greedy(model, PROMPT, 24)
    dec = FastDecoder(tiny(), quantize="int8")
    assert dec.int8 and "int8" in dec.describe()
    assert dec.lm_head.format == "int8"  # the tied output matrix too (a fifth of SmolLM2's bytes)
    assert teacher_forced_agreement(dec, PROMPT, want) >= 0.9


def test_eos_stops_and_cancel_stops_promptly():
    dec = FastDecoder(tiny())
    tokens = list(dec.generate(PROMPT, GREEDY))
    assert list(dec.generate(PROMPT, GREEDY, eos_ids=[tokens[5]])) == tokens[: tokens.index(tokens[5])]
    cancel = threading.Event()
    seen = []
    for tok in dec.generate(PROMPT, GenerationSettings(temperature=0.0, max_new_tokens=200), cancel):
        seen.append(tok)
        if len(seen) == 3:
            cancel.set()
    assert len(seen) == 3


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    dec = FastDecoder(tiny())
    s = GenerationSettings(temperature=0.8, top_p=0.9, top_k=20, repetition_penalty=1.1, max_new_tokens=16, seed=7)
    assert list(dec.generate(PROMPT, s)) == list(dec.generate(PROMPT, s))
    k1 = GenerationSettings(temperature=1.0, top_k=1, max_new_tokens=16, seed=3)
    assert list(dec.generate(PROMPT, k1)) == list(dec.generate(PROMPT, GenerationSettings(temperature=0.0, max_new_tokens=16)))


def test_unsupported_models_are_refused_without_touching_them():
    import transformers

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    assert "gpt2" in unsupported_reason(gpt2)
    with pytest.raises(FastPathUnavailable):
        FastDecoder(gpt2)


def test_detokenizer_streams_whole_characters():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["plain words only"], trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    text = "Anämie — 贫血 🩸 plain words"
    ids = hf(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(hf)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_detokenizer_does_not_hold_invalid_bytes_forever():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["ab"], trainers.BpeTrainer(vocab_size=260, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    lone = [i for i in range(len(hf)) if hf.decode([i]) == "\ufffd"][:1] * 6  # a continuation byte, repeated
    detok = IncrementalDetokenizer(hf)
    assert "".join(detok.push(i) for i in lone[:3]) == ""  # could still become a character
    assert "\ufffd" in detok.push(lone[3])  # four bytes that are no character: shown


def test_both_lora_products_give_the_same_tokens(monkeypatch):
    import medchat.models.fastdecode as fastdecode

    want = list(FastDecoder(with_adapter()).generate(PROMPT, GREEDY))
    monkeypatch.setattr(fastdecode, "LORA_OP", "mv")
    assert list(FastDecoder(with_adapter()).generate(PROMPT, GREEDY)) == want


def test_the_adapter_switched_off_gives_the_base_tokens_and_never_reuses_its_cache(tmp_path):
    from medchat.models.lora import read_lora

    with_adapter(2).save_pretrained(tmp_path / "a2")
    decoder, base = FastDecoder(with_adapter()), list(FastDecoder(tiny()).generate(PROMPT, GREEDY))
    tuned = list(decoder.generate(PROMPT, GREEDY))
    with decoder.without_adapter():  # the same prompt again: its cached K/V hold the adapter's values
        assert list(decoder.generate(PROMPT, GREEDY)) == base
    assert list(decoder.generate(PROMPT, GREEDY)) == tuned
    decoder.set_adapter(read_lora(tmp_path / "a2", n_layers=2))
    assert list(decoder.generate(PROMPT, GREEDY)) == hf_greedy(with_adapter(2), PROMPT, 24)
