"""Bare `medchat` is `medchat chat`: the same options, by construction, and the same call to the chat."""

from __future__ import annotations

import asyncio

import click
import pytest
from click.testing import CliRunner

from medchat.cli.chat import chat
from medchat.cli.main import cli, main
from medchat.store.history import HistoryStore, StoredTurn
from medchat.ui import app as app_module

GROUP_ONLY = {"debug", "version"}  # the root group's own options (and -h/--help, which is no param)


def options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option)}


def sample_args(param: click.Option) -> list[str]:
    """Command-line words that set ``param`` to a value other than its default."""
    flag = param.opts[0]
    if param.is_flag:
        return [flag]
    typ = param.type
    if isinstance(typ, click.Choice):
        return [flag, typ.choices[-1]]
    if isinstance(typ, (click.IntRange, click.FloatRange)):
        return [flag, "1"]
    if typ is click.INT:
        return [flag, "7"]
    return [flag, "some-value"]


@pytest.fixture
def chat_calls(monkeypatch):
    """Every run_chat call as (settings, resume), instead of opening the app."""
    calls = []
    monkeypatch.setattr(app_module, "run_chat",
                        lambda settings, _backends, resume=None, find_rows=None: calls.append((settings, resume)))
    return calls


def test_bare_medchat_has_every_chat_option():
    group, command = options(cli), options(chat)
    assert set(group) - GROUP_ONLY == set(command)
    for name, param in command.items():
        assert group[name].opts == param.opts and group[name].secondary_opts == param.secondary_opts
    help_text = CliRunner().invoke(cli, ["--help"]).output
    for flag in ("--resume", "--no-history", "--debug", "--version", "-h, --help"):
        assert flag in help_text


@pytest.mark.parametrize("name", sorted(options(chat)))
def test_each_chat_option_on_bare_medchat_reaches_the_chat_alike(chat_calls, name):
    args = sample_args(options(chat)[name])
    runner = CliRunner()
    for argv in (args, ["chat", *args]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 0, (argv, result.output, result.exception)
    (bare, sub) = chat_calls
    assert bare == sub


def test_bare_medchat_without_options_opens_the_default_chat(chat_calls):
    assert CliRunner().invoke(cli, []).exit_code == 0
    assert CliRunner().invoke(cli, ["chat"]).exit_code == 0
    assert chat_calls[0] == chat_calls[1] and chat_calls[0][1] is None


def test_resume_on_bare_medchat_reopens_the_conversation(monkeypatch):
    # The real run_chat and app, headless over a scripted backend: the stored turn is on screen.
    from medchat.engine.backends.fake import FakeBackend

    with HistoryStore() as store:
        cid = store.new_conversation("What is gout?", model="smollm2")
        store.save_turn(cid, 0, StoredTurn("What is gout?", "uric acid…", "A form of arthritis.", "stop",
                                           model="smollm2"))
    shown = []

    async def drive(app) -> None:
        async with app.run_test() as pilot:
            for _ in range(500):
                screen = app.screen
                if getattr(screen, "conversation_id", None) == cid and screen.session is not None:
                    break
                await pilot.pause(0.02)
            session = app.screen.session
            shown.append((app.screen.conversation_id, [(t.user, t.answer) for t in session.turns]))

    real_make_app = app_module.make_app

    def headless_app(settings, backend_factory, *, resume=None, find_rows=None):
        app = real_make_app(settings, lambda _settings, _progress: FakeBackend([]), resume=resume, find_rows=find_rows)
        app.run = lambda: asyncio.run(drive(app))
        return app

    monkeypatch.setattr(app_module, "make_app", headless_app)
    monkeypatch.setattr(app_module, "check_can_start", lambda resume: None)  # pytest's stdout is no tty
    for argv in (["--resume", str(cid)], ["chat", "--resume", str(cid)]):
        assert CliRunner().invoke(cli, argv).exit_code == 0
    assert shown == [(cid, [("What is gout?", "A form of arthritis.")])] * 2


def test_chat_options_before_another_command_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--model", "smollm2", "ask", "hi"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medchat: error: --model before 'ask' is a chat option") and "\n" not in err
