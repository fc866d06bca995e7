"""The Ollama Modelfile: its Go template is derived from medchat's own prompt rendering."""

from __future__ import annotations

import jinja2
import pytest

from medchat.chatformat.messages import Message
from medchat.chatformat.prompt import render_prompt
from medchat.export.modelfile import go_template, modelfile, turn_pieces

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a default assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatMLTokenizer:
    """Just enough of a tokenizer for render_prompt: a Jinja chat template."""

    chat_template = CHATML

    def apply_chat_template(self, convo, tokenize=False, add_generation_prompt=False, continue_final_message=False):
        return jinja2.Template(self.chat_template).render(messages=convo, add_generation_prompt=add_generation_prompt)


def rebuild(pieces, messages):
    """What the Go template renders, written out in Python: the pieces chosen by the previous role."""
    out, prev = "", ""
    for m in messages:
        if m.role == "system":
            out += (pieces.system_start + m.content) if pieces.system_start is not None else ""
        elif m.role == "user":
            glue = {"system": pieces.user_after_system, "assistant": pieces.user_after_assistant}.get(prev, pieces.user_first)
            out += glue + m.content
        else:
            out += pieces.assistant + m.content
        prev = m.role
    return out + (pieces.generation if prev == "user" else "")


CONVERSATIONS = [
    [Message("system", "Be brief."), Message("user", "What is gout?")],
    [Message("user", "What is gout?")],
    [Message("system", "Be brief."), Message("user", "What is gout?"), Message("assistant", "A crystal arthritis."),
     Message("user", "And its treatment?")],
]


@pytest.mark.parametrize("style", ["chat_template", "r1-medical", "task-query-answer"])
@pytest.mark.parametrize("convo", CONVERSATIONS)
def test_the_template_pieces_rebuild_medchats_own_prompts(style, convo):
    tok = ChatMLTokenizer()
    assert rebuild(turn_pieces(tok, style), convo) == render_prompt(tok, convo, style)


def test_the_modelfile_names_the_file_template_stops_and_parameters():
    text = modelfile("six.gguf", ChatMLTokenizer(), "chat_template", system_prompt="Be careful.",
                     stop=["<|im_end|>", "<|im_end|>"], temperature=0.6, top_p=0.95, num_predict=1200, num_ctx=8192)
    lines = text.splitlines()
    assert "FROM ./six.gguf" in lines
    assert 'SYSTEM """Be careful."""' in lines
    assert lines.count('PARAMETER stop "<|im_end|>"') == 1
    assert {"PARAMETER temperature 0.6", "PARAMETER top_p 0.95", "PARAMETER num_predict 1200",
            "PARAMETER num_ctx 8192"} <= set(lines)
    template = go_template(turn_pieces(ChatMLTokenizer(), "chat_template"))
    assert '{{ "<|im_end|>\\n<|im_start|>assistant\\n" }}{{ end }}' in template  # Go strings: no {{- trims them
    assert template in text


def test_a_style_without_a_system_prompt_gets_no_system_line():
    text = modelfile("x.gguf", ChatMLTokenizer(), "r1-medical", system_prompt="ignored by the style", stop=[],
                     temperature=0.6, top_p=0.95, num_predict=10, num_ctx=2048)
    assert "SYSTEM" not in text
