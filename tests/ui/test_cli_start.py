"""`medchat chat` refuses, before the app starts, what it could only report badly inside it."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from medchat.errors import MedchatError, UsageError
from medchat.store.history import HistoryStore
from medchat.ui.app import check_can_start


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # stdout is a pipe here, as in `medchat chat | cat`; the app must never start.
    code = "import sys; from medchat.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ}, stdin=subprocess.DEVNULL,
    )


def test_resume_of_unknown_conversation_is_one_line_error():
    with pytest.raises(MedchatError, match=r"^no conversation 99 \(see medchat history list\)$"):
        check_can_start(99, stdout=Tty())
    with HistoryStore() as store:  # a database that exists, without that id
        known = store.new_conversation("hello", model="m", adapter="", backend="fake", system_prompt="")
    with pytest.raises(MedchatError, match="no conversation 99"):
        check_can_start(99, stdout=Tty())
    check_can_start(known, stdout=Tty())  # a known id passes


def test_stdout_not_a_terminal_is_refused():
    with pytest.raises(UsageError, match="medchat ask") as info:
        check_can_start(None, stdout=io.StringIO())
    assert info.value.exit_code == 2
    check_can_start(None, stdout=Tty())


def test_cli_exits_before_the_app_starts():
    result = run_cli("chat", "--resume", "99")
    assert result.returncode != 0
    assert result.stderr.strip() == "medchat: error: no conversation 99 (see medchat history list)"
    assert "\x1b" not in result.stdout + result.stderr

    result = run_cli("chat")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "medchat ask" in lines[0] and lines[0].startswith("medchat: error:")
    assert result.stdout == ""
