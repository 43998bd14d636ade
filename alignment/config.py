"""What one trial trains: the hypothesis, the intervention, the data and the optimisation.

Defaults follow the 2023 code where it was right (Adam, rotation lr 1e-3, boundary lr 1e-2,
10% warm-up then linear decay, temperature 50 -> 0.1) and fix where it was not (every batch
counts under gradient accumulation, the schedule is fp32, evaluation uses the hard mask,
the width penalty sees the clamped width).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from alignment.config_io import ConfigError, positive
from causal_models.hypotheses import COMPONENTS, INTERVENTIONS, Component, InterventionKind, check_position

# torch device names a trial may ask for: cpu, cuda, cuda:1, mps, xpu:0.
DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


@dataclass(frozen=True)
class InterventionConfig:
    """The intervention of a hypothesis.

    kind: boundless | das | low_rank | full_swap | random_rotation | neuron_mask.
    subspace_dim: das: coordinates per variable; low_rank: columns in all.
    init_width: initial boundary, as a share of each variable's block.
    width_penalty: weight of the summed boundary widths (the 2023 code: 1.0).
    axis_penalty: weight of a penalty that prefers sparse, axis-aligned rotations (0 = off).
    """

    kind: InterventionKind = "boundless"
    rotation_map: Literal["cayley", "matrix_exp"] = "cayley"
    subspace_dim: int | None = None
    init_width: float = 0.5
    width_penalty: float = 1.0
    axis_penalty: float = 0.0
    temperature_start: float = 50.0
    temperature_end: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in INTERVENTIONS:
            raise ConfigError(f"intervention.kind must be one of {list(INTERVENTIONS)}, got {self.kind!r}")
        positive("intervention.subspace_dim", self.subspace_dim)
        positive("intervention.init_width", self.init_width)
        positive("intervention.width_penalty", self.width_penalty, allow_zero=True)
        positive("intervention.axis_penalty", self.axis_penalty, allow_zero=True)
        positive("intervention.temperature_start", self.temperature_start)
        positive("intervention.temperature_end", self.temperature_end)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one trial. Steps are optimizer steps (each `gradient_accumulation` batches).

    device: where `align` puts the model ("cuda", "cuda:1", "cpu"; None: where it loads, the CPU).
        A sweep places trials with `resources.gpu` instead.
    """

    batch_size: int = 32
    eval_batch_size: int = 256
    gradient_accumulation: int = 1
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-3
    boundary_lr: float = 1e-2
    warmup: float = 0.1
    seed: int = 42
    log_every: int = 10
    eval_every: int = 50
    bf16: bool = False
    cache: Literal["auto", "off"] = "auto"
    cache_budget_mb: float = 2048.0
    threads: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.device is not None and not DEVICE.match(self.device):
            raise ConfigError(f"train.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation", "epochs", "log_every",
                     "eval_every", "max_steps", "threads"):
            positive(f"train.{name}", getattr(self, name))
        positive("train.lr", self.lr)
        positive("train.boundary_lr", self.boundary_lr)
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"train.warmup must be in [0, 1), got {self.warmup}")


@dataclass(frozen=True)
class DataConfig:
    """Counterfactual pairs: sizes, seed, and the sampler's balance settings."""

    n_train: int = 2000
    n_dev: int = 200
    n_test: int = 500
    seed: int = 0
    balance_labels: bool = True
    max_unchanged: float | None = None
    per_pair: Literal["one", "all"] = "one"
    template: str | None = None

    def __post_init__(self) -> None:
        for name in ("n_train", "n_dev", "n_test"):
            positive(f"data.{name}", getattr(self, name))
        if self.max_unchanged is not None and not 0.0 <= self.max_unchanged <= 1.0:
            raise ConfigError(f"data.max_unchanged must be in [0, 1], got {self.max_unchanged}")


@dataclass(frozen=True)
class TrialConfig:
    """One hypothesis on one model, fully resolved.

    model_path: a Hugging Face model folder or a .gguf file.
    site: a module path; overrides `layer` and `component`.
    layer, component: the output of decoder layer `layer` ("block", the residual stream after
        it) or of its "attention" or "mlp" sub-layer.
    position / source_position: a template position name, an integer token index, or a group
        of them joined by "+" ("amount_first_digit+last": one intervention at each of its tokens).
    position_tokens: the token each member of `position` falls on in a sample prompt (labels
        the hypothesis id; a sweep fills it in).
    """

    model_path: str
    task: str = "price_tagging"
    causal_model: str | None = None
    variables: tuple[str, ...] = ()
    layer: int | None = None
    site: str | None = None
    position: str = "last"
    source_position: str | None = None
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trust_remote_code: bool = False
    component: Component = "block"
    position_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.layer is None and self.site is None:
            raise ConfigError("a trial needs layer (a decoder layer index) or site (a module path)")
        if self.layer is not None and self.layer < 0:
            raise ConfigError(f"layer must be >= 0, got {self.layer}")
        if self.component not in COMPONENTS:
            raise ConfigError(f"component must be one of {list(COMPONENTS)}, got {self.component!r}")
        if self.site is not None and self.component != "block":
            raise ConfigError(f"component must be 'block' when site names the module itself, got "
                              f"{self.component!r} with site {self.site!r}")
        try:
            check_position(self.position, self.source_position)
        except ValueError as error:
            raise ConfigError(str(error)) from None
