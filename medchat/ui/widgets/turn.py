"""One exchange in the transcript: the user's message, an emergency notice if needed, the model's
reasoning (dimmed, collapsible) and its answer (Markdown), and a status line.

Both panes stream through ``Markdown.get_stream()`` (see `StreamingMarkdown`: appends are batched,
only the last block is re-parsed, long text is kept in chunks so the cost per token stays flat, and
each update draws at most DRAW_CHARS), and get one full ``update()`` when the reply ends so the final
rendering is exact (code fences, tables).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from medchat.chatformat.think import think_text
from medchat.engine.events import GenerationStats
from medchat.ui import clock
from medchat.ui.widgets.streaming_markdown import DRAW_CHARS, StreamingMarkdown


@dataclass
class TurnState:
    """What the view shows; filled from stream chunks, or from a finished turn."""

    user: str
    reasoning: str = ""
    answer: str = ""
    reasoning_tokens: int = 0
    answer_tokens: int = 0
    finish: str = ""  # "", "stop", "length", "length_in_reasoning", "cancelled", "error"
    error: str = ""
    model_label: str = ""


class ReasoningHeader(Static, can_focus=True):
    """The clickable title of the reasoning pane: "▶ Thought for 12 s · 340 tokens"."""

    BINDINGS = [Binding("enter,space", "toggle", "Show/hide reasoning", show=False)]

    class Toggle(Message):
        pass

    def action_toggle(self) -> None:
        self.post_message(self.Toggle())

    def _on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(self.Toggle())


class ReasoningPane(Vertical):
    """Dimmed reasoning with a header; collapsed, only the header stays.

    The text sits in its own scroll box (at most half the screen high) that follows the stream: long
    reasoning does not push the answer far away, and only its visible part is laid out and drawn.
    """

    _collapsed = False

    def compose(self) -> ComposeResult:
        yield ReasoningHeader("", classes="reasoning-header")
        with VerticalScroll(classes="reasoning-scroll"):
            yield StreamingMarkdown(classes="reasoning-body")

    def on_mount(self) -> None:
        self.query_one(".reasoning-scroll", VerticalScroll).anchor()

    def fit_scroll_box(self) -> None:
        """Give the box its fixed height and scrollbar once the text fills it (see medchat.tcss)."""
        box = self.query_one(".reasoning-scroll", VerticalScroll)
        if not box.has_class("-full") and box.max_scroll_y > 0:
            box.add_class("-full")

    @property
    def collapsed(self) -> bool:
        return self._collapsed

    def set_collapsed(self, collapsed: bool) -> None:
        # The scroll box's own display, not a class on the pane: a class change restyles every
        # widget below the pane (hundreds of Markdown blocks in long reasoning).
        self._collapsed = collapsed
        self.query_one(".reasoning-scroll", VerticalScroll).display = not collapsed

    def on_reasoning_header_toggle(self, event: ReasoningHeader.Toggle) -> None:
        event.stop()
        self.set_collapsed(not self.collapsed)
        self.parent_turn.refresh_header()

    @property
    def parent_turn(self) -> "TurnView":
        return self.query_ancestor(TurnView)


class TurnView(Vertical, can_focus=True):
    """A turn of the conversation; focus it (click, Tab) to copy its answer or toggle its reasoning."""

    BINDINGS = [
        Binding("c", "copy_answer", "Copy answer"),
        Binding("C", "copy_all", "Copy with reasoning", show=False),
        Binding("u", "copy_question", "Copy question", show=False),
        Binding("t", "toggle_reasoning", "Reasoning"),
        Binding("s", "screen.keep_row", "Keep as training row"),
        Binding("w", "screen.where_from", "Where from?"),
    ]

    def __init__(
        self, turn_id: int, user: str, notice: str | None = None, *, model_label: str = "", column: str = "",
        adapter: str = "",
    ) -> None:
        super().__init__(classes="turn column" if column else "turn")
        self.turn_id = turn_id
        self.adapter = adapter  # the adapter that wrote this reply ("" = the base model)
        self.column = column  # compare mode: the column's header (what produced it); the question is above
        self.state = TurnState(user=user, model_label=model_label)
        self.notice = notice
        self.started = clock.now()
        self.first_token_at: float | None = None
        self.reasoning_ended_at: float | None = None
        self.reasoning_seconds: float | None = None
        self._streaming = False

    # -- composition ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        if self.column:
            yield Static(self.column, markup=False, classes="column-header")
        else:
            yield Static(self.state.user, markup=False, classes="user-message")
        if self.notice and not self.column:
            yield Static("⚠  " + self.notice, markup=False, classes="red-flag")
        pane = ReasoningPane(classes="reasoning -empty")
        yield pane
        yield StreamingMarkdown(classes="answer")
        yield Static("", classes="turn-status")

    @property
    def reasoning_pane(self) -> ReasoningPane:
        return self.query_one(ReasoningPane)

    @property
    def reasoning_md(self) -> StreamingMarkdown:
        return self.query_one(".reasoning-body", StreamingMarkdown)

    @property
    def answer_md(self) -> StreamingMarkdown:
        return self.query_one(".answer", StreamingMarkdown)

    # -- streaming ------------------------------------------------------------------------------
    def begin(self) -> None:
        """A (re)generation starts: clear the panes and show that we are waiting."""
        self._streaming = True
        self.started = clock.now()
        self.first_token_at = self.reasoning_ended_at = self.reasoning_seconds = None
        self.set_status("generating…  (Esc stops)", "pending")

    async def reset(self) -> None:
        """Empty both panes (regenerate)."""
        self.state = TurnState(user=self.state.user, model_label=self.state.model_label)
        await self.reasoning_md.set_text("")
        await self.answer_md.set_text("")
        self.reasoning_pane.add_class("-empty")
        self.reasoning_pane.set_collapsed(False)

    async def resume(self) -> None:
        """Continue a cut-off reply: keep the text, stream more into the same panes."""
        self._streaming = True
        self.state.finish = ""
        if self.state.reasoning and not self.state.answer:
            self.reasoning_pane.set_collapsed(False)
        self.set_status("continuing…  (Esc stops)", "pending")

    async def add(self, kind: str, text: str, tokens: int) -> None:
        now = clock.now()
        if self.first_token_at is None:
            self.first_token_at = now
        if kind == "reasoning":
            self.state.reasoning += text
            self.state.reasoning_tokens += tokens
            pane = self.reasoning_pane
            if pane.has_class("-empty"):
                pane.remove_class("-empty")
                pane.set_collapsed(False)
            await self.reasoning_md.write(text, DRAW_CHARS)
            pane.fit_scroll_box()
        else:
            if self.state.reasoning and self.reasoning_ended_at is None:
                # The answer started: end the reasoning's stream and fold it away (its full render
                # waits for the end of the reply: the answer is what is on screen now).
                await self.reasoning_md.close()
                self.reasoning_ended_at = now
                self.reasoning_pane.set_collapsed(True)
            self.state.answer += text
            self.state.answer_tokens += tokens
            await self.answer_md.write(text, DRAW_CHARS)
        self.refresh_header()

    async def finish(
        self,
        reasoning: str,
        answer: str,
        finish: str,
        *,
        stats: GenerationStats | None = None,
        error: str = "",
        footer: str = "",
    ) -> None:
        """The reply ended: one full render of each pane, then the final header and status."""
        self._streaming = False
        self.state.reasoning, self.state.answer = reasoning, answer
        self.state.finish, self.state.error = finish, error
        if stats is not None:
            self.state.reasoning_tokens = stats.reasoning_tokens
            self.state.answer_tokens = stats.answer_tokens
            self.reasoning_seconds = stats.reasoning_seconds
        pane = self.reasoning_pane
        if reasoning:
            pane.remove_class("-empty")
            await self.reasoning_md.finish(reasoning)
        else:
            pane.add_class("-empty")
        await self.answer_md.finish(answer)
        # Keep the reasoning open when it is all there is (no answer, or cut off inside it).
        pane.set_collapsed(bool(answer.strip()) and finish != "length_in_reasoning")
        self.call_after_refresh(pane.fit_scroll_box)
        self.refresh_header()
        self.set_status(*_status_line(self.state, footer, keys=not self.column))

    # -- display helpers ------------------------------------------------------------------------
    def refresh_header(self) -> None:
        pane = self.reasoning_pane
        arrow = "▶" if pane.collapsed else "▼"
        tokens = self.state.reasoning_tokens
        tok = f" · {tokens} tokens" if tokens else ""
        if self._streaming and self.reasoning_ended_at is None and not self.state.answer:
            seconds = clock.now() - self.started
            label = f"{arrow} Thinking… {seconds:.0f} s{tok}"
        else:
            if self.reasoning_seconds is not None:
                seconds = self.reasoning_seconds
            elif self.reasoning_ended_at is not None:
                seconds = self.reasoning_ended_at - self.started
            else:
                seconds = None
            label = f"{arrow} Thought for {seconds:.0f} s{tok}" if seconds is not None else f"{arrow} Reasoning{tok}"
        if self.state.finish == "length_in_reasoning":
            label += "  (cut off while thinking)"
        # One line whatever the label: no layout pass needed (this runs on every streamed batch).
        pane.query_one(ReasoningHeader).update(label, layout=False)

    def tick(self) -> None:
        """Called every second while streaming, so "Thinking… N s" moves even between tokens."""
        if self._streaming:
            self.refresh_header()

    def set_status(self, text: str, kind: str = "") -> None:
        status = self.query_one(".turn-status", Static)
        status.update(text)
        status.set_classes(f"turn-status {kind}".strip())
        status.display = bool(text)

    # -- actions --------------------------------------------------------------------------------
    def action_copy_answer(self) -> None:
        self.app.copy_to_clipboard(self.state.answer)
        self.app.notify("Answer copied to the clipboard.", timeout=2)

    def action_copy_question(self) -> None:
        self.app.copy_to_clipboard(self.state.user)
        self.app.notify("Question copied to the clipboard.", timeout=2)

    def action_copy_all(self) -> None:
        text = self.state.answer
        if self.state.reasoning:
            text = think_text(self.state.reasoning, "\n" + text)
        self.app.copy_to_clipboard(text)
        self.app.notify("Reasoning and answer copied to the clipboard.", timeout=2)

    def action_toggle_reasoning(self) -> None:
        pane = self.reasoning_pane
        if pane.has_class("-empty"):
            self.app.notify("This reply has no reasoning.", timeout=2)
            return
        pane.set_collapsed(not pane.collapsed)
        self.refresh_header()


def _status_line(state: TurnState, footer: str, keys: bool = True) -> tuple[str, str]:
    """The line under a reply; ``keys``: name Ctrl+R / Ctrl+O (not under compare mode's columns,
    which are asked again rather than regenerated or continued)."""
    tail = f"  ·  {footer}" if footer else ""
    if state.finish == "error":
        return f"✖ {state.error}", "error"
    if state.finish == "cancelled":
        return "■ Stopped — the partial reply is kept." + (" Ctrl+R regenerates." if keys else "") + tail, "warning"
    if state.finish == "length_in_reasoning":
        return "Cut off while thinking (token budget reached)" + (" — Ctrl+O continues." if keys else ".") + tail, "warning"
    if state.finish == "length":
        return "Cut off at the token budget" + (" — Ctrl+O continues." if keys else ".") + tail, "warning"
    if state.finish == "interrupted":
        return "This reply was interrupted before it finished." + tail, "warning"
    if not state.answer.strip() and state.reasoning.strip():
        return "The model gave no answer outside its reasoning." + tail, "warning"
    return footer, "dim"
