"""The sweep config: a TOML file validated into frozen dataclasses, with `--set a.b=value` overrides.

Every key is checked: an unknown key or a value of the wrong type is an error that names the
key and the expected type. The embedded default (`default_config()`) is the README's sweep:
the shipped price-tagging model, Left and Right Boundary against the Mid-point and Bracket
controls, every layer, the named positions around the amount and the response.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import tomllib

from alignment.config import DataConfig, InterventionConfig, TrainConfig
from alignment.config_io import ConfigError, from_dict, override, positive, to_dict


@dataclass(frozen=True)
class HypothesesConfig:
    """The grid: causal models x variable sets x layers x positions x interventions x seeds.

    variables: variable sets (each a list) aligned under every causal model; empty: each
        causal model's own default variables.
    layers: "all", a range "0-3", a list "0,2" or a TOML list of ints.
    positions: "all" (every named position of the template) or a list of names.
    seeds: one trial per seed per hypothesis (DAS results vary with the rotation's init).
    """

    causal_models: tuple[str, ...] = ("left_boundary", "right_boundary", "mid_point_distance", "bracket_identity")
    variables: tuple[tuple[str, ...], ...] = ()
    layers: str | tuple[int, ...] = "all"
    positions: str | tuple[str, ...] = ("amount_first_digit", "amount_last_digit", "amount_dollars",
                                        "amount_newline", "response_colon", "last")
    interventions: tuple[str, ...] = ("boundless",)
    seeds: tuple[int, ...] = (0,)
    shard: int = 1

    def __post_init__(self) -> None:
        if not self.causal_models:
            raise ConfigError("hypotheses.causal_models must name at least one causal model")
        if not self.seeds:
            raise ConfigError("hypotheses.seeds must list at least one seed")
        positive("hypotheses.shard", self.shard)


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping. Steps are counted in reports (one every train.eval_every optimizer steps).

    kind: "asha" stops weak trials at rungs; "fifo" runs every trial to the end.
    grace_period, reduction_factor: ASHA's (metric "iia", mode max).
    collapse_width / collapse_after: stop a trial whose learned boundary has at most
        `collapse_width` dimensions for some variable after `collapse_after` reports (the
        paper's sign that no alignment exists); -1 turns the rule off.
    """

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = 2
    reduction_factor: int = 2
    collapse_width: int = 0
    collapse_after: int = 3

    def __post_init__(self) -> None:
        positive("scheduler.grace_period", self.grace_period)
        if self.reduction_factor < 2:
            raise ConfigError(f"scheduler.reduction_factor must be >= 2, got {self.reduction_factor}")
        positive("scheduler.collapse_after", self.collapse_after)


@dataclass(frozen=True)
class ResourcesConfig:
    """What each trial asks Ray for, and how many run at once."""

    cpu: float = 1.0
    gpu: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)
    concurrency: int = 2
    max_failures: int = 1

    def __post_init__(self) -> None:
        positive("resources.cpu", self.cpu)
        positive("resources.gpu", self.gpu, allow_zero=True)
        positive("resources.concurrency", self.concurrency)
        positive("resources.max_failures", self.max_failures, allow_zero=True)
        for name, amount in self.custom.items():
            if not isinstance(amount, (int, float)) or amount <= 0:
                raise ConfigError(f"resources.custom.{name} must be a positive number, got {amount!r}")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: where runs go. No uri: a SQLite store inside the sweep folder."""

    uri: str | None = None
    experiment: str = "align-search"


@dataclass(frozen=True)
class ControlsConfig:
    """The validity controls run after the grid for the best hypotheses of each causal model.

    top_k: hypotheses per causal model that get controls (0 turns the phase off).
    kinds: random_rotation, random_model, full_swap.
    seeds: more seeds of each such hypothesis (its IIA is then a mean over seeds).
    margin: how far above every control an alignment must be to count as found.
    """

    top_k: int = 1
    kinds: tuple[str, ...] = ("random_rotation", "random_model", "full_swap")
    seeds: tuple[int, ...] = (1, 2)
    margin: float = 0.05

    def __post_init__(self) -> None:
        positive("controls.top_k", self.top_k, allow_zero=True)
        for kind in self.kinds:
            if kind not in ("random_rotation", "random_model", "full_swap"):
                raise ConfigError(f"controls.kinds must be among random_rotation, random_model, full_swap, "
                                  f"got {kind!r}")
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"controls.margin must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep, fully resolved into the sweep folder's `sweep.json`."""

    name: str = "price_tagging"
    model_path: str | None = None
    task: str = "price_tagging"
    hypotheses: HypothesesConfig = field(default_factory=HypothesesConfig)
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=64, max_steps=300, eval_every=50,
                                                                   lr=3e-3, boundary_lr=5e-2, threads=1))
    data: DataConfig = field(default_factory=lambda: DataConfig(n_train=2000, n_dev=200, n_test=400,
                                                                max_unchanged=0.5))
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray_address: str | None = None
    output_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty folder name, got {self.name!r}")


def default_config() -> SweepConfig:
    return SweepConfig()


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """The embedded default, or a TOML file, with `key.path=value` overrides applied in order."""
    config = default_config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"sweep config must be a TOML file, got {str(path)!r} (no such file)")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"sweep config {str(path)!r} is not valid TOML: {error}") from None
        config = from_dict(SweepConfig, _merge(to_dict(config), data))
    for assignment in overrides:
        config = override(config, assignment)
    return config


def _merge(defaults: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` over `defaults`, table by table, so a file may set only some keys of a table."""
    merged = dict(defaults)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict) and key != "custom":
            merged[key] = _merge(defaults[key], value)
        else:
            merged[key] = value
    return merged


def with_flags(config: SweepConfig, **flags: Any) -> SweepConfig:
    """Apply the CLI's shortcut flags (scheduler, address, tracking uri, output) over the config.

    Relative model and task-file paths become absolute here, against the CLI's working folder:
    Ray Tune runs each trial with its trial folder as the working folder.
    """
    config = _absolute_paths(config)
    if flags.get("scheduler"):
        config = replace(config, scheduler=replace(config.scheduler, kind=flags["scheduler"]))
    if flags.get("address"):
        config = replace(config, ray_address=flags["address"])
    if flags.get("tracking_uri"):
        config = replace(config, tracking=replace(config.tracking, uri=flags["tracking_uri"]))
    if flags.get("out"):
        config = replace(config, output_dir=flags["out"])
    return from_dict(SweepConfig, to_dict(config))


def _absolute_paths(config: SweepConfig) -> SweepConfig:
    model_path, task = config.model_path, config.task
    if model_path and not Path(model_path).is_absolute():
        model_path = str(Path(model_path).resolve())
    location, _, attribute = task.rpartition(":")
    if location.endswith(".py") and not Path(location).is_absolute():
        task = f"{Path(location).resolve()}:{attribute}"
    return replace(config, model_path=model_path, task=task)


def to_toml(config: SweepConfig) -> str:
    """The resolved config as TOML (for --print-config)."""
    lines: list[str] = []
    _toml_table(to_dict(config), [], lines)
    return "\n".join(lines).strip() + "\n"


def _toml_table(data: dict[str, Any], prefix: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"\n[{'.'.join(prefix)}]")
    for key, value in scalars.items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        _toml_table(value, [*prefix, key], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as TOML")
