"""A LoRA adapter's matrices, per decoder layer and projection, for medchat's own decode loop.

The fast decoder keeps the adapter *unmerged*: its base weights stay as they are (16-bit or int4) and
each projection adds ``scale · (x Aᵀ) Bᵀ`` in 16-bit, as PEFT computes it during training. Folding the
update into int4 weights would round most of it away (benchmarks/RESULTS.md §5). Reading the matrices
here, instead of through a PEFT-wrapped model, lets the decoder swap adapters without reloading the
base. Two sources give the same ``LoraWeights``: an adapter folder (``read_lora``) and a model already
wrapped by PEFT (``lora_from_peft``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medchat.errors import AdapterError

# the projections the decode loop knows, by the module name transformers gives them
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
_HEAD_KEY = re.compile(r"(?:^|\.)lm_head\.lora_([AB])(?:\.[^.]+)?\.weight$")


class UnsupportedLora(Exception):
    """An adapter feature the decode loop does not implement (the caller falls back to generate)."""


@dataclass
class LoraWeights:
    """``(A [r, in], B [out, r], scale)`` per ``(layer index, projection)``; ``"lm_head"`` at layer -1."""

    name: str
    matrices: dict[tuple[int, str], tuple[Any, Any, float]] = field(default_factory=dict)

    def get(self, layer: int, projection: str) -> tuple[Any, Any, float] | None:
        return self.matrices.get((layer, projection))

    @property
    def rank(self) -> int:
        return max((a.shape[0] for a, _b, _s in self.matrices.values()), default=0)


def _scale(config: Any, module_key: str, rank: int) -> float:
    """PEFT's scaling for one module: alpha / r (alpha / sqrt(r) with rsLoRA), per-module patterns first."""
    from peft.utils.other import get_pattern_key

    alpha = config.lora_alpha
    if config.alpha_pattern:
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module_key), alpha)
    return alpha / math.sqrt(rank) if config.use_rslora else alpha / rank


def _refuse_unsupported(config: Any, where: str) -> None:
    if getattr(config, "use_dora", False):
        raise UnsupportedLora(f"{where}: DoRA adapters are not supported by the decode loop")
    if getattr(config, "lora_bias", False):
        raise UnsupportedLora(f"{where}: LoRA biases are not supported by the decode loop")
    if getattr(config, "modules_to_save", None):
        raise UnsupportedLora(f"{where}: fully trained modules ({', '.join(config.modules_to_save)}) "
                              "are not supported by the decode loop")


def read_lora(path: Path, n_layers: int) -> LoraWeights:
    """The matrices of the adapter folder ``path``; one clear error when its tensors fit no projection."""
    from peft import LoraConfig
    from peft.utils import load_peft_weights

    try:
        config = LoraConfig.from_pretrained(str(path))
        tensors = load_peft_weights(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - a broken folder: one line naming it
        raise AdapterError(f"adapter {path.name} cannot be read: {str(exc).splitlines()[0]}") from exc
    _refuse_unsupported(config, path.name)
    halves: dict[tuple[int, str], dict[str, Any]] = {}
    unknown = []
    for key, tensor in tensors.items():
        if m := _KEY.search(key):
            layer, proj, half = int(m.group(1)), m.group(2), m.group(3)
            if proj not in PROJECTIONS or layer >= n_layers:
                unknown.append(key)
                continue
        elif m := _HEAD_KEY.search(key):
            layer, proj, half = -1, "lm_head", m.group(1)
        else:
            unknown.append(key)
            continue
        halves.setdefault((layer, proj), {})[half] = tensor
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else "")
        raise AdapterError(f"adapter {path.name} has tensors that match no layer of the model: {shown}")
    if not halves:
        raise AdapterError(f"adapter {path.name} holds no LoRA matrices: it would change nothing")
    lora = LoraWeights(path.name)
    for (layer, proj), pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"adapter {path.name}: layer {layer} {proj} has lora_{''.join(pair)} only")
        a, b = pair["A"], pair["B"]
        module_key = "lm_head" if layer < 0 else f"model.layers.{layer}.{proj}"
        lora.matrices[(layer, proj)] = (a, b, _scale(config, module_key, a.shape[0]))
    return lora


def lora_from_peft(model: Any) -> LoraWeights | None:
    """The active adapter's matrices of a PEFT-wrapped model (None when there is none, or it is merged)."""
    if not hasattr(model, "peft_config"):
        return None
    name = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapter[0]
    _refuse_unsupported(model.peft_config[name], name)
    lora = LoraWeights(name)
    for module_name, module in model.named_modules():
        if not hasattr(module, "lora_A") or name not in module.lora_A or getattr(module, "merged", False):
            continue
        if getattr(module, "disable_adapters", False):
            continue
        if m := re.search(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$", module_name):
            key = (int(m.group(1)), m.group(2))
        elif module_name.endswith("lm_head"):
            key = (-1, "lm_head")
        else:
            raise UnsupportedLora(f"{name}: LoRA on {module_name} is not supported by the decode loop")
        lora.matrices[key] = (module.lora_A[name].weight.data, module.lora_B[name].weight.data,
                              float(module.scaling[name]))
    return lora if lora.matrices else None
