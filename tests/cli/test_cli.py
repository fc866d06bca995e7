"""The command line: start-up cost, help, config commands, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

from medchat import paths


def medchat(*args, env=None, input=None):
    return subprocess.run(
        [sys.executable, "-m", "medchat", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, input=input, timeout=300,
    )


def test_help_imports_no_heavy_library_and_is_quick():
    code = (
        "import sys, time; t = time.perf_counter();"
        "from medchat.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'textual', 'trl', 'peft', 'unsloth', 'datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line = out.strip().splitlines()[-1]
    assert line.startswith("HEAVY [] "), line
    assert float(line.split()[-1]) < 2.0  # generous: it is ~0.1 s; this only catches a heavy import


def test_every_command_has_help():
    out = medchat("--help").stdout
    assert "medical information, not medical advice" in out
    for cmd in ("ask", "chat", "models", "pull", "config"):
        assert cmd in out
        assert medchat(cmd, "--help").returncode == 0


def test_config_init_show_path():
    assert medchat("config", "path").stdout.strip() == str(paths.config_file())
    r = medchat("config", "init")
    assert r.returncode == 0 and paths.config_file().is_file()
    assert oct(paths.config_file().stat().st_mode & 0o777) == "0o600"
    assert medchat("config", "init").returncode != 0  # refuses to overwrite
    assert 'model = "auto"' in medchat("config", "show").stdout


def test_corrupt_config_is_one_line_and_nonzero():
    paths.config_file().parent.mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text("[generation\n")
    r = medchat("ask", "hello")
    assert r.returncode == 2
    assert r.stderr.startswith("medchat: error:") and "not valid TOML" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_model_is_one_line():
    r = medchat("ask", "--model", "no-such-model", "hi")
    assert r.returncode == 3 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr


def test_missing_adapter_is_one_line():
    r = medchat("ask", "--model", "./nowhere", "--adapter", "ghost", "hi")
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_bad_flag_value_is_refused():
    r = medchat("ask", "--temperature", "-1", "hi")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_empty_question_from_stdin():
    r = medchat("ask", "--model", "smollm2", "-", input="   \n", env={"MEDCHAT_MODEL": "smollm2"})
    assert r.returncode == 2 and "question is empty" in r.stderr


def test_debug_shows_traceback():
    r = medchat("--debug", "ask", "--model", "no-such-model", "hi")
    assert "Traceback" in r.stderr


def test_usage_errors_are_one_line():
    # click's own errors (bad value, unknown option or command, missing argument) read like medchat's.
    for args in (["ask", "--temperature", "-1", "hi"], ["ask", "--bogus", "hi"], ["nosuchcmd"], ["ask"]):
        r = medchat(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("medchat: error: "), (args, r.stderr)
    assert "--help" in medchat("ask", "--bogus", "hi").stderr
    r = medchat("config")  # a bare command group still shows its help
    assert "Usage:" in r.stdout + r.stderr and "init" in r.stdout + r.stderr


def test_unwritable_config_or_export_target_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = medchat("config", "init", env={"MEDCHAT_HOME": str(blocker / "home")})  # a file where a folder must go
    assert r.returncode == 1 and r.stderr.startswith("medchat: error: cannot ") and "Traceback" not in r.stderr


def uncreatable_home(tmp_path) -> str:
    """A MEDCHAT_HOME that cannot be created: under a read-only folder (root ignores that: under /sys)."""
    if os.geteuid() == 0:
        return "/sys/medchat-test-home"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    return str(locked / "home")


def test_an_uncreatable_medchat_home_is_one_line_on_first_run(tmp_path):
    home = uncreatable_home(tmp_path)
    for args in (["ask", "--model", "smollm2", "hi"],
                 ["finetune", "--model", "smollm2", "--dataset", "sample", "--max-steps", "1"]):
        r = medchat(*args, env={"MEDCHAT_HOME": home})
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert last.startswith("medchat: error: cannot create the folder") and "MEDCHAT_HOME" in last


def test_a_seed_beyond_64_bits_is_refused_before_the_model_loads():
    r = medchat("ask", "--model", "smollm2", "--seed", str(2**70), "hi")
    assert r.returncode == 2 and "loading" not in r.stderr
    assert r.stderr.startswith("medchat: error: command line: generation.seed must be -1")


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    # torch reads OMP_WAIT_POLICY when it loads, after main() runs: spinning threads on a shared CPU
    # slow decoding and training many times (benchmarks/RESULTS.md §3c)
    code = ("import os, sys\nfrom medchat.cli.main import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
            "    pass\nprint(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[-2:] == ["PASSIVE", "False"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, check=True)
    assert out.stdout.split()[-2:] == ["ACTIVE", "False"]
