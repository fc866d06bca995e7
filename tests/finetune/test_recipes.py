"""Recipes A–E are valid settings files and reproduce the seeds' facts; user recipes are strict."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from medchat.cli.main import cli
from medchat.config import Settings
from medchat.errors import ConfigError, UsageError
from medchat.finetune.recipes import bundled_recipes, find_recipe, settings_for


def test_five_bundled_recipes_one_per_seed_system():
    recipes = bundled_recipes()
    assert [r.system for r in recipes] == ["A", "B", "C", "D", "E"]
    for r in recipes:
        assert r.title and r.notes
        settings = settings_for({}, r)  # the same strict merge as the config file
        assert isinstance(settings, Settings)
        assert settings.finetune.prompt_style in ("r1-medical", "task-query-answer", "medical-qa")


@pytest.mark.parametrize("name", ["C", "c", "c-medical-cot-qwen"])
def test_find_by_letter_or_name(name):
    assert find_recipe(name).system == "C"


def test_system_c_settings_match_the_seed():
    s = settings_for({}, find_recipe("C"))
    ft = s.finetune
    assert s.model == "unsloth/DeepSeek-R1-Distill-Qwen-1.5B" and s.quantize == "4bit"
    assert (ft.subset, ft.prompt_style, ft.lora_r, ft.lora_alpha, ft.lora_dropout) == ("zh", "r1-medical", 16, 16, 0.0)
    assert set(ft.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (ft.batch_size, ft.grad_accum, ft.learning_rate, ft.lr_scheduler) == (1, 4, 2e-4, "linear")
    assert (ft.optimizer, ft.max_steps, ft.logging_steps, ft.precision, ft.merge) == ("adamw_8bit", 60, 10, "bf16", True)


def test_system_e_settings_match_the_seed():
    s = settings_for({}, find_recipe("E"))
    ft = s.finetune
    assert s.model == "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"
    assert ft.dataset == "medalpaca/medical_meadow_medical_flashcards" and ft.fraction == 0.1
    assert (ft.max_seq_length, ft.batch_size, ft.grad_accum, ft.max_steps, ft.epochs) == (1024, 6, 2, 0, 1.0)
    assert (ft.learning_rate, ft.lr_scheduler, ft.warmup_ratio) == (5e-5, "cosine", 0.05)
    assert (ft.lora_r, ft.lora_alpha, ft.use_rslora, ft.prompt_style) == (64, 128, True, "medical-qa")


def test_systems_b_and_d_take_the_first_500_rows():
    for letter in "BD":
        ft = settings_for({}, find_recipe(letter)).finetune
        assert (ft.samples, ft.select) == (500, "first")
    assert settings_for({}, find_recipe("D")).finetune.max_seq_length == 2048


def test_flags_override_the_recipe():
    s = settings_for({"finetune.max_steps": "5", "model": "smollm2"}, find_recipe("C"))
    assert s.finetune.max_steps == 5 and s.model == "smollm2" and s.finetune.lora_r == 16


def test_user_recipe_is_validated_strictly(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('model = "smollm2"\n[recipe]\ntitle = "mine"\n[finetune]\nlora_rank = 8\n')
    with pytest.raises(ConfigError, match="unknown key 'lora_rank'.*did you mean 'lora_r'"):
        find_recipe(str(path))
    path.write_text('[finetune]\nlora_r = "eight"\n')
    with pytest.raises(ConfigError, match="expected an integer"):
        find_recipe(str(path))
    path.write_text('[finetune]\nlora_r = 8\nmax_steps = 2\n')
    recipe = find_recipe(str(path))
    assert settings_for({}, recipe).finetune.lora_r == 8


def test_unknown_recipe():
    with pytest.raises(UsageError, match="unknown recipe 'Z'"):
        find_recipe("Z")


def test_recipes_command_lists_and_shows():
    runner = CliRunner()
    listed = runner.invoke(cli, ["recipes"])
    assert listed.exit_code == 0
    for letter in "ABCDE":
        assert f"\n{letter}  " in "\n" + listed.output
    shown = runner.invoke(cli, ["recipes", "E"])
    assert shown.exit_code == 0 and "lora_r = 64" in shown.output
