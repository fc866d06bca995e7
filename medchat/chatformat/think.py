"""The ``<think>`` tags and the incremental splitter: a pure state machine, no I/O, no model.

Rules (chosen so that any chunking of the same text gives the same concatenated texts):
- Text before ``<think>`` is answer, inside it reasoning, after ``</think>`` answer again. A template
  that pre-fills ``<think>`` in the prompt means the output *starts* inside reasoning
  (``start_in_reasoning=True``) and usually contains only ``</think>``.
- Whitespace right after an opening or closing tag is dropped (models write ``<think>\\n``), as is
  leading whitespace of the whole answer. Whitespace just before ``</think>`` stays in the reasoning.
- A stray ``</think>`` in the answer and a nested ``<think>`` in the reasoning are dropped, never shown.
  A ``<think>`` after the answer began opens reasoning again (some models think twice).
- A partial tag at the end of a chunk (``"<thi"``) is held back until the next chunk decides it.
- ``close()`` flushes held text; ``in_reasoning`` then tells whether the reasoning never closed.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN = "<think>"
CLOSE = "</think>"
_TAGS = (OPEN, CLOSE)


@dataclass(frozen=True)
class ReasoningDelta:
    """More text of the model's reasoning (inside <think>…</think>)."""

    text: str
    tokens: int = 0


@dataclass(frozen=True)
class AnswerDelta:
    """More text of the model's answer."""

    text: str
    tokens: int = 0


class ReasoningSplitter:
    def __init__(self, start_in_reasoning: bool = False, continuing: bool = False) -> None:
        self.in_reasoning = start_in_reasoning
        self.saw_reasoning = start_in_reasoning
        self._buf = ""
        # Drop leading whitespace of the output and after each tag; a continued reply keeps its spaces.
        self._skip_ws = not continuing

    def feed(self, chunk: str, tokens: int = 0) -> list[ReasoningDelta | AnswerDelta]:
        """Split ``chunk``; ``tokens`` (how many tokens produced it) is attributed to its pane."""
        events: list[ReasoningDelta | AnswerDelta] = []
        self._buf += chunk
        while self._buf:
            i = self._buf.find("<")
            if i < 0:
                self._emit(self._buf, events)
                self._buf = ""
                break
            if i:
                self._emit(self._buf[:i], events)
                self._buf = self._buf[i:]
            tag = next((t for t in _TAGS if self._buf.startswith(t)), None)
            if tag:
                self._buf = self._buf[len(tag) :]
                self._on_tag(tag)
                continue
            if any(t.startswith(self._buf) for t in _TAGS):
                break  # a possible partial tag: wait for more text
            self._emit("<", events)
            self._buf = self._buf[1:]
        if tokens and events:
            last = events[-1]
            events[-1] = type(last)(last.text, tokens)
        elif tokens:
            # Text held back (a partial tag) or swallowed (a tag, whitespace): still count its tokens.
            events.append((ReasoningDelta if self.in_reasoning else AnswerDelta)("", tokens))
        return events

    def close(self) -> list[ReasoningDelta | AnswerDelta]:
        """End of output: a held partial tag is plain text after all."""
        events: list[ReasoningDelta | AnswerDelta] = []
        if self._buf:
            self._emit(self._buf, events)
            self._buf = ""
        return events

    def _on_tag(self, tag: str) -> None:
        if tag == OPEN and not self.in_reasoning:
            self.in_reasoning = self.saw_reasoning = True
            self._skip_ws = True
        elif tag == CLOSE and self.in_reasoning:
            self.in_reasoning = False
            self._skip_ws = True
        # otherwise a stray tag: dropped, and the text around it joins up unchanged

    def _emit(self, text: str, events: list) -> None:
        if self._skip_ws:
            text = text.lstrip()
            if not text:
                return
            self._skip_ws = False
        kind = ReasoningDelta if self.in_reasoning else AnswerDelta
        if events and type(events[-1]) is kind:
            events[-1] = kind(events[-1].text + text)
        else:
            events.append(kind(text))


def split_text(text: str, start_in_reasoning: bool = False) -> tuple[str, str, bool]:
    """Whole-text convenience: (reasoning, answer, reasoning_closed)."""
    s = ReasoningSplitter(start_in_reasoning)
    events = s.feed(text) + s.close()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer, not s.in_reasoning


def think_text(reasoning: str, answer: str = "", *, opened: bool = True, closed: bool = True) -> str:
    """Reasoning and answer joined back into the model's own text (``<think>\\nR\\n</think>\\nA``).

    ``opened=False`` leaves out ``<think>`` (the prompt pre-filled it); ``closed=False`` stops inside the
    reasoning (a reply cut off while thinking)."""
    text = (f"{OPEN}\n" if opened else "") + reasoning
    if closed:
        text += f"\n{CLOSE}\n{answer}"
    return text
