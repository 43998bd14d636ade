"""The frozen model partitioned with DeepSpeed ZeRO stage 3, on each worker of a sharded trial.

ZeRO-3 cuts every parameter of the frozen model into one slice per worker. A layer's full
weights exist only while it runs: forward (and backward) hooks that DeepSpeed puts on every
module all-gather the slices before the module and free them after it, so each worker holds
1/workers of the model plus one layer at a time.

- Loading: `transformers.integrations.HfDeepSpeedConfig` (kept alive for the model's life)
  makes `from_pretrained` build the model inside `deepspeed.zero.Init`, so weights are
  partitioned as they load and no worker ever holds the whole model (it needs `accelerate`).
- `deepspeed.initialize(model=..., config=...)` without an optimizer sets up only the
  gather/release hooks (DeepSpeed's "ZeRO-Offload" inference path): the model is frozen, and
  the intervention, a few MB, is not given to DeepSpeed at all. It stays an ordinary module,
  replicated on every worker, and its gradients are summed with one all-reduce per step
  (cluster.parallel). That keeps its rotation materialised once per step (alignment/rotations.py)
  and its state dict readable on every worker without GatheredParameters.
- The site hooks work unchanged on the sharded model. We checked (gloo, 2 workers, GPT-2 and
  Llama) that the fast path of `alignment.frozen.FrozenSite`, which swaps the layers below the
  site for stand-ins (`hooks.skip_layers`) and ends the prefix pass with an exception, gives
  the unsharded logits exactly and gradients within 4e-7: the stand-ins hold no parameters,
  the root module's pre-forward hook resets DeepSpeed's trace every pass, and no ancestor of a
  decoder layer holds parameters of its own that a cut-short pass would leave gathered. So
  the hidden-state cache stays on: each step gathers only the layers above the site.
- On CPU (gloo) DeepSpeed would JIT-compile its shared-memory all-reduce op (~2 minutes, and
  only used for inference tensor parallelism); `prepare_deepspeed` skips that build.
  DeepSpeed's `zero.Init(dtype=...)` picks bf16 on CPU whatever dtype is passed (an operator
  precedence slip in 0.19), so the dtype always comes from the config's `bf16.enabled`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from alignment.config import TrialConfig
from alignment.models import LoadedModel, load_model


def zero3_config(bf16: bool, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A DeepSpeed config for a frozen ZeRO-3 model; `options` override keys of `zero_optimization`.

    `stage3_param_persistence_threshold`: parameters with fewer elements than this stay whole
    on every worker (norms, biases); DeepSpeed's default is 1e5. Tests set 0 to shard everything.
    """
    zero = {"stage": 3, **(options or {})}
    if zero["stage"] != 3:
        raise ValueError(f"zero_optimization.stage must be 3 for a sharded trial, got {zero['stage']}")
    return {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
            "zero_optimization": zero, "bf16": {"enabled": bf16}, "fp16": {"enabled": False},
            "wall_clock_breakdown": False}


def prepare_deepspeed(use_gpu: bool) -> None:
    """Select DeepSpeed's accelerator and join the process group Ray Train (or torchrun) made."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.comm.torch  # noqa: F401  (the module object is shadowed by a class of the same name)
    from deepspeed.accelerator import get_accelerator

    device = get_accelerator().device_name()
    if (device == "cpu") == use_gpu:
        raise RuntimeError(f"DeepSpeed's accelerator is {device!r} but use_gpu={use_gpu}: set DS_ACCELERATOR "
                           f"before DeepSpeed is first imported in this process")
    if not use_gpu:
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # type: ignore[attr-defined]
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")


@dataclass
class ShardedModel:
    """A frozen model partitioned by ZeRO-3, with what must stay alive as long as it is used."""

    loaded: LoadedModel
    engine: Any
    hf_config: Any

    def local_share(self) -> float:
        """The share of the model's parameter elements this worker holds (about 1/workers)."""
        params = list(self.loaded.model.parameters())
        held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
        return held / max(full, 1)


def load_sharded_model(config: TrialConfig, ds_config: dict[str, Any]) -> ShardedModel:
    """Load `config.model_path` cut across the workers (call on every worker, after prepare_deepspeed)."""
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    if bool(ds_config["bf16"]["enabled"]) != config.train.bf16:
        raise ValueError(f"the DeepSpeed config's bf16.enabled must equal train.bf16 ({config.train.bf16})")
    hf_config = HfDeepSpeedConfig(ds_config)  # while alive, from_pretrained loads under zero.Init
    loaded = load_model(config.model_path, config.train.bf16, config.trust_remote_code)
    engine, *_ = deepspeed.initialize(model=loaded.model, config=ds_config)
    return ShardedModel(loaded, engine, hf_config)
