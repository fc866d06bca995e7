"""Settings: precedence, strictness, and the `medchat config` commands."""

from __future__ import annotations

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
