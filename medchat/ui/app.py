"""The chat app: wiring only. The chat itself lives in `screens/chat.py`.

The app is handed a backend factory (the CLI passes `medchat.engine.backends.open_backend`; tests pass
scripted backends), so the UI reaches the engine only through its session and events."""

from __future__ import annotations

import sys
from typing import Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from medchat.config import Settings
from medchat.errors import MedchatError, UsageError
from medchat.ui.screens.chat import BackendFactory, ChatScreen, RowFinder


class MedchatApp(App[int]):
    CSS_PATH = "medchat.tcss"
    TITLE = "medchat"

    # (title, help, ChatScreen action) — every chat action is in the command palette too.
    CHAT_COMMANDS = [
        ("New chat", "Start a new conversation (Ctrl+N)", "new_chat"),
        ("Stop", "Stop the reply being written; the partial text stays (Esc)", "stop"),
        ("Regenerate", "Write the last answer again (Ctrl+R)", "regenerate"),
        ("Continue", "Continue a reply that was cut off (Ctrl+O)", "continue_reply"),
        ("Toggle reasoning", "Show or hide the reasoning of the focused or last turn (Ctrl+T)", "toggle_reasoning"),
        ("Choose adapter", "Switch LoRA adapter, or back to the base model (F2)", "pick_adapter"),
        ("History", "Open, export or delete saved conversations (F3)", "history"),
        ("Copy answer", "Copy the focused or last answer to the clipboard (F4)", "copy_last"),
        ("Keep reply as a training row", "Edit the focused or last reply and save it as a medical-o1 row (s)",
         "keep_row"),
        ("Where did this answer come from?", "The adapter's training rows closest to the focused or last reply (w)",
         "where_from"),
        ("Compare base and adapter", "Answer each question with the base model, then the adapter, side by side (F5)",
         "toggle_compare"),
        ("Scroll to top", "Scroll the transcript to the first turn (Ctrl+Home)", "scroll_edge('home')"),
        ("Scroll to bottom", "Scroll the transcript to the latest turn (Ctrl+End)", "scroll_edge('end')"),
    ]

    def __init__(
        self, settings: Settings, backend_factory: BackendFactory, *, resume: int | None = None,
        find_rows: RowFinder | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.backend_factory = backend_factory
        self.resume = resume
        self.find_rows = find_rows
        self.load_error: MedchatError | None = None  # set by the chat screen if the model fails to load

    def on_mount(self) -> None:
        self.push_screen(ChatScreen(self.settings, self.backend_factory, resume=self.resume, find_rows=self.find_rows))

    @property
    def chat(self) -> ChatScreen:
        return next(s for s in self.screen_stack if isinstance(s, ChatScreen))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, ChatScreen):
            for title, help_text, action in self.CHAT_COMMANDS:
                yield SystemCommand(title, help_text, lambda a=action: self.run_action(a, screen))

    async def action_quit(self) -> None:
        chat = [s for s in self.screen_stack if isinstance(s, ChatScreen)]
        if chat:
            chat[0].abandon_generation()  # stop the reply and save what was written
            if chat[0].store is not None:
                chat[0].store.close()
        self.exit(return_code=self.load_error.exit_code if self.load_error else 0)


# The generation thread takes the GIL back thousands of times a second (between tensor operations);
# while the UI thread draws, each of those waits up to the switch interval (5 ms by default). A shorter
# interval keeps a drawing UI from stalling generation.
GIL_SWITCH_INTERVAL = 0.001


def tune_interpreter() -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def make_app(
    settings: Settings, backend_factory: BackendFactory, *, resume: int | None = None,
    find_rows: RowFinder | None = None,
) -> MedchatApp:
    """The app factory (tests pass a backend factory that returns a FakeBackend). ``find_rows``
    answers "where did this answer come from" (the CLI passes the fine-tuning package's search)."""
    return MedchatApp(settings, backend_factory, resume=resume, find_rows=find_rows)


def check_can_start(resume: int | None, stdout=None) -> None:
    """Refuse, before the app starts, what the app could only report as a toast or as escape codes
    in a pipe: a conversation id that does not exist, or an output that is not a terminal."""
    if resume is not None:
        from medchat import paths
        from medchat.store.history import HistoryStore

        missing = MedchatError(f"no conversation {resume} (see medchat history list)")
        if not paths.history_db().exists():
            raise missing
        with HistoryStore() as store:
            if not any(c.id == resume for c in store.list()):
                raise missing
    stdout = stdout if stdout is not None else sys.stdout
    if not stdout.isatty():
        raise UsageError(
            "the chat needs a terminal, but standard output is not one; "
            "for scripts and pipes use `medchat ask QUESTION`"
        )


def run_chat(
    settings: Settings, backend_factory: BackendFactory, resume: int | None = None,
    find_rows: RowFinder | None = None,
) -> None:
    """Run the chat; a model that failed to load becomes the CLI's one-line error and exit code."""
    check_can_start(resume)
    tune_interpreter()
    app = make_app(settings, backend_factory, resume=resume, find_rows=find_rows)
    app.run()
    if app.load_error is not None:
        raise app.load_error
