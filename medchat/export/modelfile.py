"""An Ollama Modelfile for an exported GGUF: the prompt format, stop tokens and sampling parameters.

Ollama formats chats with a Go template, not the Jinja chat template in the GGUF. The template is
derived from medchat's own prompt rendering (the adapter's prompt style or the model's chat template):
a conversation of marker strings is rendered, and the text between the markers becomes the literal
pieces of the Go template. So Ollama asks the model exactly as medchat does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from medchat.chatformat.messages import Message
from medchat.chatformat.prompt import render_prompt
from medchat.errors import UsageError

_SYS, _U1, _A1, _U2 = "MEDCHATxSYSTEMx", "MEDCHATxUSERx1", "MEDCHATxASSISTANTx1", "MEDCHATxUSERx2"


@dataclass(frozen=True)
class TurnPieces:
    """The literal text around each message, by what came before it."""

    system_start: str | None  # before a first system message; None: the format has no system prompt
    user_after_system: str
    user_first: str
    user_after_assistant: str
    assistant: str  # before an assistant message (after a user one)
    generation: str  # after the last user message: where the model starts writing


def _between(text: str, start: str | None, end: str | None) -> str:
    i = text.index(start) + len(start) if start else 0
    j = text.index(end, i) if end else len(text)
    return text[i:j]


def turn_pieces(tokenizer: Any, style: str) -> TurnPieces:
    def render(*msgs: tuple[str, str]) -> str:
        return render_prompt(tokenizer, [Message(r, c) for r, c in msgs], style)

    with_system = render(("system", _SYS), ("user", _U1))
    first_user = render(("user", _U1))
    two_turns = render(("system", _SYS), ("user", _U1), ("assistant", _A1), ("user", _U2))
    for text, marks in ((with_system, (_U1,)), (first_user, (_U1,)), (two_turns, (_U1, _A1, _U2))):
        if not all(m in text for m in marks):
            raise UsageError("cannot derive an Ollama template from this prompt format (it rewrites the messages)")
    has_system = _SYS in with_system
    user_first = _between(first_user, None, _U1)
    pieces = TurnPieces(
        system_start=_between(with_system, None, _SYS) if has_system else None,
        user_after_system=_between(with_system, _SYS, _U1) if has_system else user_first,
        user_first=user_first,
        user_after_assistant=_between(two_turns, _A1, _U2),
        assistant=_between(two_turns, _U1, _A1),
        generation=_between(with_system, _U1, None),
    )
    if _between(two_turns, _U2, None) != pieces.generation:
        raise UsageError("cannot derive an Ollama template from this prompt format (turns are not uniform)")
    return pieces


def _lit(text: str) -> str:
    """A Go template string literal (JSON's escapes are valid Go escapes; non-ASCII stays as is)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def go_template(p: TurnPieces) -> str:
    system = f"{_lit(p.system_start)}{{{{ .Content }}}}" if p.system_start is not None else ""
    return (
        '{{- $prev := "" }}\n'
        "{{- range .Messages }}\n"
        f'{{{{- if eq .Role "system" }}}}{system}\n'
        f'{{{{- else if eq .Role "user" }}}}{{{{ if eq $prev "system" }}}}{_lit(p.user_after_system)}'
        f'{{{{ else if eq $prev "assistant" }}}}{_lit(p.user_after_assistant)}'
        f"{{{{ else }}}}{_lit(p.user_first)}{{{{ end }}}}{{{{ .Content }}}}\n"
        f'{{{{- else if eq .Role "assistant" }}}}{_lit(p.assistant)}{{{{ .Content }}}}\n'
        "{{- end }}\n"
        "{{- $prev = .Role }}\n"
        "{{- end }}\n"
        f'{{{{- if eq $prev "user" }}}}{_lit(p.generation)}{{{{ end }}}}'
    )


def _quoted(text: str) -> str:
    if '"""' in text:
        raise UsageError('the prompt format contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def modelfile(
    gguf_name: str,
    tokenizer: Any,
    style: str,
    *,
    system_prompt: str,
    stop: list[str],
    temperature: float,
    top_p: float,
    num_predict: int,
    num_ctx: int,
) -> str:
    """The Modelfile text; ``gguf_name`` is the GGUF's file name (the Modelfile lies beside it)."""
    pieces = turn_pieces(tokenizer, style)
    lines = [
        "# Written by `medchat export`: the adapter merged into its base model, prompt format as medchat uses it.",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(go_template(pieces))}",
    ]
    if system_prompt and pieces.system_start is not None:
        lines.append(f"SYSTEM {_quoted(system_prompt)}")
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in dict.fromkeys(stop) if s]
    lines += [
        f"PARAMETER temperature {temperature:g}",
        f"PARAMETER top_p {top_p:g}",
        f"PARAMETER num_predict {num_predict}",
        f"PARAMETER num_ctx {num_ctx}",
    ]
    return "\n".join(lines) + "\n"
