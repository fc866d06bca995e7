"""Packing whole rows into fixed-budget sequences: fuller than TRL's best fit, every row kept intact."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset
from trl.data_utils import pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from medchat.finetune import packing


def check_partition(sequences, lengths, capacity):
    assert sorted(i for rows in sequences for i in rows) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in rows) <= capacity for rows in sequences)


def test_fills_what_best_fit_decreasing_leaves_open():
    # Best fit decreasing: [4, 4], [3, 3, 3], [3] -- three sequences; two suffice.
    lengths = [4, 4, 3, 3, 3, 3]
    sequences = packing.pack(lengths, 10)
    check_partition(sequences, lengths, 10)
    assert sorted(sorted(lengths[i] for i in rows) for rows in sequences) == [[3, 3, 4], [3, 3, 4]]


@pytest.mark.parametrize("seed", range(5))
def test_never_more_sequences_than_trl_and_every_row_once(seed):
    rng = random.Random(seed)
    lengths = [min(int(rng.lognormvariate(6.9, 0.33)), 2048) for _ in range(300)]
    sequences = packing.pack(lengths, 4096)
    check_partition(sequences, lengths, 4096)
    trl = pack_dataset(Dataset.from_dict({"input_ids": [[1] * n for n in lengths]}), 4096, "bfd")
    assert len(sequences) <= len(trl)
    assert len(sequences) <= -(-sum(lengths) // 4096) + 1  # within one of the bound no packing can beat


def test_rows_longer_than_the_budget_are_refused():
    with pytest.raises(ValueError):
        packing.pack([5, 11], 10)


def rows_of(dataset):
    """Every packed row as a tuple of (input_ids, completion_mask), order ignored."""
    out = []
    for ids, mask, lengths in zip(dataset["input_ids"], dataset["completion_mask"], dataset["seq_lengths"]):
        assert sum(lengths) == len(ids) == len(mask)
        start = 0
        for n in lengths:
            out.append((tuple(ids[start:start + n]), tuple(mask[start:start + n])))
            start += n
    return sorted(out)


def test_repack_keeps_every_row_and_column_and_the_collators_row_boundaries():
    rng = random.Random(7)
    rows = [[rng.randrange(3, 500) for _ in range(n)] for n in [400, 300, 300] * 6]
    data = Dataset.from_dict({"input_ids": rows, "completion_mask": [[int(i > 50) for i in range(len(r))] for r in rows]})
    trl = pack_dataset(data, 1000, "bfd")  # [400, 400] x 3, [300, 300, 300] x 4
    repacked = packing.repack(trl, 1000)  # [400, 300, 300] x 6
    assert repacked.column_names == trl.column_names and repacked.features == trl.features
    assert repacked.format == trl.format
    assert rows_of(repacked) == rows_of(trl)
    assert (len(trl), len(repacked)) == (7, 6)
    assert all(len(ids) == 1000 for ids in repacked["input_ids"])

    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([repacked[0]])
    starts = [i for i, p in enumerate(batch["position_ids"][0].tolist()) if p == 0]
    lengths = repacked[0]["seq_lengths"]
    assert starts == [sum(lengths[:k]) for k in range(len(lengths))]


def test_describe_says_how_full_the_sequences_are():
    packed = Dataset.from_dict({"input_ids": [[1] * 4000, [1] * 4096, [1] * 2048]})
    assert packing.describe(11, packed, 4096) == "packed 11 rows into 3 sequences of up to 4,096 tokens (82.6% full)"
