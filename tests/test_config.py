"""Settings: precedence, strictness, and the `medchat config` commands."""

from __future__ import annotations

import os
import re
import threading

import pytest

from medchat import paths
from medchat.config import Settings, load_settings, merge, render_toml
from medchat.errors import ConfigError


def write_config(text: str):
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    s = load_settings()
    assert s.model == "auto" and s.generation.max_new_tokens == 1200 and s.history is True


def test_precedence_defaults_file_env_flags(monkeypatch):
    write_config('model = "from-file"\n[generation]\ntemperature = 0.1\ntop_k = 5\n')
    assert load_settings().model == "from-file"
    monkeypatch.setenv("MEDCHAT_MODEL", "from-env")
    monkeypatch.setenv("MEDCHAT_GENERATION_TEMPERATURE", "0.3")
    s = load_settings()
    assert (s.model, s.generation.temperature, s.generation.top_k) == ("from-env", 0.3, 5)
    s = load_settings({"model": "from-flag", "generation.temperature": None})
    assert (s.model, s.generation.temperature) == ("from-flag", 0.3)


def test_unknown_key_names_file_key_and_nearest():
    path = write_config('modle = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(path) in str(err.value) and "'modle'" in str(err.value) and "'model'" in str(err.value)


def test_unknown_key_in_table_names_the_table():
    write_config("[generation]\nmax_tokens = 5\n")
    with pytest.raises(ConfigError, match=r"\[generation\]: unknown key 'max_tokens'; did you mean 'max_new_tokens'"):
        load_settings()


@pytest.mark.parametrize(
    "text, message",
    [
        ('history = "yes"\n', "expected true or false"),
        ('[generation]\nmax_new_tokens = 1.5\n', "expected an integer"),
        ('[generation]\ntemperature = "hot"\n', "expected a number"),
        ('backend = "vllm"\n', "not one of"),
        ("generation = 3\n", "must be a table"),
        ("[generation]\ntop_p = 0\n", "top_p must be in"),
        ("model = \n", "not valid TOML"),
    ],
)
def test_ill_typed_or_corrupt_values_are_refused(text, message):
    write_config(text)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_bad_env_value_is_refused(monkeypatch):
    monkeypatch.setenv("MEDCHAT_GENERATION_TOP_K", "many")
    with pytest.raises(ConfigError, match="environment.*top_k.*integer"):
        load_settings()


def test_render_round_trips():
    s = load_settings({"model": "smollm2", "generation.temperature": "0.25"})
    path = write_config(render_toml(s))
    assert load_settings(config_path=path) == s


def test_commented_template_loads_as_defaults():
    write_config(render_toml(Settings(), commented=True))
    assert load_settings() == Settings()


def test_merge_rejects_nested_unknown_with_source():
    with pytest.raises(ConfigError, match="recipe.toml"):
        merge(Settings, Settings(), {"generation": {"tempreature": 1}}, "recipe.toml")


def test_non_utf8_file_is_a_config_error():
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xfe model = 1")
    with pytest.raises(ConfigError, match="not valid TOML.*UTF-8"):
        load_settings()


def test_out_of_range_value_names_its_source(monkeypatch):
    path = write_config("[generation]\ntop_p = 2.0\n")
    with pytest.raises(ConfigError, match=f"^{path}: generation.top_p"):
        load_settings()
    monkeypatch.setenv("MEDCHAT_GENERATION_TOP_P", "3.0")
    with pytest.raises(ConfigError, match="^environment: generation.top_p.*3.0"):
        load_settings()
    assert load_settings({"generation.top_p": "0.5"}).generation.top_p == 0.5  # a flag fixes both


def test_render_round_trips_strings_with_newlines_and_control_characters():
    s = load_settings({"system_prompt": 'line one\nline "two"\ttab \\ back\x01\x7f end'})
    path = write_config(render_toml(s))
    assert load_settings(config_path=path) == s


def test_settings_stay_plain_frozen_dataclasses():
    import dataclasses

    s = load_settings({"generation.temperature": "0.25"})
    assert type(s) is Settings and dataclasses.replace(s, model="x").model == "x"
    assert dataclasses.asdict(s)["generation"]["temperature"] == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.model = "x"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[generation]\ntemperature = nan\n", r"\[generation\]: key 'temperature': expected a finite number, got nan"),
        ("[finetune]\nepochs = inf\n", r"\[finetune\]: key 'epochs': expected a finite number, got inf"),
        ("history = 1\n", "key 'history': expected true or false, got 1"),
        ("[generation]\ntop_k = true\n", "key 'top_k': expected an integer, got True"),
        ("[generation]\nmax_new_tokens = 2.0\n", "expected an integer, got 2.0"),
        ("model = 1979-05-27\n", r"key 'model': expected a string, got datetime.date\(1979, 5, 27\)"),
        ('[finetune]\ntarget_modules = "q_proj,v_proj"\n', "expected a list of strings, got 'q_proj,v_proj'"),
        ('[finetune]\ntarget_modules = ["q_proj", 1]\n', r"expected a list of strings, got \['q_proj', 1\]"),
        ('backend = "vllm"\n', "key 'backend': 'vllm' is not one of 'auto', 'unsloth', 'hf'$"),
        ("zzzz = 1\n", "unknown key 'zzzz'; valid keys: adapter, api_key, backend, "),
        ("[generaton]\ntop_k = 1\n", "unknown key 'generaton'; did you mean 'generation'"),
    ],
)
def test_file_values_must_have_their_toml_type(text, message):
    path = write_config(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings()
    assert str(err.value).startswith(f"{path}") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "value, expected", [("yes", True), ("on", True), ("1", True), ("TRUE", True), ("0", False), ("no", False),
                        ("off", False), ("False", False)],
)
def test_env_text_converts_to_bool(monkeypatch, value, expected):
    monkeypatch.setenv("MEDCHAT_HISTORY", value)
    assert load_settings().history is expected


def test_env_text_converts_numbers_and_lists(monkeypatch):
    monkeypatch.setenv("MEDCHAT_GENERATION_TOP_K", " 5 ")
    monkeypatch.setenv("MEDCHAT_GENERATION_TEMPERATURE", "1e-2")
    monkeypatch.setenv("MEDCHAT_FINETUNE_TARGET_MODULES", "q_proj, v_proj,")
    s = load_settings()
    assert (s.generation.top_k, s.generation.temperature, s.finetune.target_modules) == (5, 0.01, ("q_proj", "v_proj"))
    assert load_settings({"finetune.target_modules": "k_proj"}).finetune.target_modules == ("k_proj",)


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("MEDCHAT_HISTORY", "maybe", "^environment: key 'history': expected true or false, got 'maybe'$"),
        ("MEDCHAT_GENERATION_TEMPERATURE", "nan", r"^environment \[generation\]: key 'temperature': expected a finite"),
        ("MEDCHAT_GENERATION_TOP_P", "inf", "finite number, got 'inf'"),
        ("MEDCHAT_GENERATION_TOP_K", "1.5", "expected an integer, got '1.5'"),
        ("MEDCHAT_BACKEND", "HF", "'HF' is not one of 'auto', 'unsloth', 'hf'"),
    ],
)
def test_bad_env_text_is_refused(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_flag_nan_is_refused_and_unknown_flag_key_named():
    with pytest.raises(ConfigError, match=r"^command line \[generation\]: key 'temperature': expected a finite"):
        load_settings({"generation.temperature": float("nan")})
    with pytest.raises(ConfigError, match=r"^command line \[generation\]: unknown key 'tempreature'; did you mean"):
        load_settings({"generation.tempreature": 1.0})


def test_commented_template_has_each_doc_above_its_key():
    text = render_toml(Settings(), commented=True)
    assert "# Sampling temperature; 0 means greedy decoding.\n# temperature = 0.6\n" in text
    assert "\n[generation]\n" in text and "\n[finetune]\n" in text
    assert '# target_modules = ["q_proj", "k_proj", ' in text and text.endswith("\n") and not text.endswith("\n\n")


def test_show_escapes_control_characters():
    text = render_toml(load_settings({"system_prompt": "a\nb\x01\x1b\x7f"}))
    assert not any(ord(c) < 0x20 and c != "\n" or ord(c) == 0x7F for c in text)
    assert 'system_prompt = "a\\nb\\u0001' in text


def test_help_loads_neither_pydantic_nor_tomlkit():
    import subprocess
    import sys

    code = (
        "import sys\nfrom medchat.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('pydantic', 'tomlkit') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("flags, message", [
    ({"generation.seed": 2**64}, r"^command line: generation.seed must be -1 \(a fresh seed\) or 0 to 9223372036854775807"),
    ({"generation.seed": -2}, "generation.seed must be -1"),
    ({"finetune.seed": 2**32}, "finetune.seed must be between 0 and 4294967295"),
])
def test_seeds_out_of_range_are_refused_when_settings_load(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(flags)
    assert load_settings({"generation.seed": 2**63 - 1}).generation.seed == 2**63 - 1


def test_a_missing_file_named_by_medchat_config_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDCHAT_CONFIG", str(tmp_path / "nowhere.toml"))
    with pytest.raises(ConfigError, match=r"the config file .*nowhere.toml does not exist \(MEDCHAT_CONFIG names it\)"):
        load_settings()
    monkeypatch.delenv("MEDCHAT_CONFIG")
    assert load_settings() == Settings()  # the default file may be absent


@pytest.mark.parametrize("var, nearest", [
    ("MEDCHAT_TEMPERATURE", "did you mean MEDCHAT_GENERATION_TEMPERATURE?"),
    ("MEDCHAT_MODLE", "did you mean MEDCHAT_MODEL?"),
    ("MEDCHAT_FINETUNE_LORA_RANK", "did you mean MEDCHAT_FINETUNE_LORA_R"),
    ("MEDCHAT_XYZ", "MEDCHAT_ + its key in upper case"),
])
def test_a_misspelt_variable_is_named_with_the_nearest_valid_one(monkeypatch, var, nearest):
    monkeypatch.setenv(var, "1")
    with pytest.raises(ConfigError, match=f"^environment: unknown variable {var}; .*{re.escape(nearest)}"):
        load_settings()


def test_variables_that_are_not_settings_are_known(monkeypatch):
    for var in ("MEDCHAT_DEBUG", "MEDCHAT_HOME"):
        monkeypatch.setenv(var, "1")
    load_settings()


def test_an_empty_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MEDCHAT_MODEL", "")
    with pytest.raises(ConfigError, match="^environment: model is empty: give 'auto'"):
        load_settings()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_as_config_file_is_refused_not_read(monkeypatch, tmp_path):
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    monkeypatch.setenv("MEDCHAT_CONFIG", str(fifo))
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_settings()
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)  # before the fix the read blocked forever
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
        with open(fifo, "w"):  # unblock the reader so the test process can end
            pass
        pytest.fail("reading a FIFO as the config file blocked")
    assert isinstance(outcome[0], ConfigError) and "config.toml: not a regular file" in str(outcome[0])


def test_think_budget_is_checked():
    import pytest as _pytest

    from medchat.config import GenerationSettings
    from medchat.errors import ConfigError

    GenerationSettings(think_budget=0).validate()
    with _pytest.raises(ConfigError, match="think_budget must be >= -1"):
        GenerationSettings(think_budget=-2).validate()
