"""The engine on CUDA (run on a GPU machine; skipped elsewhere).

GPU_TEST_MODEL names a local model folder, e.g. the random-init 8B shape that the GPU kit's
mkmodel.py writes: `GPU_TEST_MODEL=/tmp/l8b python -m pytest -m gpu tests/test_gpu_engine.py -s`.
"""

from __future__ import annotations

import os

import pytest

from medchat.chatformat.messages import Message
from medchat.config import load_settings
from medchat.engine.events import GenerationDone
from medchat.engine.session import stream_events

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not os.environ.get("GPU_TEST_MODEL"), reason="set GPU_TEST_MODEL to a model folder"),
]


@pytest.mark.parametrize("backend", ["unsloth", "hf"])
def test_4bit_model_streams_through_the_engine(backend):
    from medchat.engine.backends import open_local

    settings = load_settings({"model": os.environ["GPU_TEST_MODEL"], "backend": backend, "quantize": "4bit",
                              "generation.temperature": "0", "generation.max_new_tokens": "128"})
    engine = open_local(settings, print)
    assert engine.info.backend == backend and engine.info.device == "cuda"
    msgs = [Message("user", "A 58-year-old man has crushing chest pain. What is the most likely diagnosis?")]
    list(stream_events(engine, msgs, settings.generation))  # warm-up
    done = list(stream_events(engine, msgs, settings.generation))[-1]
    assert isinstance(done, GenerationDone) and done.stats.completion_tokens > 0
    print(f"\n{backend}: {done.stats.completion_tokens} tokens, {done.stats.tok_per_s:.1f} tok/s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def test_unmerged_lora_in_cuda_graphs_matches_eager_and_survives_switches(tmp_path):
    """int4 base + LoRA in 16-bit: the captured graphs give the eager loop's greedy tokens, an in-place
    switch to another adapter gives what a decoder built with it gives, and back."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from adapter_switch import write_adapter
    from transformers import AutoModelForCausalLM

    from medchat.config import GenerationSettings
    from medchat.models.fastdecode import FastDecoder
    from medchat.models.lora import read_lora

    model_dir = os.environ["GPU_TEST_MODEL"]
    adapters = [read_lora(write_adapter(model_dir, tmp_path / f"a{i}", rank=16, seed=i, b_std=0.5), 10**6)
                for i in (1, 2)]

    def decoder(adapter, graphs=True):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
        return FastDecoder(model, quantize="int4", cuda_graphs=graphs, adapter=adapter)

    prompt, greedy = list(range(300, 340)), GenerationSettings(temperature=0.0, max_new_tokens=48)
    run = lambda d: list(d.generate(prompt, greedy))  # noqa: E731
    graphed = decoder(adapters[0])
    first = run(graphed)
    eager = decoder(adapters[0], graphs=False)
    assert first == run(eager)
    del eager
    logits = graphed.prompt_logits(prompt)
    graphed.set_adapter(adapters[1])
    assert not torch.allclose(graphed.prompt_logits(prompt), logits)  # the new matrices are in use
    run(graphed)
    graphed.set_adapter(None)
    graphed.set_adapter(adapters[0])
    assert run(graphed) == first


def test_fused_lora_kernels_give_the_two_gemm_tokens(tmp_path, monkeypatch):
    """The Triton kernels (fastdecode.LORA_OP = "fused") against two GEMMs a projection, same weights."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from adapter_switch import write_adapter
    from transformers import AutoModelForCausalLM

    import medchat.models.fastdecode as fastdecode
    from medchat.config import GenerationSettings
    from medchat.models.lora import read_lora

    model_dir = os.environ["GPU_TEST_MODEL"]
    adapter = read_lora(write_adapter(model_dir, tmp_path / "a", rank=16, seed=1, b_std=0.5), 10**6)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    monkeypatch.setattr(fastdecode, "LORA_OP", "fused")
    decoder = fastdecode.FastDecoder(model, quantize="int4", adapter=adapter)
    assert decoder._lora_kernels is not None
    prompt, greedy = list(range(300, 340)), GenerationSettings(temperature=0.0, max_new_tokens=48)
    fused = list(decoder.generate(prompt, greedy))
    decoder._lora_kernels = None  # the same decoder, two GEMMs a projection
    decoder._drop_graphs()
    two_gemms = list(decoder.generate(prompt, greedy))
    assert fused[:16] == two_gemms[:16]  # float32 sums in another order: later near-ties may differ
