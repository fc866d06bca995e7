"""Prompt rendering: the model's chat template, or a named plain-text prompt style.

Training (medchat finetune) and chat both build prompts here, so the text a model is trained on and
the text it is asked at inference are made by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from medchat.chatformat.messages import Message
from medchat.chatformat.think import OPEN, think_text
from medchat.errors import UsageError

CHAT_TEMPLATE = "chat_template"


@dataclass(frozen=True)
class PromptStyle:
    """A plain-text prompt format from the seed notebooks (for models trained without a chat template).

    The style's own ``instruction`` replaces the chat system prompt, exactly as in the notebooks.
    """

    name: str
    description: str
    preamble: str  # once, at the top
    question: str  # one block per user turn, with {question}
    response: str  # the response header; the model continues after it
    think_prefill: bool = False  # the prompt ends with "<think>\n" (reasoning starts at once)
    reasoning: bool = True  # completions carry <think>…</think> before the answer


_R1_MEDICAL_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n"
    "Before answering, think carefully about the question and create a step-by-step chain of thoughts "
    "to ensure a logical and accurate response.\n\n"
    "### Instruction:\n"
    "You are a medical expert with advanced knowledge in clinical reasoning, diagnostics, and treatment "
    "planning. \nPlease answer the following medical question. \n\n"
)

PROMPT_STYLES: dict[str, PromptStyle] = {
    s.name: s
    for s in (
        PromptStyle(
            "r1-medical",
            "Instruction / Question / Response with <think> (systems A and C)",
            _R1_MEDICAL_PREAMBLE,
            "### Question:\n{question}\n\n",
            "### Response:\n",
            think_prefill=True,
        ),
        PromptStyle(
            "task-query-answer",
            "### Task / ### Query / ### Answer with step-by-step reasoning (system D)",
            "### Task:\nYou are a medical expert. Think through the query step by step, showing your "
            "reasoning inside <think> </think>, then give the final answer.\n\n",
            "### Query:\n{question}\n\n",
            "### Answer:\n",
        ),
        PromptStyle(
            "medical-qa",
            "Alpaca-style ### Question / ### Medical Answer, no reasoning section (system E)",
            "Below is a medical question. Write an accurate, concise answer.\n\n",
            "### Question:\n{question}\n\n",
            "### Medical Answer:\n",
            reasoning=False,
        ),
    )
}


def style_names() -> list[str]:
    return [CHAT_TEMPLATE, *PROMPT_STYLES]


def get_style(name: str) -> PromptStyle | None:
    """None means "use the tokenizer's chat template"."""
    if name == CHAT_TEMPLATE:
        return None
    try:
        return PROMPT_STYLES[name]
    except KeyError:
        raise UsageError(
            f"unknown prompt style '{name}' (known: {', '.join(style_names())})"
        ) from None


def render_plain(style: PromptStyle, messages: Sequence[Message], continue_final: bool = False) -> str:
    """Render a conversation in a plain prompt style. System messages are replaced by the style's
    own instruction; earlier assistant answers follow their response headers."""
    out = style.preamble
    turns = [m for m in messages if m.role != "system"]
    partial = turns.pop().content if continue_final and turns and turns[-1].role == "assistant" else None
    for m in turns:
        if m.role == "user":
            out += style.question.format(question=m.content.strip()) + style.response
        else:
            out += m.content.strip() + "\n\n"
    if turns and turns[-1].role == "user":
        if partial is not None:
            out += partial
        elif style.think_prefill:
            out += OPEN + "\n"
    return out


def render_prompt(
    tokenizer: Any,
    messages: Sequence[Message],
    style: str = CHAT_TEMPLATE,
    continue_final: bool = False,
) -> str:
    """The text the model continues. ``continue_final``: the last message is a partial assistant reply."""
    plain = get_style(style)
    if plain is not None:
        return render_plain(plain, messages, continue_final)
    if not getattr(tokenizer, "chat_template", None):
        # No template at all: fall back to the seeds' reasoning format rather than failing.
        return render_plain(PROMPT_STYLES["r1-medical"], messages, continue_final)
    convo = [{"role": m.role, "content": m.content} for m in messages]
    kwargs = dict(tokenize=False, add_generation_prompt=not continue_final, continue_final_message=continue_final)
    try:
        return tokenizer.apply_chat_template(convo, **kwargs)
    except Exception as exc:  # some templates reject a system role: fold it into the first user turn
        if not convo or convo[0]["role"] != "system" or len(convo) < 2:
            raise UsageError(f"the model's chat template failed: {exc}") from exc
        system, first = convo[0], convo[1]
        folded = [{"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}, *convo[2:]]
        return tokenizer.apply_chat_template(folded, **kwargs)


def opens_in_reasoning(prompt: str) -> bool:
    """True when the prompt itself ends inside ``<think>`` (DeepSeek-R1 distill templates do this)."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN)


def completion_text(reasoning: str, answer: str, prompt: str, with_reasoning: bool = True) -> str:
    """The training target after ``prompt``: ``<think>`` (unless the prompt opened it), the reasoning,
    ``</think>``, the answer. The caller appends the tokenizer's EOS."""
    answer = answer.strip()
    if not with_reasoning:
        return answer
    return think_text(reasoning.strip(), answer, opened=not opens_in_reasoning(prompt))


def format_example(
    tokenizer: Any,
    style: str,
    system_prompt: str,
    question: str,
    reasoning: str,
    answer: str,
) -> tuple[str, str]:
    """(prompt, completion) for one training row, built exactly as chat builds its prompts."""
    messages = [Message("system", system_prompt)] if system_prompt else []
    messages.append(Message("user", question.strip()))
    prompt = render_prompt(tokenizer, messages, style)
    plain = get_style(style)
    with_reasoning = plain.reasoning if plain is not None else True
    eos = getattr(tokenizer, "eos_token", None) or ""
    return prompt, completion_text(reasoning, answer, prompt, with_reasoning) + eos
