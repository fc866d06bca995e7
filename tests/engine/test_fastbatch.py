"""Evaluation's batched path over medchat's decoder (medchat.models.fastbatch + engine.batched's
``generate_batch_fast``) on a tiny random Llama, CPU, float32: every row's greedy tokens equal batch 1's,
whatever the number of slots (rows refill freed slots, finished rows are compacted away), with a LoRA
adapter, with the thinking budget forcing ``</think>``, and with EOS ending rows early."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_fastdecode import tiny, with_adapter  # noqa: E402

from medchat.chatformat.think import split_text  # noqa: E402
from medchat.config import GenerationSettings  # noqa: E402
from medchat.engine.batched import CLOSE_TEXT, BatchSettings, generate_batch_fast  # noqa: E402
from medchat.models.fastbatch import SlotBatch  # noqa: E402
from medchat.models.fastdecode import FastDecoder  # noqa: E402

PROMPTS = [[3, 17, 42, 99, 5], [64, 7], [120, 33, 8, 9, 10, 11, 12, 13], [1, 2, 3], [77]]


class Tok:
    """Token i is the text ``VOCAB[i]``: a few tags and plain words, so the budget sees real text."""

    VOCAB = ["<pad>", "<think>", "</think>", "\n", "\n\n"] + [f"w{i} " for i in range(5, 128)]
    all_special_ids = [0]

    def __call__(self, text, add_special_tokens=False):
        ids, rest = [], text
        while rest:
            match = max((t for t in self.VOCAB if rest.startswith(t)), key=len)
            ids.append(self.VOCAB.index(match))
            rest = rest[len(match):]
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.VOCAB[i] for i in ids)

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.VOCAB)}


def text(ids, think=False):
    return Tok().decode(ids) + ("<think>\n" if think else "")


def expected(ids):
    reasoning, answer, _closed = split_text(Tok().decode(ids), start_in_reasoning=False)
    return reasoning.strip(), answer.strip()


def test_slots_give_batch_one_tokens_with_refill_and_compaction():
    model = tiny()
    want = [list(FastDecoder(tiny()).generate(p, GenerationSettings(temperature=0.0, max_new_tokens=12)))
            for p in PROMPTS]
    dec = FastDecoder(model)
    for slots in (1, 2, 5):
        got = generate_batch_fast(dec, Tok(), [text(p) for p in PROMPTS], BatchSettings(12, -1, slots), [])
        assert [(r.reasoning, r.answer) for r in got] == [expected(w) for w in want]
        assert all(r.finish_reason == "length" and r.answer_tokens == 12 for r in got)


def test_with_an_adapter_and_eos_rows_end_early_and_leave_the_others_unchanged():
    dec = FastDecoder(with_adapter())
    prompts = [text(p) for p in PROMPTS]
    alone = [generate_batch_fast(dec, Tok(), [p], BatchSettings(16, -1, 1), [])[0] for p in prompts]
    eos = Tok()(alone[1].answer.split()[3] + " ")["input_ids"]  # a token row 1 writes: it ends there
    together = generate_batch_fast(dec, Tok(), prompts, BatchSettings(16, -1, 3), eos)
    one_by_one = generate_batch_fast(dec, Tok(), prompts, BatchSettings(16, -1, 1), eos)
    assert together == one_by_one
    assert together[1].finish_reason == "stop" and together[1].answer_tokens <= 3
    assert any(r.finish_reason == "length" for r in together)


def test_the_thinking_budget_closes_the_reasoning_in_every_slot():
    dec = FastDecoder(tiny(seed=3))
    prompts = [text(p, think=True) for p in PROMPTS]
    close = Tok()(CLOSE_TEXT)["input_ids"]
    replies = generate_batch_fast(dec, Tok(), prompts, BatchSettings(20, 4, 2), [])
    assert replies == generate_batch_fast(dec, Tok(), prompts, BatchSettings(20, 4, 1), [])
    for r in replies:
        assert r.budget_hit and r.reasoning_tokens == 4
        assert r.answer_tokens == 20 - 4 and r.finish_reason.startswith("length")  # (a random model may reopen <think>)
    zero = generate_batch_fast(dec, Tok(), prompts[:2], BatchSettings(len(close) + 2, 0, 2), [])
    assert all(r.reasoning == "" and r.reasoning_tokens == 0 and r.budget_hit for r in zero)


def test_a_moved_slot_keeps_its_cache():
    dec = FastDecoder(tiny())
    batch = SlotBatch(dec, 2, 32)
    with torch.inference_mode():
        batch.prefill(1, PROMPTS[0])
        before = batch.cache[:, :, 1, :, :5].clone()
        batch.move(1, 0, 5)
        assert torch.equal(batch.cache[:, :, 0, :, :5], before)
