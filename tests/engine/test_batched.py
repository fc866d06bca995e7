"""The thinking budget as a logits processor, driven step by step with a scripted vocabulary."""

from __future__ import annotations

import torch

from medchat.engine.batched import CLOSE_TEXT, ThinkBudget

VOCAB = ["<pad>", "<think>", "</think>", "\n", "\n\n", "word", "Answer"]


class Tok:
    def __call__(self, text, add_special_tokens=False):
        ids, rest = [], text
        while rest:
            match = max((t for t in VOCAB if rest.startswith(t)), key=len)
            ids.append(VOCAB.index(match))
            rest = rest[len(match):]
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(VOCAB[i] for i in ids)

    def batch_decode(self, seqs, skip_special_tokens=False):
        return [self.decode(s) for s in seqs]


def run(budget: int, prefer: list[str], opened: list[bool], steps: int) -> tuple[ThinkBudget, list[list[str]]]:
    """Greedy loop: each row's model always wants ``prefer[row]``; returns the texts produced."""
    proc = ThinkBudget(Tok(), opened, start=2, budget=budget)
    ids = torch.zeros((len(prefer), 2), dtype=torch.long)
    for _ in range(steps):
        scores = torch.zeros((len(prefer), len(VOCAB)))
        for r, word in enumerate(prefer):
            scores[r, VOCAB.index(word)] = 5.0
        nxt = proc(ids, scores).argmax(-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return proc, [[VOCAB[i] for i in row[2:]] for row in ids.tolist()]


def test_budget_forces_close_then_the_model_answers():
    proc, texts = run(3, ["word", "word"], [True, False], 10)
    close = [VOCAB[i] for i in Tok()(CLOSE_TEXT)["input_ids"]]
    assert texts[0][:3] == ["word"] * 3 and texts[0][3:3 + len(close)] == close
    assert texts[0][3 + len(close):] == ["word"] * (10 - 3 - len(close))  # the answer follows
    assert proc.rows[0].budget_hit and proc.rows[0].reasoning_tokens == 3 and proc.rows[0].closed
    # A row whose prompt did not open <think> and which never opens it is never forced.
    assert texts[1] == ["word"] * 10 and not proc.rows[1].budget_hit


def test_budget_zero_closes_at_once_and_no_limit_never_forces():
    proc, texts = run(0, ["word"], [True], 4)
    assert texts[0][0] == "\n" and "</think>" in texts[0] and proc.rows[0].reasoning_tokens == 0
    proc, texts = run(-1, ["word"], [True], 6)
    assert texts[0] == ["word"] * 6 and not proc.rows[0].budget_hit


def test_a_finished_row_is_left_alone():
    proc = ThinkBudget(Tok(), [True], start=1, budget=2, eos_ids=[0])
    ids = torch.zeros((1, 1), dtype=torch.long)
    for word in ["word", "<pad>", "<pad>", "<pad>"]:  # EOS (id 0) after one token, then padding
        ids = torch.cat([ids, torch.tensor([[VOCAB.index(word)]])], dim=1)
        proc(ids, torch.zeros((1, len(VOCAB))))
    assert proc.rows[0].reasoning_tokens == 1 and not proc.rows[0].budget_hit


def test_reasoning_the_model_opens_itself_is_counted():
    proc = ThinkBudget(Tok(), [False], start=1, budget=2)
    ids = torch.zeros((1, 1), dtype=torch.long)
    for word in ["<think>", "word", "word"]:
        ids = torch.cat([ids, torch.tensor([[VOCAB.index(word)]])], dim=1)
        scores = proc(ids, torch.zeros((1, len(VOCAB))))
    assert proc.rows[0].opened and proc.rows[0].budget_hit
    assert scores[0].argmax().item() == Tok()(CLOSE_TEXT)["input_ids"][0]
