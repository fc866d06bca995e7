"""Whole rows packed into sequences of a fixed token budget, as full as they can be.

A step's GPU time does not shrink in step with a sequence's empty slots (on the H100, 5.5 % more
tokens per step cost 4 % more time). TRL's best-fit decreasing leaves 2-5 % empty when rows are long
next to the budget (about four medical-o1 rows fill a 4,096-token sequence); minimum bin slack reaches
the fewest sequences possible there (benchmarks/RESULTS.md, fifth round).
"""

from __future__ import annotations

from typing import Any


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Row indices per sequence, each sequence's rows summing to at most ``capacity`` tokens.

    Minimum bin slack: a sequence takes the longest row left, then the subset of the remaining rows
    that leaves the least room (a subset sum over a bitset of reachable totals). Deterministic, so a
    resumed run sees the same sequences.
    """
    if any(n > capacity or n <= 0 for n in lengths):
        raise ValueError(f"every row must hold 1 to {capacity} tokens")
    left: dict[int, list[int]] = {}  # length -> indices of the rows of that length not yet packed
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        left.setdefault(lengths[index], []).append(index)
    sequences = []
    while left:
        longest = max(left)
        rows = [take(left, longest)]
        room = capacity - longest
        # stages[k] = (length, totals reachable before it): walking them back recovers one subset.
        stages: list[tuple[int, int]] = []
        reachable, fits = 1, (1 << (room + 1)) - 1
        for length in sorted((n for n in left if n <= room), reverse=True):
            for _ in range(min(len(left[length]), room // length)):
                stages.append((length, reachable))
                reachable = (reachable | reachable << length) & fits
        total = reachable.bit_length() - 1
        for length, before in reversed(stages):
            if total and not before >> total & 1:  # this row is needed to reach `total`
                rows.append(take(left, length))
                total -= length
        sequences.append(rows)
    return sequences


def take(left: dict[int, list[int]], length: int) -> int:
    indices = left[length]
    index = indices.pop(0)
    if not indices:
        del left[length]
    return index


def repack(packed: Any, capacity: int) -> Any:
    """The trainer's packed data set (TRL's layout: list columns plus ``seq_lengths``) with its rows
    regrouped by :func:`pack`. Every column the trainer built is carried over row by row."""
    if "seq_lengths" not in packed.column_names:  # not TRL's best-fit layout: leave it as it is
        return packed
    fmt = packed.format
    regrouped = packed.with_format("arrow").map(regroup, batched=True, batch_size=None,
                                                fn_kwargs={"capacity": capacity})
    return regrouped.with_format(fmt["type"], columns=fmt["columns"], output_all_columns=fmt["output_all_columns"],
                                 **fmt["format_kwargs"])


def regroup(table: Any, capacity: int) -> Any:
    """One Arrow table of packed sequences, unpacked into rows and packed again."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    row_lengths = table["seq_lengths"].combine_chunks().flatten()
    row_starts = pa.array(np.concatenate([[0], np.cumsum(row_lengths.to_numpy())]).astype(np.int64))
    sequences = pack(row_lengths.to_pylist(), capacity)
    order = pa.array([i for rows in sequences for i in rows], pa.int64())
    first_rows = np.concatenate([[0], np.cumsum([len(rows) for rows in sequences])])
    lengths = pc.take(row_lengths, order)  # every list column is aligned with input_ids, row by row
    token_starts = pa.array(np.concatenate([[0], np.cumsum(lengths.to_numpy())])[first_rows].astype(np.int64))
    columns, names = [], []
    for name in table.column_names:
        if name == "seq_lengths":
            continue
        rows = pc.take(pa.LargeListArray.from_arrays(row_starts, table[name].combine_chunks().flatten()), order)
        columns.append(pa.LargeListArray.from_arrays(token_starts, rows.flatten()).cast(table.schema.field(name).type))
        names.append(name)
    per_sequence = pa.ListArray.from_arrays(pa.array(first_rows.astype(np.int32)), lengths)
    columns.append(per_sequence.cast(table.schema.field("seq_lengths").type))
    return pa.Table.from_arrays(columns, names=names + ["seq_lengths"])


def describe(n_rows: int, packed: Any, capacity: int) -> str:
    """How full the packed sequences are, in one line for the user."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(packed.data.column("input_ids")).to_pylist()
    full = sum(lengths) / (len(lengths) * capacity) if lengths else 0.0
    return f"packed {n_rows} rows into {len(lengths)} sequences of up to {capacity:,} tokens ({full:.1%} full)"
