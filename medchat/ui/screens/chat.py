"""The chat screen: transcript of turns, the message box, the status bar and the disclaimer line.

Threads: the model loads in a daemon thread (quitting mid-load must not wait for it) and each reply is
generated in a Textual thread worker. Both only post messages (`medchat.ui.messages`, `ReplyEnded`);
every widget is touched on the UI thread alone, which reads a streaming reply's text from the
session's live reply on a timer (see `medchat.ui.streaming`). History is written here, on the UI
thread, as each turn progresses.
"""

from __future__ import annotations

import gc
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from medchat.config import Settings
from medchat.engine.events import Event, GenerationDone, GenerationFailed, GenerationStats
from medchat.engine.session import ChatSession, turns_for_session
from medchat.errors import MedchatError, out_of_memory
from medchat.safety import notice_text
from medchat.store.adapters import DEMO_ADAPTER, DEMO_NOTICE
from medchat.store.history import HistoryStore, stored_from_turn
from medchat.ui import clock
from medchat.ui.messages import (
    AdapterFailed,
    AdapterSwitched,
    BackendFailed,
    BackendReady,
    LoadProgress,
    StreamStarted,
)
from medchat.ui.screens.adapters import AdapterPicker
from medchat.ui.screens.history import HistoryBrowser
from medchat.ui.screens.keep_row import KeepRowEditor, KeptRow
from medchat.ui.screens.where_from import WhereFrom
from medchat.ui.streaming import MIN_INTERVAL, ReplyEnded, ReplyReader, TakePacer
from medchat.ui.widgets.compare import CompareView
from medchat.ui.widgets.loading import LoadingView
from medchat.ui.widgets.prompt import PromptInput
from medchat.ui.widgets.status import StatusBar
from medchat.ui.widgets.turn import TurnView

SAVE_EVERY = 2.0  # seconds between saves of a reply in progress (what a crash can lose at most)
START_AFTER_FRAMES = 2  # frames drawn before the model starts: the new turn, then the new footer

WELCOME = (
    "Ask a medical question below. The model's reasoning streams in a dimmed pane that folds away when "
    "the answer starts.\n\n"
    "Enter sends · Ctrl+J newline · Esc stops · Ctrl+R regenerates · Ctrl+N new chat · "
    "F2 adapter · F3 history · F5 compare base and adapter · Ctrl+P every command"
)

# Short enough for one line at 120 columns; narrower terminals wrap it (it is never cut off).
DISCLAIMER_LINE = "medchat gives medical information, not medical advice. In an emergency, call your local emergency number."

BackendFactory = Callable[[Settings, Callable[[str], None]], Any]
# (adapter, reasoning, answer, k) -> the adapter's training rows closest to a reply (a `Provenance`)
RowFinder = Callable[..., Any]


def is_warning(progress_line: str) -> bool:
    """A loading line the user must still see after loading: the model was not the one asked for."""
    line = progress_line.strip().lower()
    return line.startswith(("auto picked", "warning")) or "using the embedded" in line


class TakeDue(Message):
    """Time for the next take of the reply in progress (posted by its timer)."""

    def __init__(self, turn_id: int, live: "LiveTurn") -> None:
        super().__init__()
        self.turn_id = turn_id
        self.live = live


@dataclass
class LiveTurn:
    """Where a turn in progress belongs, so it is saved correctly even after the view moved on."""

    session: ChatSession
    position: int
    conversation_id: int | None
    model: str
    adapter: str
    reader: ReplyReader  # the reply's text as it streams
    prompt_tokens: int = 0
    last_save: float = 0.0
    next_take: Timer | None = None
    side: str = ""  # compare mode: "base" (saved as the turn's base reply) or "adapter"
    then: TurnView | None = None  # compare mode: the adapter's column, answered when the base reply ends


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+o", "continue_reply", "Continue"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+t", "toggle_reasoning", "Reasoning"),
        Binding("f2", "pick_adapter", "Adapter"),
        Binding("f3", "history", "History"),
        Binding("f4", "copy_last", "Copy answer"),
        Binding("f5", "toggle_compare", "Compare", show=False),  # the footer is full; the welcome and Ctrl+P name it
        Binding("pageup", "scroll_transcript(-1)", "Scroll up", show=False, priority=True),
        Binding("pagedown", "scroll_transcript(1)", "Scroll down", show=False, priority=True),
        Binding("ctrl+home", "scroll_edge('home')", "Top", show=False),
        Binding("ctrl+end", "scroll_edge('end')", "Bottom", show=False),
    ]

    def __init__(
        self, settings: Settings, backend_factory: BackendFactory, *, resume: int | None = None,
        find_rows: RowFinder | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.backend_factory = backend_factory
        self.find_rows = find_rows
        self.resume = resume
        self.backend: Any = None
        self.session: ChatSession | None = None
        self.store: HistoryStore | None = None
        self.conversation_id: int | None = None
        self.load_error: MedchatError | None = None
        self.generating_turn: int | None = None
        self.switching_adapter = False
        self.compare = False  # compare mode: each question is answered by the base model, then the adapter
        self.stopping = False  # Esc was pressed; the generation thread ends at its next token
        self._queued_adapter: str | None = None  # chosen while a stopped reply was winding down
        self._views: dict[int, TurnView] = {}
        self._live: dict[int, LiveTurn] = {}
        self._next_id = 0
        self._pacer = TakePacer()
        self.load_notes: list[str] = []  # loading warnings, kept at the top of the transcript
        self.row_file = "saved"  # where "keep as training row" saves (the editor lets the user pick)
        self.queued_message: str | None = None  # sent while the model loaded; sent once it is ready

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with VerticalScroll(id="transcript"):
            yield LoadingView(*self._loading_text(), id="loading")
        yield Static(DISCLAIMER_LINE, id="disclaimer", markup=False)
        yield PromptInput(id="prompt")
        yield Footer()

    def _loading_text(self) -> tuple[str, list[str]]:
        s = self.settings
        if s.endpoint:
            return f"Connecting to {s.endpoint}", [f"model: {s.model}"]
        details = [
            f"adapter: {s.adapter or 'default (the demo adapter on the embedded model, else none)'}",
            f"device: {s.device} · backend: {s.backend} · dtype: {s.dtype} · quantize: {s.quantize}",
        ]
        return f"Loading model {s.model}…", details

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def prompt(self) -> PromptInput:
        return self.query_one(PromptInput)

    # -- loading --------------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.status.state = "loading"
        self.prompt.focus()
        self.set_interval(1.0, self._tick)
        if self.settings.history:
            try:
                self.store = HistoryStore()
            except MedchatError as exc:
                self.notify(f"History is off: {exc}", severity="warning", timeout=8)
        # A daemon thread, not a worker: quitting while a model loads must not wait for the load.
        threading.Thread(target=self._load_backend, name="medchat-load", daemon=True).start()

    def on_unmount(self) -> None:
        # However the app ends, stop the reply in progress (its thread polls the cancel flag).
        self.abandon_generation()

    def _load_backend(self) -> None:
        say = lambda line: self.post_message(LoadProgress(line))  # noqa: E731
        try:
            backend = self.backend_factory(self.settings, say)
        except MedchatError as exc:
            self.post_message(BackendFailed(str(exc), exc.exit_code))
        except Exception as exc:  # noqa: BLE001 - shown in the app; the CLI exits non-zero
            if out_of_memory(exc):
                self.post_message(BackendFailed("out of memory while loading the model: try --quantize 4bit or a smaller model", 6))
            else:
                self.post_message(BackendFailed(f"{type(exc).__name__}: {exc}", 1))
        else:
            if not self.post_message(BackendReady(backend)):
                backend.close()  # the app was closed while loading

    def on_load_progress(self, message: LoadProgress) -> None:
        for view in self.query(LoadingView):
            view.add_line(message.line)
        if is_warning(message.line):
            self.load_notes.append(message.line)

    async def on_backend_ready(self, message: BackendReady) -> None:
        self.backend = message.backend
        self.session = self._new_session()
        self.status.show_info(self.backend.info)
        self.status.state = "ready"
        await self.query(LoadingView).remove()
        await self._show_load_notes()
        for note in self.load_notes:
            self.notify(note, title="Model", severity="warning", timeout=10)
        if self.resume is not None:
            await self.open_conversation(self.resume)
        queued, self.queued_message = self.queued_message, None
        await self.query("#queued").remove()
        if queued is not None and self.generating_turn is None:
            await self.send(queued)
        if not self._views:
            await self._show_welcome()
        self.transcript.anchor()
        self.refresh_bindings()

    def on_backend_failed(self, message: BackendFailed) -> None:
        self.load_error = MedchatError(message.error)
        self.load_error.exit_code = message.exit_code
        self.app.load_error = self.load_error  # run_chat turns it into the CLI's error line and code
        self.status.state = "model failed to load"
        for view in self.query(LoadingView):
            view.fail(message.error)
        if self.queued_message is not None:  # not sent: give the text back rather than lose it
            for note in self.query("#queued"):
                note.update(f"You: {self.queued_message}\n✖ not sent: the model failed to load")
            if not self.prompt.text:
                self.prompt.text = self.queued_message
            self.queued_message = None

    def _new_session(self, turns=()) -> ChatSession:
        return ChatSession(self.backend, self.settings.generation, self.settings.system_prompt, turns=turns)

    async def _show_welcome(self) -> None:
        text = WELCOME
        if self.backend is not None and self.backend.info.adapter == DEMO_ADAPTER:
            text += "\n\n" + DEMO_NOTICE  # say plainly what the default adapter is (and is not)
        await self.transcript.mount(Static(text, id="welcome", markup=False))

    # -- sending --------------------------------------------------------------------------------
    async def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        text = message.text.strip()
        if not text:
            return
        if self.session is None and self.load_error is None:
            await self._queue_until_loaded(message.prompt, text)
            return
        if not self._ready_to_generate():
            return
        message.prompt.clear()
        await self.send(text)

    async def _queue_until_loaded(self, prompt: PromptInput, text: str) -> None:
        """A message sent while the model loads waits, visibly, and is sent when the model is ready."""
        if self.queued_message is not None:
            self.notify("A message is already waiting for the model; it will send when the model is loaded.",
                        severity="warning")
            return
        self.queued_message = text
        prompt.clear()
        await self.transcript.mount(
            Static(f"You: {text}\n⏳ will send when the model is loaded", id="queued", markup=False)
        )
        self.transcript.scroll_end(animate=False)

    def _ready_to_generate(self) -> bool:
        if self.session is None:
            self.notify(
                "The model failed to load; Ctrl+Q quits." if self.load_error else "The model is still loading…",
                severity="warning",
            )
            return False
        if self.generating_turn is not None:
            self.notify("A reply is still being written: wait, or press Esc to stop it.", severity="warning")
            return False
        if self.switching_adapter:
            self.notify("Switching adapter; one moment.", severity="warning")
            return False
        return True

    async def send(self, text: str) -> None:
        assert self.session is not None
        for welcome in self.query("#welcome"):
            await welcome.remove()
        if self.compare:
            base, adapter = await self._add_compare_views(text)
            adapter.set_status("waits for the base model's reply…", "pending")
            events = self.session.send_compare(text)
            self._start(base, events, position=len(self.session.turns) - 1, side="base", then=adapter)
            return
        view = await self._add_view(text)
        events = self.session.send(text)
        self._start(view, events, position=len(self.session.turns) - 1)

    async def _add_compare_views(
        self, text: str, *, model: str | None = None, adapter: str | None = None
    ) -> tuple[TurnView, TurnView]:
        """Compare mode: the question, and a column for each side, headed by what produced it."""
        model = model if model is not None else self.backend.info.model
        adapter = adapter if adapter is not None else self.backend.info.adapter
        self._next_id += 2
        base = TurnView(self._next_id - 1, text, model_label=model, column=f"base model · {model}")
        tuned = TurnView(self._next_id, text, model_label=f"{model} + {adapter}", column=f"adapter · {adapter}",
                         adapter=adapter)
        self._views[base.turn_id], self._views[tuned.turn_id] = base, tuned
        await self.transcript.mount(CompareView(text, notice_text(text), base, tuned))
        return base, tuned

    async def _add_view(self, text: str, *, model_label: str | None = None, adapter: str | None = None) -> TurnView:
        self._next_id += 1
        label = model_label if model_label is not None else self._model_label()
        adapter = adapter if adapter is not None else self.backend.info.adapter
        view = TurnView(self._next_id, text, notice_text(text), model_label=label, adapter=adapter)
        self._views[view.turn_id] = view
        await self.transcript.mount(view)
        return view

    def _model_label(self) -> str:
        info = self.backend.info
        return info.model + (f" + {info.adapter}" if info.adapter else "")

    def _start(
        self, view: TurnView, events: Iterator[Event], position: int, *, side: str = "", then: TurnView | None = None
    ) -> None:
        assert self.session is not None
        info = self.backend.info
        if self.store is not None and self.conversation_id is None:
            self.conversation_id = self._store_call(
                self.store.new_conversation, self.session.turns[0].user, model=info.model,
                adapter=info.adapter, backend=info.backend, system_prompt=self.settings.system_prompt,
            )
        # session.live: the reply that send/regenerate/continue_last has just begun.
        reader = ReplyReader(self.session.live)
        self._live[view.turn_id] = LiveTurn(
            self.session, position, self.conversation_id, info.model, "" if side == "base" else info.adapter, reader,
            side=side, then=then,
        )
        self._save(view.turn_id)
        self.generating_turn = view.turn_id
        self.prompt.cursor_blink = False  # each blink is a screen update: none while a reply streams
        self.status.state = "generating"
        self.status.tok_per_s = 0.0
        view.begin()
        self.transcript.scroll_end(animate=False)
        self.transcript.anchor()
        self.refresh_bindings()
        # The model starts once the new turn is on screen: those two frames (the new turn, then the
        # footer recomposed with the new bindings) would otherwise compete with the model's first
        # tokens for the interpreter lock. A cancel in between still counts (see ChatSession._run).
        self.call_after_refresh(self._begin_generation, events, view.turn_id, self.session)

    def _begin_generation(
        self, events: Iterator[Event], turn_id: int, session: ChatSession, frames: int = 1
    ) -> None:
        if self.generating_turn != turn_id or session is not self.session:
            return  # abandoned before it started (new chat, reopened conversation, quit)
        if frames < START_AFTER_FRAMES or (frames < 2 * START_AFTER_FRAMES and self._drawing()):
            self.call_after_refresh(self._begin_generation, events, turn_id, session, frames + 1)
            return
        self._pacer.reset()
        # While the reply streams, the garbage collector leaves the objects that existed before it
        # alone: a full collection walks the whole app (tens of milliseconds, growing with the
        # transcript), and it runs in whichever thread allocates, often the generation thread.
        gc.freeze()
        self._generate(events, turn_id, session)
        self._schedule_take(turn_id)

    @work(thread=True, group="generation", exit_on_error=False)
    def _generate(self, events: Iterator[Event], turn_id: int, session: ChatSession) -> None:
        """Worker thread: run the engine and post its final event. Touches no widget.

        The text streams through the session's live reply (the engine fills it, the UI reads it),
        so this thread does nothing per token: `deque(maxlen=1)` drains the events in C, keeping
        only the last one."""
        try:
            prompt_tokens = session.backend.count_tokens(session.messages())
        except Exception:  # noqa: BLE001 - the count is cosmetic (status bar)
            prompt_tokens = 0
        self.post_message(StreamStarted(turn_id, prompt_tokens))
        try:
            final = deque(events, maxlen=1)
            event = final[0] if final else None
            if not isinstance(event, (GenerationDone, GenerationFailed)):
                raise MedchatError("the generation ended without a result")
        except Exception as exc:  # noqa: BLE001 - e.g. continue_last refusing; shown in the transcript
            message = str(exc) if isinstance(exc, MedchatError) else f"{type(exc).__name__}: {exc}"
            event = GenerationFailed(message)
        self.post_message(ReplyEnded(turn_id, event))

    def _drawing(self) -> bool:
        """The screen still has a layout or a repaint to do (Textual's own flags; False if renamed)."""
        flags = ("_layout_required", "_repaint_required", "_recompose_required", "_dirty_widgets")
        return any(getattr(self, flag, False) for flag in flags)

    def on_stream_started(self, message: StreamStarted) -> None:
        # Shown by the next take with the reply's tokens: no repaint now, while the model starts.
        if live := self._live.get(message.turn_id):
            live.prompt_tokens = message.prompt_tokens

    def _schedule_take(self, turn_id: int) -> None:
        live = self._live.get(turn_id)
        if live is not None:
            # After an empty take the pacer's wait is over: look again in MIN_INTERVAL. The timer
            # only posts a message: a take runs in the screen's queue, never beside another one or
            # beside the reply's end (a timer's callback runs in a task of its own).
            wait = self._pacer.wait() or MIN_INTERVAL
            live.next_take = self.set_timer(wait, lambda: self.post_message(TakeDue(turn_id, live)), name="take")

    async def on_take_due(self, message: TakeDue) -> None:
        if self._live.get(message.turn_id) is message.live:  # not a reply that ended or was replaced
            await self._take(message.turn_id)

    async def _take(self, turn_id: int, last: bool = False) -> None:
        """Show what the reply gained since the last take; then, unless it ended, plan the next one."""
        live = self._live.get(turn_id)
        if live is None:
            return  # ended or abandoned meanwhile
        taken = live.reader.take()
        if taken:  # an empty take draws nothing: it is not a take for the pacer
            self._pacer.took()
            for kind, text, tokens in taken:
                await self._show_chunk(turn_id, kind, text, tokens)
        if not last and self._live.get(turn_id) is live:
            self._schedule_take(turn_id)

    async def on_reply_ended(self, message: ReplyEnded) -> None:
        if live := self._live.get(message.turn_id):
            if live.next_take is not None:
                live.next_take.stop()
            await self._take(message.turn_id, last=True)
        await self._end(message.turn_id, message.event)

    async def _show_chunk(self, turn_id: int, kind: str, text: str, tokens: int) -> None:
        view = self._views.get(turn_id)
        if view is None or not view.is_attached:
            return
        await view.add(kind, text, tokens)
        live = self._live.get(turn_id)
        tokens = view.state.reasoning_tokens + view.state.answer_tokens
        if view.first_token_at is not None:
            elapsed = clock.now() - view.first_token_at
            if elapsed > 0.5 and tokens > 1:
                self.status.tok_per_s = (tokens - 1) / elapsed
        if live is not None:
            self.status.context_used = live.prompt_tokens + tokens
            if clock.now() - live.last_save >= SAVE_EVERY:
                self._save(turn_id)

    async def _end(self, turn_id: int, event: GenerationDone | GenerationFailed) -> None:
        live = self._live.pop(turn_id, None)
        stopped = self.stopping
        if self.generating_turn == turn_id:
            self._reply_ended()
            self.status.state = "switching adapter…" if self.switching_adapter else "ready"
            if live is not None and live.then is not None:  # compare mode: the adapter's half comes next
                self.generating_turn = live.then.turn_id
        view = self._views.get(turn_id)
        if live is not None:
            self._save_live(live, view)
        self.refresh_bindings()
        if view is None or not view.is_attached or live is None:
            if live is not None and live.then is not None and self.generating_turn == live.then.turn_id:
                self._reply_ended()  # the compared question is gone: its adapter half never starts
            return
        turn = live.session.turns[live.position] if live.position < len(live.session.turns) else None
        if turn is not None and live.side == "base":
            turn = turn.base
        reasoning = turn.reasoning if turn else getattr(event, "reasoning", "")
        answer = turn.answer if turn else getattr(event, "answer", "")
        if isinstance(event, GenerationDone):
            stats = turn.stats if turn and turn.stats else event.stats
            self.status.tok_per_s = stats.tok_per_s
            self.status.context_used = stats.prompt_tokens + stats.completion_tokens
            footer = f"{stats.completion_tokens} tokens · {stats.tok_per_s:.1f} tok/s · {view.state.model_label}"
            await view.finish(reasoning, answer, stats.finish_reason, stats=stats, footer=footer)
        else:
            error = event.error
            if event.out_of_memory and "memory" not in error:
                error = "out of memory: " + error
            await view.finish(reasoning, answer, "error", error=error)
        if self.transcript.is_anchored:
            self.transcript.scroll_end(animate=False)
        if live.then is not None:
            await self._answer_with_adapter(live, event, stopped)

    async def _answer_with_adapter(self, live: LiveTurn, event: GenerationDone | GenerationFailed, stopped: bool) -> None:
        """Compare mode: the base model's reply ended; now the adapter answers the same prompt, unless
        Esc stopped the base reply (Esc stops both) or the conversation moved on meanwhile."""
        view = live.then
        assert view is not None
        if self.generating_turn != view.turn_id:
            return  # abandoned meanwhile (new chat, reopened conversation, quit)
        if live.session is not self.session or not view.is_attached:
            self.generating_turn = None
            return
        cancelled = stopped or (isinstance(event, GenerationDone) and event.stats.finish_reason == "cancelled")
        if cancelled:
            self.generating_turn = None
            self.refresh_bindings()
            turn = live.session.turns[live.position]
            turn.stats = GenerationStats(finish_reason="cancelled")
            await view.finish("", "", "cancelled", footer=view.state.model_label)
            if self.store is not None and live.conversation_id is not None:
                row = stored_from_turn(turn, model=live.model, adapter=self.backend.info.adapter)
                self._store_call(self.store.save_turn, live.conversation_id, live.position, row)
            return
        self._start(view, live.session.answer_last(), live.position, side="adapter")

    def _tick(self) -> None:
        if self.generating_turn is not None and (view := self._views.get(self.generating_turn)):
            view.tick()

    # -- history --------------------------------------------------------------------------------
    def _store_call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run a history write; on failure, say so once and carry on without history."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - disk full, locked database…: the chat goes on
            self.notify(f"History could not be saved, it is off for this session: {exc}", severity="error", timeout=10)
            self.store = None
            return None

    def _save(self, turn_id: int) -> None:
        live = self._live.get(turn_id)
        if live is not None:
            self._save_live(live, self._views.get(turn_id))

    def _save_live(self, live: LiveTurn, view: TurnView | None, finish: str | None = None) -> None:
        first_save = live.last_save == 0.0
        live.last_save = clock.now()
        if self.store is None or live.conversation_id is None or live.position >= len(live.session.turns):
            return
        turn = live.session.turns[live.position]
        if live.side == "base":  # compare mode: the turn's row (the adapter's, in progress) first
            if first_save:
                row = stored_from_turn(turn, model=live.model, adapter=self.backend.info.adapter)
                self._store_call(self.store.save_turn, live.conversation_id, live.position, row)
            if turn.base is None or self.store is None:
                return
            target = turn.base
        else:
            target = turn
        row = stored_from_turn(target, model=live.model, adapter=live.adapter, finish_reason=finish)
        if view is not None and not target.stats and not target.error:
            # In progress: the view holds what has been shown so far (the engine's turn may lag).
            row.reasoning, row.answer = view.state.reasoning, view.state.answer
        save = self.store.save_base_reply if live.side == "base" else self.store.save_turn
        self._store_call(save, live.conversation_id, live.position, row)

    def abandon_generation(self) -> None:
        """Stop the reply in progress and save it as stopped (quit, new chat, reopen)."""
        if self.session is not None and self.generating_turn is not None:
            self.session.cancel()
            turn_id = self.generating_turn
            live = self._live.pop(turn_id, None)
            if live is not None:
                if live.next_take is not None:
                    live.next_take.stop()
                self._save_live(live, self._views.get(turn_id), finish="cancelled")
            self._reply_ended()

    def _reply_ended(self) -> None:
        self.generating_turn = None
        self.stopping = False
        gc.unfreeze()
        for prompt in self.query(PromptInput):  # none while the screen is being unmounted
            prompt.cursor_blink = True

    async def open_conversation(self, conversation_id: int) -> None:
        if self.store is None:
            try:
                store = HistoryStore()
            except MedchatError as exc:
                self.notify(str(exc), severity="error")
                return
        else:
            store = self.store
        try:
            conv = store.load(conversation_id)
        except MedchatError as exc:
            self.notify(str(exc), severity="error")
            return
        self.abandon_generation()
        await self._clear_transcript()
        self.session = self._new_session(turns_for_session(conv))
        self.conversation_id = conversation_id if self.store is not None else None
        for position, (stored, turn) in enumerate(zip(conv.turns, self.session.turns)):
            base = conv.base_replies.get(position)
            if base is not None and turn.base is not None:  # a compared question: both columns again
                left, view = await self._add_compare_views(stored.user, model=stored.model, adapter=stored.adapter)
                await self._show_stored(left, base, turn.base)
            else:
                label = stored.model + (f" + {stored.adapter}" if stored.adapter else "")
                view = await self._add_view(stored.user, model_label=label, adapter=stored.adapter)
            await self._show_stored(view, stored, turn)
        self.notify(f"Reopened conversation {conversation_id}: {conv.title}", timeout=3)
        self.transcript.scroll_end(animate=False)
        self.refresh_bindings()

    @staticmethod
    async def _show_stored(view: TurnView, stored: Any, turn: Any) -> None:
        label = stored.model + (f" + {stored.adapter}" if stored.adapter else "")
        finish = stored.finish_reason if stored.finish_reason != "in_progress" else "interrupted"
        footer = f"{stored.completion_tokens} tokens · {label}" if stored.completion_tokens else label
        await view.finish(
            stored.reasoning, stored.answer, "error" if stored.error else finish,
            stats=turn.stats, error=stored.error, footer=footer,
        )

    async def _clear_transcript(self) -> None:
        await self.transcript.remove_children()
        self._views.clear()
        await self._show_load_notes()

    async def _show_load_notes(self) -> None:
        # The loading view (where these first appear) is gone a moment after loading: keep them.
        for note in self.load_notes:
            await self.transcript.mount(Static(note, classes="load-note", markup=False))

    # -- actions --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """True: enabled; None: shown greyed out; False: hidden (and its key left free)."""
        ready = self.session is not None
        busy = self.generating_turn is not None
        if action == "stop":
            return busy  # Esc means "stop" only while a reply is being written
        if action == "regenerate":
            if not ready or not self.session.turns:
                return False
            return None if busy else True
        if action == "continue_reply":
            can = ready and bool(self.session.turns) and self.session.turns[-1].can_continue
            return (None if busy else True) if can else False
        if action in ("new_chat", "pick_adapter", "copy_last", "toggle_reasoning", "history", "toggle_compare",
                      "keep_row", "where_from"):
            return True if ready else (False if self.load_error else None)
        return True

    def action_stop(self) -> None:
        if self.session is not None and self.generating_turn is not None:
            self.session.cancel()
            self.stopping = True
            if view := self._views.get(self.generating_turn):
                view.set_status("stopping…", "pending")

    def _refuse_compared(self) -> bool:
        if self.session is not None and self.session.turns and self.session.turns[-1].base is not None:
            self.notify("The last question was compared: ask it again to compare two new replies.", severity="warning")
            return True
        return False

    async def action_regenerate(self) -> None:
        if not self._ready_to_generate() or not self.session.turns or self._refuse_compared():
            return
        view = self._last_view()
        if view is None:
            return
        await view.reset()
        events = self.session.regenerate()
        self._start(view, events, position=len(self.session.turns) - 1)

    async def action_continue_reply(self) -> None:
        if not self._ready_to_generate() or not self.session.turns or self._refuse_compared():
            return
        if not self.session.turns[-1].can_continue:
            self.notify("The last reply did not stop early; nothing to continue.")
            return
        view = self._last_view()
        if view is None:
            return
        await view.resume()
        events = self.session.continue_last()
        self._start(view, events, position=len(self.session.turns) - 1)

    async def action_new_chat(self) -> None:
        if self.backend is None:
            return
        self.abandon_generation()
        await self._clear_transcript()
        self.session = self._new_session()
        self.conversation_id = None
        self.status.tok_per_s = 0.0
        self.status.context_used = 0
        await self._show_welcome()
        self.prompt.focus()
        self.refresh_bindings()

    async def action_toggle_compare(self) -> None:
        if self.backend is None:
            return
        adapter = self.backend.info.adapter
        if not self.compare and not adapter:
            self.notify("Compare mode needs an adapter: choose one with F2, then press F5.", severity="warning")
            return
        await self._set_compare(not self.compare)

    async def _set_compare(self, on: bool, why: str = "") -> None:
        self.compare = self.status.compare = on
        if on:
            text = f"── compare mode: each question is answered by the base model, then by adapter {self.backend.info.adapter} ──"
        else:
            text = "── compare mode off" + (f" ({why})" if why else "") + " ──"
        for welcome in self.query("#welcome"):
            await welcome.remove()
        await self.transcript.mount(Static(text, classes="divider", markup=False))
        self.transcript.scroll_end(animate=False)

    def _chosen_reply(self, doing: str) -> TurnView | None:
        """The focused reply, else the last one; None (and a note) if there is none to act on yet."""
        view = self.focused if isinstance(self.focused, TurnView) else self._last_view()
        if view is None or not view.state.answer.strip():
            self.notify(f"No finished reply to {doing} yet.")
            return None
        if view.turn_id == self.generating_turn or view.state.finish == "":
            self.notify(f"Wait for the reply to finish, then {doing} it.", severity="warning")
            return None
        return view

    def action_keep_row(self) -> None:
        view = self._chosen_reply("keep")
        if view is None:
            return
        # The reasoning is the reasoning pane's text, never the answer's.
        editor = KeepRowEditor(view.state.user, view.state.reasoning, view.state.answer, self.row_file)
        self.app.push_screen(editor, self._row_kept)

    def _row_kept(self, kept: KeptRow | None) -> None:
        if kept is not None:
            self.row_file = kept.path.stem  # the next row goes to the same file
            self.notify(kept.summary(), title="Training row kept", timeout=6)

    def action_where_from(self) -> None:
        view = self._chosen_reply("trace")
        if view is None:
            return
        if not view.adapter:
            self.notify("This reply came from the base model (no adapter): it has no training rows to look in.")
            return
        if self.find_rows is None:
            self.notify("Looking up training rows is not available here.", severity="warning")
            return
        self.app.push_screen(WhereFrom(self.find_rows, view.adapter, view.state.reasoning, view.state.answer))

    def action_toggle_reasoning(self) -> None:
        view = self.focused if isinstance(self.focused, TurnView) else self._last_view()
        if view is not None:
            view.action_toggle_reasoning()

    def action_copy_last(self) -> None:
        view = self.focused if isinstance(self.focused, TurnView) else self._last_view()
        if view is None or not view.state.answer:
            self.notify("No answer to copy yet.")
            return
        view.action_copy_answer()

    def action_scroll_transcript(self, direction: int) -> None:
        if direction < 0:
            self.transcript.scroll_page_up()
        else:
            self.transcript.scroll_page_down()

    def action_scroll_edge(self, edge: str) -> None:
        if edge == "home":
            self.transcript.scroll_home()
        else:
            self.transcript.scroll_end()

    def _last_view(self) -> TurnView | None:
        views = list(self.query(TurnView))
        return views[-1] if views else None

    # -- adapters -------------------------------------------------------------------------------
    def action_pick_adapter(self) -> None:
        if self.backend is None:
            return
        if self.generating_turn is not None and not self.stopping:
            self.notify("Stop the reply first (Esc), then switch adapters.", severity="warning")
            return
        if self.switching_adapter:
            self.notify("Switching adapter; one moment.", severity="warning")
            return
        # A stopped reply may still be winding down: the switch then waits for it (_adapter_chosen).
        self.app.push_screen(AdapterPicker(current=self.backend.info.adapter), self._adapter_chosen)

    def _adapter_chosen(self, choice: str | None) -> None:
        if choice is None or choice == (self.backend.info.adapter or ""):
            return
        self.switching_adapter = True
        if self._generation_running():
            # The model is still busy with the stopped reply; switching now would race it.
            self._queued_adapter = choice
            self.status.state = "switching adapter after the stopped reply…"
            return
        self.status.state = "switching adapter…"
        self._switch_adapter(choice or None)

    def _generation_running(self) -> bool:
        return any(
            w.group == "generation" and w.node is self and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
            for w in self.workers
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "generation" or self._queued_adapter is None or self._generation_running():
            return
        choice, self._queued_adapter = self._queued_adapter, None
        self.status.state = "switching adapter…"
        self._switch_adapter(choice or None)

    @work(thread=True, group="adapter", exit_on_error=False)
    def _switch_adapter(self, adapter: str | None) -> None:
        try:
            self.backend.set_adapter(adapter)
        except MedchatError as exc:
            self.post_message(AdapterFailed(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the previous adapter stays; say why
            self.post_message(AdapterFailed(f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(AdapterSwitched(adapter))

    async def on_adapter_switched(self, message: AdapterSwitched) -> None:
        self.switching_adapter = False
        self.status.show_info(self.backend.info)
        self.status.state = "ready"
        what = f"adapter {message.adapter}" if message.adapter else "the base model (no adapter)"
        for welcome in self.query("#welcome"):
            await welcome.remove()
        await self.transcript.mount(Static(f"── now answering with {what} ──", classes="divider", markup=False))
        if self.compare and not message.adapter:
            await self._set_compare(False, "no adapter to compare with")
        self.transcript.scroll_end(animate=False)
        self.notify(f"Now using {what}.", timeout=3)

    async def on_adapter_failed(self, message: AdapterFailed) -> None:
        self.switching_adapter = False
        self.status.show_info(self.backend.info)
        self.status.state = "ready"
        still = self.backend.info.adapter or "the base model"
        text = f"Adapter not switched: {message.error}. Still using {still}."
        # In the transcript too: a toast is short-lived and may cut a long reason.
        await self.transcript.mount(Static(text, classes="divider error", markup=False))
        self.transcript.scroll_end(animate=False)
        self.notify(f"{message.error}\nStill using {still}.", title="Adapter not switched", severity="error", timeout=10)

    # -- history browser ------------------------------------------------------------------------
    def action_history(self) -> None:
        store = self.store
        if store is None and not self.settings.history:
            from medchat import paths

            if paths.history_db().exists():
                try:
                    store = HistoryStore()
                except MedchatError:
                    store = None
        self.app.push_screen(HistoryBrowser(store), self._history_chosen)

    async def _history_chosen(self, conversation_id: int | None) -> None:
        if conversation_id is None:
            return
        if self.backend is None:
            self.resume = conversation_id
            return
        await self.open_conversation(conversation_id)
