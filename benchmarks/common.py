"""What every benchmark here shares: the models, the counterfactual batches, the floor, memory.

- Models are built in memory from a config with random weights (nothing is downloaded), or
  loaded from a task-model folder (`alignment/task_models/price_tagging`) when it exists.
- Batches are price-tagging pairs from `causal_models`, tokenized by `alignment.batches` into a
  `PromptTable`; both libraries read the same rows of it at every step.
- The floor is the least a trial step can cost with the model frozen: a forward and backward
  pass through the layers above the site only, from the site's cached hidden states, with
  logits at the answer position only, and no intervention.
- Peak memory of one step is read from the torch allocator: on CPU as the highest sum of live
  tensor bytes allocated during the step (torch.profiler with profile_memory=True), on CUDA
  from `torch.cuda.max_memory_allocated`; both relative to what was live before the step.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignment.batches import TrialData, build_trial_data
from alignment.frozen import FrozenSite
from alignment.hooks import skip_layers
from causal_models import get_task, make_splits, to_dataset

TASK = get_task("price_tagging")
VARIABLE = "left_boundary"
TASK_MODEL_DIR = Path(__file__).resolve().parents[1] / "alignment" / "task_models" / "price_tagging"

# family, layers, hidden, heads, vocabulary (+ intermediate for llama)
SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-small": {"family": "gpt2", "layers": 12, "hidden": 768, "heads": 12, "vocab": 50257},
    "gpt2-tiny": {"family": "gpt2", "layers": 3, "hidden": 64, "heads": 4, "vocab": 50257},
    "llama-7b": {"family": "llama", "layers": 32, "hidden": 4096, "heads": 32, "vocab": 32000,
                 "intermediate": 11008},
    "llama-tiny": {"family": "llama", "layers": 3, "hidden": 64, "heads": 4, "vocab": 32000,
                   "intermediate": 128},
}


def random_model(shape: str, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str = "cpu") -> nn.Module:
    """A causal LM of `shape` with random weights, frozen (eval mode, no gradients)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    spec = SHAPES[shape]
    torch.manual_seed(seed)
    model: nn.Module
    with torch.device(device):
        if spec["family"] == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(
                n_layer=spec["layers"], n_embd=spec["hidden"], n_head=spec["heads"], vocab_size=spec["vocab"],
                n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                bos_token_id=2, eos_token_id=2))
        else:
            model = LlamaForCausalLM(LlamaConfig(
                num_hidden_layers=spec["layers"], hidden_size=spec["hidden"],
                num_attention_heads=spec["heads"], num_key_value_heads=spec["heads"],
                intermediate_size=spec["intermediate"], vocab_size=spec["vocab"],
                max_position_embeddings=2048, use_cache=False, bos_token_id=1, eos_token_id=2,
                pad_token_id=0))
    return model.to(dtype).eval().requires_grad_(False)


def task_model_available(path: Path = TASK_MODEL_DIR) -> bool:
    return (path / "config.json").is_file()


@dataclass
class Pairs:
    """The benchmark's counterfactual pairs, tokenized, and the template they were written with."""

    data: TrialData
    template: str
    position: str


def price_tagging_pairs(tokenizer: Any, template: str, n_pairs: int, position: str, seed: int = 0) -> Pairs:
    """`n_pairs` Left Boundary pairs (balanced labels) in one PromptTable."""
    pair_sets = make_splits(TASK, VARIABLE, (VARIABLE,), {"train": n_pairs}, seed)
    rows = list(to_dataset(pair_sets["train"], TASK.template(template)))
    answers = sorted(set(TASK.template(template).answers.values()))
    return Pairs(build_trial_data(tokenizer, {"train": rows}, [VARIABLE], answers), template, position)


def floor_step(frozen: FrozenSite, rows: Tensor, labels: Tensor) -> float:
    """Forward + backward of the layers above the site only, logits at the answer position only.

    Starts from the site's cached hidden states (a leaf that needs a gradient, as the
    intervention's output does) and runs no intervention: the least a trial step can cost.
    Uses the same layer skipping as align-search, so what a trial step costs beyond this is
    the intervention itself and the code around it.
    """
    if frozen.decoder is None:
        raise ValueError(f"the floor needs a decoder-layer site, got {frozen.site!r}")
    layer_list, index = frozen.decoder
    hidden = frozen.hidden(rows).detach().requires_grad_(True)            # (B, T, hidden)
    with skip_layers(frozen.model, layer_list, index, hidden, frozen.returns_tuple):
        logits = frozen._forward(frozen._inputs(rows))                     # (B, vocab)
    loss = F.cross_entropy(logits, labels.to(logits.device))
    loss.backward()
    return float(loss.detach())


def peak_step_bytes(step: Callable[[], Any], device: torch.device) -> int:
    """Highest bytes of live tensors allocated by `step` above what was live before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step()
    events = sorted((event.start_ns(), event.nbytes()) for event in profiler.profiler.kineto_results.events()
                    if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def timed(step: Callable[[], float]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, what `step` returned), synchronizing CUDA around it.

    CPU seconds are what a step would take alone with one thread even when other jobs share the
    cores (a descheduled thread accrues none); with more threads they also count OpenMP spinning.
    """
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    value = step()
    synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu, value


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare numbers: CPU, cores, threads, versions."""
    import transformers

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    facts: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        facts["pyvene"] = metadata.version("pyvene")
    except metadata.PackageNotFoundError:
        facts["pyvene"] = None
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts
