"""Batched greedy generation for evaluation: many prompts in flight at once, each with its own KV cache
row, and a thinking budget enforced while decoding.

Why transformers' ``generate`` and not medchat's fast decode loop: the fast loop is built for one
conversation (batch 1, CUDA graphs per length bucket); evaluation needs throughput over hundreds of
independent prompts, which a left-padded batch through ``generate`` (KV cache per row, finished rows
padded) gives on the CPU and on CUDA alike.

The thinking budget is a logits processor: it follows each row's text as it is generated, counts the
tokens spent inside ``<think>``, and when a row reaches the budget it forces the tokens of
``</think>`` so that the model goes on to answer. Budget 0 closes the reasoning before any is written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from medchat.chatformat.prompt import opens_in_reasoning
from medchat.chatformat.think import CLOSE, OPEN, split_text

Progress = Callable[[int, int], None]  # (rows done, rows in all)
CLOSE_TEXT = "\n" + CLOSE + "\n\n"  # what a forced close writes: the reasoning ends, the answer starts below
_WINDOW = 24  # characters of recent text kept per row to spot a tag split across tokens


@dataclass(frozen=True)
class BatchReply:
    """One prompt's reply, split into reasoning and answer."""

    reasoning: str
    answer: str
    reasoning_tokens: int
    answer_tokens: int
    finish_reason: str  # "stop", "length" (cut off in the answer), "length_in_reasoning", "cancelled"
    budget_hit: bool  # the thinking budget closed the reasoning


@dataclass(frozen=True)
class BatchSettings:
    max_new_tokens: int
    think_budget: int = -1  # reasoning tokens per reply before </think> is forced; -1 = no limit
    batch_size: int = 16  # rows in flight; 0 = the backend's default


class _Row:
    __slots__ = ("in_reasoning", "opened", "closed", "reasoning_tokens", "forced", "budget_hit", "tail", "done")

    def __init__(self, in_reasoning: bool) -> None:
        self.in_reasoning = in_reasoning
        self.opened = in_reasoning
        self.closed = False
        self.reasoning_tokens = 0
        self.forced: list[int] = []
        self.budget_hit = False
        self.tail = ""
        self.done = False  # the row generated EOS: generate pads it from here on


def _observe(row: _Row, text: str) -> None:
    """The row generated a token that decodes to ``text``: update its reasoning state."""
    if row.in_reasoning:
        row.reasoning_tokens += 1
    row.tail = (row.tail + text)[-_WINDOW:]
    if row.in_reasoning and CLOSE in row.tail:
        row.in_reasoning, row.closed, row.tail = False, True, ""
    elif not row.opened and OPEN in row.tail:
        row.in_reasoning, row.opened, row.tail = True, True, ""


def _due(row: _Row, budget: int) -> bool:
    return row.in_reasoning and budget >= 0 and row.reasoning_tokens >= budget


class BudgetTracker:
    """One reply's thinking budget, for a decode loop that feeds it token by token (the fast decoder):
    ``due()`` says when to stop and write ``close_ids``; ``closed()`` after writing them."""

    def __init__(self, tokenizer: Any, in_reasoning: bool, budget: int) -> None:
        self.tokenizer = tokenizer
        self.row = _Row(in_reasoning)
        self.budget = budget
        self.close_ids: list[int] = tokenizer(CLOSE_TEXT, add_special_tokens=False)["input_ids"]

    def feed(self, token: int) -> bool:
        _observe(self.row, self.tokenizer.decode([token], skip_special_tokens=False))
        return self.due()

    def due(self) -> bool:
        return _due(self.row, self.budget)

    def closed(self) -> None:
        self.row.in_reasoning, self.row.closed, self.row.budget_hit, self.row.tail = False, True, True, ""


class ThinkBudget:
    """A logits processor: per row, count reasoning tokens and force ``</think>`` at the budget.

    Called by ``generate`` once per step with every row's ids so far; ``start`` is where generated
    tokens begin (the prompts are left-padded to one width).
    """

    def __init__(self, tokenizer: Any, rows: Sequence[bool], start: int, budget: int,
                 eos_ids: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.eos = set(eos_ids)
        self.rows = [_Row(r) for r in rows]
        self.start = start
        self.budget = budget
        self.close_ids = tokenizer(CLOSE_TEXT, add_special_tokens=False)["input_ids"]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids.shape[1] - self.start
        texts = last = None
        if generated > 0:  # one call into the tokenizer for every row's newest token
            last = input_ids[:, -1].tolist()
            texts = self.tokenizer.batch_decode([[t] for t in last], skip_special_tokens=False)
        forced_rows: list[int] = []
        forced_ids: list[int] = []
        for i, row in enumerate(self.rows):
            if row.done:
                continue
            if last is not None and last[i] in self.eos and not row.forced:
                row.done = True  # finished: what generate appends from now on is padding
                continue
            if texts is not None:
                if row.forced:
                    row.forced.pop(0)  # the token just generated was the forced one
                    if not row.forced:
                        row.in_reasoning, row.closed, row.tail = False, True, ""
                else:
                    _observe(row, texts[i])
            if not row.forced and _due(row, self.budget):
                row.forced = list(self.close_ids)
                row.budget_hit = True
            if row.forced:
                forced_rows.append(i)
                forced_ids.append(row.forced[0])
        if forced_rows:
            import torch

            index = torch.tensor(forced_rows, device=scores.device)
            tokens = torch.tensor(forced_ids, device=scores.device)
            scores[index] = float("-inf")
            scores[index, tokens] = 0.0
        return scores


def _tag_ids(tokenizer: Any) -> set[int]:
    """Ids of ``<think>``/``</think>`` where the vocabulary has them as single tokens."""
    vocab = tokenizer.get_vocab()
    return {vocab[t] for t in (OPEN, CLOSE) if t in vocab}


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: BatchSettings,
    *,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> list[BatchReply]:
    """Greedy replies to ``prompts`` (rendered prompt texts), in their order.

    Prompts are sorted by length and run ``batch_size`` at a time (less padding per batch)."""
    cancel = cancel or threading.Event()
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[BatchReply | None] = [None] * len(prompts)
    done = 0
    size = settings.batch_size or (64 if str(getattr(model, "device", "cpu")).startswith("cuda") else 8)
    for k in range(0, len(order), size):
        chunk = order[k : k + size]
        if cancel.is_set():
            replies = [BatchReply("", "", 0, 0, "cancelled", False) for _ in chunk]
        else:
            replies = _run_batch(model, tokenizer, [prompts[i] for i in chunk], settings, cancel)
        for i, reply in zip(chunk, replies):
            out[i] = reply
        done += len(chunk)
        if progress:
            progress(done, len(prompts))
    return [r for r in out if r is not None]


def _run_batch(model: Any, tokenizer: Any, prompts: list[str], settings: BatchSettings,
               cancel: threading.Event) -> list[BatchReply]:
    import torch
    from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"  # generation continues every row from the same last column
    if pad_token is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
        if pad_token is None:
            tokenizer.pad_token = None
    enc = enc.to(model.device)
    start = int(enc["input_ids"].shape[1])
    budget = ThinkBudget(tokenizer, [opens_in_reasoning(p) for p in prompts], start, settings.think_budget, eos)
    generated = model.generate(
        **enc,
        max_new_tokens=settings.max_new_tokens,
        do_sample=False, temperature=None, top_p=None, top_k=None,
        logits_processor=LogitsProcessorList([budget]),
        stopping_criteria=StoppingCriteriaList([_Cancel()]),
        pad_token_id=pad,
        eos_token_id=eos or None,
        use_cache=True,
    )
    special = set(tokenizer.all_special_ids) - _tag_ids(tokenizer)  # keep <think> tags that are special tokens
    replies = []
    for i, ids in enumerate(generated[:, start:].tolist()):
        stopped = next((j for j, t in enumerate(ids) if t in eos), None)
        ids = ids[:stopped] if stopped is not None else ids
        row = budget.rows[i]
        text = tokenizer.decode([t for t in ids if t not in special], skip_special_tokens=False)
        reasoning, answer, closed = split_text(text, start_in_reasoning=opens_in_reasoning(prompts[i]))
        n = len(ids)
        if cancel.is_set() and stopped is None:
            finish = "cancelled"
        elif stopped is None and n >= settings.max_new_tokens:
            finish = "length_in_reasoning" if not closed else "length"
        else:
            finish = "stop"
        reasoning_tokens = min(row.reasoning_tokens, n)
        replies.append(BatchReply(reasoning.strip(), answer.strip(), reasoning_tokens, n - reasoning_tokens,
                                  finish, row.budget_hit))
    return replies


# -------------------------------------------------------------------------------------------------
# medchat's decode loop, many rows at once (continuous batching over a slot cache)


class _Live:
    """One prompt being decoded in a slot."""

    __slots__ = ("index", "row", "ids", "position", "next", "finish")

    def __init__(self, index: int, row: _Row, position: int) -> None:
        self.index = index  # which prompt
        self.row = row
        self.ids: list[int] = []  # generated so far (forced </think> tokens included)
        self.position = position  # tokens whose K/V the slot holds; the next token is fed here
        self.next = -1  # the token to feed at the next step
        self.finish = ""


def default_slots(decoder: Any, capacity: int, rows: int) -> int:
    """Rows in flight when the caller gives no batch size: on CUDA as many as 60 % of the free memory
    holds (at most 256), on the CPU 32; fewer when ``rows`` fill the same number of waves with fewer."""
    from medchat.models.fastbatch import slot_bytes

    if decoder.device.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(decoder.device)
        slots = max(1, min(256, int(free * 0.6) // max(1, slot_bytes(decoder, capacity))))
    else:
        slots = 32  # bfloat16 matmuls cost about the same for 1 or 32 rows on the CPU
    waves = -(-rows // slots)  # as few refills as the memory allows, spread evenly: 500 rows in 4 waves
    return max(1, min(slots, -(-rows // waves)))  # of 125, not 3 of 150 and a last one of 50


def generate_batch_fast(
    decoder: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: BatchSettings,
    eos_ids: Sequence[int],
    *,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
) -> list[BatchReply]:
    """Greedy replies to ``prompts`` through medchat's decoder, ``settings.batch_size`` rows in flight
    (0 = ``default_slots``): a finished row's slot takes the next prompt at once, so no step computes a
    row that has ended, and rows never wait for the longest reply of their batch."""
    import torch

    from medchat.models.fastbatch import SlotBatch

    cancel = cancel or threading.Event()
    eos = set(eos_ids)
    close_ids: list[int] = tokenizer(CLOSE_TEXT, add_special_tokens=False)["input_ids"]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty")
    longest = max(len(ids) for ids in encoded)
    capacity = min(longest + settings.max_new_tokens, decoder.max_context)
    if longest >= capacity:
        raise ValueError(f"a prompt ({longest} tokens) fills the model's context ({decoder.max_context})")
    slots = settings.batch_size or default_slots(decoder, capacity, len(prompts))
    slots = max(1, min(slots, len(prompts)))
    queue = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # long prompts first: fewer late stragglers
    queue.reverse()  # pop() from the end
    out: list[BatchReply | None] = [None] * len(prompts)
    live: list[_Live] = []
    done = 0

    def choose(item: _Live, token: int) -> None:
        """Append the next token: a forced </think> token, else the model's greedy one."""
        row = item.row
        if row.forced:
            token = row.forced.pop(0)
            if not row.forced:
                row.in_reasoning, row.closed, row.tail = False, True, ""
        elif _due(row, settings.think_budget):
            row.forced, row.budget_hit = list(close_ids[1:]), True
            token = close_ids[0]
            if not row.forced:
                row.in_reasoning, row.closed, row.tail = False, True, ""
        elif token in eos:
            item.finish = "stop"
            return
        else:
            _observe(row, tokenizer.decode([token], skip_special_tokens=False))
        item.ids.append(token)
        item.next = token
        limit = min(settings.max_new_tokens, capacity - len(encoded[item.index]))
        if len(item.ids) >= limit:
            item.finish = "length"

    def finish(item: _Live) -> None:
        out[item.index] = _reply(tokenizer, prompts[item.index], item.ids, item.row, item.finish)

    with decoder.lock, torch.inference_mode():
        batch = SlotBatch(decoder, max(slots, 2), capacity)
        while queue or live:
            if cancel.is_set():
                for item in live:
                    item.finish = "cancelled"
                    finish(item)
                for i in queue:
                    out[i] = BatchReply("", "", 0, 0, "cancelled", False)
                break
            while queue and len(live) < slots:  # fill the free slots (they are at the end)
                i = queue.pop()
                item = _Live(i, _Row(opens_in_reasoning(prompts[i])), len(encoded[i]))
                logits = batch.prefill(len(live), encoded[i])
                choose(item, int(torch.argmax(logits)))
                if item.finish:
                    finish(item)
                    done += 1
                else:
                    live.append(item)
            if not live:
                continue
            # a lone row is computed beside a copy of itself (in the free slot 1): one row alone takes
            # other matmul kernels (GEMV), whose rounding can flip a 16-bit near-tie; so every reply is
            # the same whatever the batch size, --batch-size 1 included
            feed = live if len(live) > 1 else live * 2
            tokens = torch.tensor([it.next for it in feed], dtype=torch.long, device=decoder.device)
            positions = torch.tensor([it.position for it in feed], dtype=torch.long, device=decoder.device)
            logits = batch.step(tokens, positions, max(it.position for it in live) + 1)
            best = torch.argmax(logits[: len(live)], dim=-1).tolist()
            for item, token in zip(live, best):
                item.position += 1
                choose(item, token)
            # compaction: a finished row's slot gets the last live row (its K/V copied over)
            slot = 0
            while slot < len(live):
                item = live[slot]
                if not item.finish:
                    slot += 1
                    continue
                finish(item)
                done += 1
                last = live.pop()
                if last is not item:
                    batch.move(len(live), slot, last.position)
                    live[slot] = last
            if progress:
                progress(done, len(prompts))
    return [r for r in out if r is not None]


def _reply(tokenizer: Any, prompt: str, ids: list[int], row: _Row, finish: str) -> BatchReply:
    special = set(tokenizer.all_special_ids) - _tag_ids(tokenizer)  # keep <think> tags that are special tokens
    text = tokenizer.decode([t for t in ids if t not in special], skip_special_tokens=False)
    reasoning, answer, closed = split_text(text, start_in_reasoning=opens_in_reasoning(prompt))
    if finish == "length" and not closed:
        finish = "length_in_reasoning"
    n = len(ids)
    reasoning_tokens = min(row.reasoning_tokens, n)
    return BatchReply(reasoning.strip(), answer.strip(), reasoning_tokens, n - reasoning_tokens, finish,
                      row.budget_hit)
