"""Prompt rendering: plain styles, chat templates, and training = inference formatting."""

from __future__ import annotations

import pytest

from medchat.chatformat.messages import Message
from medchat.chatformat.prompt import PROMPT_STYLES, format_example, opens_in_reasoning, render_prompt
from medchat.errors import UsageError


class TemplateTokenizer:
    """A tokenizer stand-in whose template pre-fills <think>, like the DeepSeek-R1 distills."""

    eos_token = "<eos>"
    chat_template = "set"

    def apply_chat_template(self, convo, tokenize, add_generation_prompt, continue_final_message):
        text = "".join(f"<{m['role']}>{m['content']}" for m in convo)
        return text + ("<assistant><think>\n" if add_generation_prompt else "")


def test_r1_style_prefills_think_and_training_matches_inference():
    tok = TemplateTokenizer()
    prompt, completion = format_example(tok, "r1-medical", "ignored", "What causes gout?", "Urate.", "Uric acid crystals.")
    assert prompt == render_prompt(tok, [Message("user", "What causes gout?")], "r1-medical")
    assert prompt.endswith("### Response:\n<think>\n") and opens_in_reasoning(prompt)
    assert completion == "Urate.\n</think>\nUric acid crystals.<eos>"


def test_chat_template_prefill_is_detected_and_not_repeated():
    tok = TemplateTokenizer()
    prompt, completion = format_example(tok, "chat_template", "sys", "Q?", "R", "A")
    assert prompt == "<system>sys<user>Q?<assistant><think>\n"
    assert completion == "R\n</think>\nA<eos>"


def test_template_without_prefill_gets_opening_tag_in_completion():
    tok = TemplateTokenizer()
    tok.apply_chat_template = lambda convo, **k: "".join(m["content"] for m in convo) + "<assistant>"
    _, completion = format_example(tok, "chat_template", "", "Q", "R", "A")
    assert completion.startswith("<think>\nR\n</think>\nA")


def test_no_reasoning_style():
    _, completion = format_example(TemplateTokenizer(), "medical-qa", "", "Q", "ignored", "A")
    assert completion == "A<eos>"


def test_plain_style_multi_turn_and_continue():
    msgs = [Message("user", "Q1"), Message("assistant", "A1"), Message("user", "Q2")]
    text = render_prompt(None, msgs, "task-query-answer")
    assert text.count("### Query:") == 2 and "A1" in text and text.endswith("### Answer:\n")
    partial = render_prompt(None, [*msgs, Message("assistant", "<think>half")], "task-query-answer", continue_final=True)
    assert partial.endswith("### Answer:\n<think>half")


def test_unknown_style_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown prompt style"):
        render_prompt(None, [], "nope")


def test_every_style_renders():
    for name in PROMPT_STYLES:
        assert "Q" in render_prompt(None, [Message("user", "Q")], name)
