"""`medchat export --gguf` on a real adapter of the embedded model: llama.cpp's converter writes the file,
it loads back through transformers and passes its own parity gate; damaged or foreign files are caught."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(memorized_adapter, embedded_model_dir, tmp_path_factory):
    """One f16 export for the module (about a minute on 2 cores): (gguf, Modelfile, adapter folder)."""
    from medchat.export.gguf_export import export_gguf
    from medchat.store.adapters import store_dir

    home = tmp_path_factory.mktemp("export-home")
    old = os.environ.get("MEDCHAT_HOME")
    os.environ["MEDCHAT_HOME"] = str(home)
    try:
        (home / "cache" / "models").mkdir(parents=True)
        (home / "cache" / "models" / "smollm2").symlink_to(embedded_model_dir, target_is_directory=True)
        adapter = store_dir() / memorized_adapter.path.name
        shutil.copytree(memorized_adapter.path, adapter)
        out_dir = tmp_path_factory.mktemp("gguf-out")
        lines: list[str] = []
        gguf_file, modelfile, _ = export_gguf(adapter.name, out_dir / "six.gguf", quant="f16", model="smollm2",
                                              device="cpu", offline=True, say=lines.append)
        return gguf_file, modelfile, adapter, lines
    finally:
        if old is None:
            os.environ.pop("MEDCHAT_HOME", None)
        else:
            os.environ["MEDCHAT_HOME"] = old


def test_the_gguf_carries_the_tokenizer_template_and_passes_its_parity_gate(exported):
    from medchat.export.llamacpp import read_metadata
    from medchat.store.manifest import read_manifest

    gguf_file, modelfile, adapter, lines = exported
    assert sorted(p.name for p in gguf_file.parent.iterdir()) == ["six.Modelfile", "six.gguf"]  # nothing half-written
    meta = read_metadata(gguf_file)
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm"  # llama.cpp's hash
    assert meta["tokenizer.ggml.eos_token_id"] == 2 and meta["tokenizer.ggml.bos_token_id"] == 1
    assert meta["tokenizer.chat_template"].startswith("{% for message in messages %}")
    assert any("LlamaModel" in line for line in lines) and any(line.startswith("parity: same greedy tokens") for line in lines)

    record = read_manifest(adapter).exports[-1]
    assert record.kind == "gguf" and record.quant == "f16" and record.path == str(gguf_file)
    assert record.parity.passed and record.parity.same_tokens and record.parity.effect_kept > 0.95

    text = modelfile.read_text()
    assert "FROM ./six.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text and "TEMPLATE" in text


def test_a_truncated_file_is_caught_in_one_line(exported, tmp_path):
    gguf_file, _, adapter, _ = exported
    cut = tmp_path / "cut.gguf"
    with open(gguf_file, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(gguf_file.stat().st_size // 2))
    env = {**os.environ, "MEDCHAT_HOME": str(adapter.parent.parent.parent)}
    r = subprocess.run([sys.executable, "-m", "medchat", "export", "--adapter", adapter.name, "--verify", str(cut),
                        "--model", "smollm2", "--offline"], capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert r.stderr.strip().startswith(f"medchat: error: {cut} is not a readable GGUF file")
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_file_with_another_tokenizer_fails_the_gate(exported, tmp_path, monkeypatch):
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    from medchat.export.gguf_export import verify
    from medchat.export.parity import ParityError

    gguf_file, _, adapter, _ = exported
    monkeypatch.setenv("MEDCHAT_HOME", str(adapter.parent.parent.parent))
    reader = gguf.GGUFReader(gguf_file)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    foreign = tokens[:200] + tokens[200:20000][::-1] + tokens[20000:]  # same size, other ids for most words
    other = tmp_path / "other-tokenizer.gguf"
    writer = gguf.GGUFWriter(other, arch="llama")
    new = {"tokenizer.ggml.tokens": MetadataDetails(gguf.GGUFValueType.ARRAY, foreign, sub_type=gguf.GGUFValueType.STRING)}
    copy_with_new_metadata(reader, writer, new, [])
    with pytest.raises(ParityError) as err:
        verify(adapter.name, other, model="smollm2", device="cpu", offline=True)
    assert "its tokenizer encodes the parity prompts differently" in str(err.value) and "\n" not in str(err.value)


def test_a_tokenizer_llama_cpp_does_not_know_stops_the_export(embedded_model_dir, tmp_path, monkeypatch):
    """A tiny random Qwen2 (the R1 Qwen distill's architecture) with the embedded model's vocabulary:
    transformers loads it as a Qwen2 tokenizer (Qwen's pre-tokenizer over SmolLM2's vocabulary), whose
    hash llama.cpp does not know. The export names the hash and stops; nothing is written or guessed."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from medchat.export.gguf_export import export_gguf
    from medchat.export.parity import ParityError
    from medchat.store.adapters import store_dir

    monkeypatch.setenv("MEDCHAT_HOME", str(tmp_path / "home"))
    base = tmp_path / "tiny-qwen2"
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=True, max_position_embeddings=2048)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(base, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(embedded_model_dir / name, base / name)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adapter = store_dir() / "tiny"
    peft_model.save_pretrained(adapter)
    (adapter / "medchat.json").write_text('{"name": "tiny", "base_model": {"id": "%s"}}' % base)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    lines: list[str] = []
    with pytest.raises(ParityError) as err:
        export_gguf("tiny", out_dir / "tiny.gguf", quant="f16", model=str(base), device="cpu", offline=True,
                    say=lines.append)
    assert str(err.value).startswith("llama.cpp's converter does not recognise this model's tokenizer "
                                     "(pre-tokenizer hash ") and "\n" not in str(err.value)
    assert "converting with llama.cpp's Qwen2Model to f16" in lines
    assert list(out_dir.iterdir()) == []  # no GGUF, no staging folder, no Modelfile
