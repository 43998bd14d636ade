"""What one trial trains: the hypothesis, the intervention, the data and the optimisation.

The Boundless DAS defaults are calibrated to behave the same at every hidden size (64 to 4096;
docs/calibration.md has the measurements): the temperature starts as a share of each variable's
block and ends in coordinates by 60 % of the steps, the boundary is learned as the log of its
share, the learning rate stays at its peak after warm-up. The 2023 code's schedule, tuned for
2048-wide blocks, is `PAPER_2023`. Fixed from the 2023 code whatever the schedule: every batch
counts under gradient accumulation, the schedule is fp32, evaluation uses the hard mask, the
width penalty sees the clamped width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from alignment.config_io import ConfigError, positive
from causal_models.hypotheses import COMPONENTS, INTERVENTIONS, Component, InterventionKind, check_position

# torch device names a trial may ask for: cpu, cuda, cuda:1, mps, xpu:0.
DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


def share(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ConfigError unless `value` is a share of the steps: in (0, 1] (or [0, 1] with `allow_zero`)."""
    if not (0.0 <= value <= 1.0) or (value == 0.0 and not allow_zero):
        raise ConfigError(f"{name} must be in {'[0' if allow_zero else '(0'}, 1], got {value!r}")


@dataclass(frozen=True)
class InterventionConfig:
    """The intervention of a hypothesis.

    kind: boundless | das | low_rank | full_swap | random_rotation | neuron_mask.
    subspace_dim: das: coordinates per variable; low_rank: columns in all.
    init_width: initial boundary, as a share of each variable's block.
    soft_start: the mask's start is a sigmoid too (the 2023 code), not the edge of the block.
    log_boundary: learn each boundary as the log of its share of the block, so Adam moves it by
        a share of its own width per step, whatever the block (False: the share, the 2023 code).
    width_penalty: weight of the summed boundary widths, each a share of its block (2023: 1.0).
    penalty_warmup: share of the steps over which the width penalty rises linearly from 0 to
        `width_penalty` (2023: 0, full from the first step).
    axis_penalty: weight of a penalty that prefers sparse, axis-aligned rotations (0 = off).
    temperature_start: the mask's first temperature, in block widths (`temperature_unit`
        "block": T = temperature_start x block coordinates) or in coordinates ("coordinate";
        2023: 50).
    temperature_end: the last temperature, in coordinates (2023: 0.1).
    temperature_curve: how T falls: "geometric" (the same number of steps per halving) or
        "linear" (2023).
    anneal_share: share of the steps over which T falls; it stays at temperature_end after (2023: 1.0).

    Near-hard: the soft mask is within 0.1 of the hard one at every coordinate once T <= 0.23
    coordinates (`alignment.train.NEAR_HARD_TEMPERATURE`). By default (T from 0.5 block widths
    to 0.1 coordinates over 60 % of the steps) that holds at every block size from 60 % of the
    steps on (`alignment.train.mask_hard_step`: step 179 of 300); under the 2023 schedule only
    at the last step (299 of 300).
    """

    kind: InterventionKind = "boundless"
    rotation_map: Literal["cayley", "matrix_exp"] = "cayley"
    subspace_dim: int | None = None
    init_width: float = 0.5
    soft_start: bool = False
    log_boundary: bool = True
    width_penalty: float = 3.0
    penalty_warmup: float = 0.0
    axis_penalty: float = 0.0
    temperature_start: float = 0.5
    temperature_unit: Literal["block", "coordinate"] = "block"
    temperature_end: float = 0.1
    temperature_curve: Literal["geometric", "linear"] = "geometric"
    anneal_share: float = 0.6

    def __post_init__(self) -> None:
        if self.kind not in INTERVENTIONS:
            raise ConfigError(f"intervention.kind must be one of {list(INTERVENTIONS)}, got {self.kind!r}")
        positive("intervention.subspace_dim", self.subspace_dim)
        positive("intervention.init_width", self.init_width)
        positive("intervention.width_penalty", self.width_penalty, allow_zero=True)
        positive("intervention.axis_penalty", self.axis_penalty, allow_zero=True)
        positive("intervention.temperature_start", self.temperature_start)
        positive("intervention.temperature_end", self.temperature_end)
        for name in ("penalty_warmup", "anneal_share"):
            share(f"intervention.{name}", getattr(self, name), allow_zero=name == "penalty_warmup")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one trial. Steps are optimizer steps (each `gradient_accumulation` batches).

    device: where `align` puts the model ("cuda", "cuda:1", "cpu"; None: where it loads, the CPU).
        A sweep places trials with `resources.gpu` instead.
    lr, boundary_lr: Adam's learning rates of the rotation and of the boundaries (2023: 1e-3, 1e-2).
    boundary_beta2: Adam's second-moment decay for the boundaries (2023: Adam's default 0.999).
        A short memory (0.9) lets a log-boundary's step follow its gradient as the width, and so
        the penalty's gradient, shrinks by orders of magnitude; with 0.999, one large
        cross-entropy gradient at the mask's edge stalls the boundary for hundreds of steps.
    warmup, lr_floor: the learning rate rises linearly over the first `warmup` share of the
        steps, then falls linearly to `lr_floor` times its peak at the last step (1: constant,
        the default, so the intervention keeps training under the near-hard mask; 0: to zero,
        2023).
    cache, cache_budget_mb: "auto" keeps the hidden states below the site for every prompt of the
        trial when they fit the budget (float32); "off" recomputes them per batch.
    suffix_only: run the layers above the site only on the tokens from the batch's earliest
        edited one on (attention is causal: the edit changes nothing before it), attending to
        the earlier tokens' keys and values, kept per prompt within `kv_budget_mb` (in the
        model's dtype, on its device) or recomputed without gradient per batch past it. The same
        logits and gradients as running every token, and faster the later the position (at the
        last token, GPT-2-small layer 6: benchmarks/README.md). Where it cannot apply (an
        attention kernel other than sdpa or eager, a sliding window shorter than the prompts, a
        site outside the decoder layers) every token runs; false always runs every token.
    packed: on the CPU, the frozen model's float32 linear layers compute through oneDNN from
        weights packed once at load (alignment/packed.py): the same products up to float32
        rounding, about twice as fast at a step's few rows; false: torch's default product.
    """

    batch_size: int = 32
    eval_batch_size: int = 256
    gradient_accumulation: int = 1
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-3
    boundary_lr: float = 5e-2
    boundary_beta2: float = 0.9
    warmup: float = 0.1
    lr_floor: float = 1.0
    seed: int = 42
    log_every: int = 10
    eval_every: int = 50
    bf16: bool = False
    cache: Literal["auto", "off"] = "auto"
    cache_budget_mb: float = 2048.0
    suffix_only: bool = True
    kv_budget_mb: float = 2048.0
    packed: bool = True
    threads: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.device is not None and not DEVICE.match(self.device):
            raise ConfigError(f"train.device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation", "epochs", "log_every",
                     "eval_every", "max_steps", "threads"):
            positive(f"train.{name}", getattr(self, name))
        positive("train.lr", self.lr)
        if self.kv_budget_mb < 0:
            raise ConfigError(f"train.kv_budget_mb must be >= 0 (0 keeps no keys and values), got {self.kv_budget_mb}")
        positive("train.boundary_lr", self.boundary_lr)
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"train.warmup must be in [0, 1), got {self.warmup}")
        share("train.lr_floor", self.lr_floor, allow_zero=True)
        if not 0.0 <= self.boundary_beta2 < 1.0:
            raise ConfigError(f"train.boundary_beta2 must be in [0, 1), got {self.boundary_beta2}")


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


@dataclass(frozen=True)
class Schedule:
    """The intervention and train settings of a named schedule (the keys `--set` would change)."""

    intervention: InterventionConfig
    train: TrainConfig


# The 2023 code's schedule (Wu et al. 2023, run_alignment.py; the research notes' align-transformers.md 1.4-1.5):
# temperature 50 -> 0.1 coordinates, linear over every step; the boundary learned as a share of its block, its
# mask soft at both ends, width penalty 1.0 from the first step; Adam (rotation 1e-3, boundary 1e-2, default
# betas), 10 % warm-up then linear decay to 0. Init width and batch size are the caller's (2023: 1.0 of a half
# block, batch 8 x 8 accumulation).
PAPER_2023 = Schedule(
    InterventionConfig(temperature_start=50.0, temperature_unit="coordinate", temperature_end=0.1,
                       temperature_curve="linear", anneal_share=1.0, soft_start=True, log_boundary=False,
                       width_penalty=1.0, penalty_warmup=0.0),
    TrainConfig(lr=1e-3, boundary_lr=1e-2, boundary_beta2=0.999, warmup=0.1, lr_floor=0.0))
