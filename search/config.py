"""The sweep config: a TOML file validated into frozen dataclasses, with `--set a.b=value` overrides.

Every key is checked: an unknown key or a value of the wrong type is an error that names the
key and the expected type. The embedded default (`default_config()`) is the README's sweep:
the shipped price-tagging model, Left and Right Boundary against the Mid-point and Bracket
controls, every layer, the named positions around the amount and the response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import tomllib

from alignment.config import DataConfig, InterventionConfig, TrainConfig
from alignment.config_io import ConfigError, from_dict, override, positive, to_dict
from alignment.hub import hub_id
from causal_models.hypotheses import Component, grid_positions

# The validity controls a found alignment is checked against (search/controls.py), defined once.
ControlKind = Literal["random_rotation", "random_model", "full_swap"]
CONTROL_KINDS: tuple[ControlKind, ...] = get_args(ControlKind)
# An MLflow tracking URI: a server, a database, or Databricks (not a bare path: the file store is retired).
TRACKING_URI = re.compile(r"^(https?://[^\s/]+\S*|sqlite:///\S+|(postgresql|mysql|mssql)(\+\w+)?://\S+|databricks(://\S*)?)$")


@dataclass(frozen=True)
class HypothesesConfig:
    """The grid: causal models x variable sets x layers x components x positions x interventions x seeds.

    variables: variable sets (each a list) aligned under every causal model; empty: each
        causal model's own default variables.
    layers: "all", a range "0-3", a list "0,2" or a TOML list of ints.
    positions: "all" (every named position of the template), "every" (every token, as offsets
        from the end over the shortest prompt: -1 is the last token), or a list mixing names,
        integer offsets, "all", "every" and groups: a list of positions such as
        ["amount_first_digit", "last"] is one hypothesis whose intervention acts at all its tokens.
    components: "block" (the layer's output, the residual stream), "attention", "mlp" (what
        that sub-layer adds to the residual stream).
    seeds: one trial per seed per hypothesis (DAS results vary with the rotation's init).
    """

    causal_models: tuple[str, ...] = ("left_boundary", "right_boundary", "mid_point_distance", "bracket_identity")
    variables: tuple[tuple[str, ...], ...] = ()
    layers: str | tuple[int, ...] = "all"
    positions: str | tuple[str | int | tuple[str | int, ...], ...] = (
        "amount_first_digit", "amount_last_digit", "amount_dollars", "amount_newline", "response_colon", "last")
    components: tuple[Component, ...] = ("block",)
    interventions: tuple[str, ...] = ("boundless",)
    seeds: tuple[int, ...] = (0,)
    shard: int = 1

    def __post_init__(self) -> None:
        if not self.causal_models:
            raise ConfigError("hypotheses.causal_models must name at least one causal model")
        if not self.seeds:
            raise ConfigError("hypotheses.seeds must list at least one seed")
        if not self.components or len(set(self.components)) != len(self.components):
            raise ConfigError(f"hypotheses.components must list each of block, attention, mlp at most once, "
                              f"got {list(self.components)}")
        if not self.positions:
            raise ConfigError('hypotheses.positions must be "all", "every" or a non-empty list')
        positive("hypotheses.shard", self.shard)
        try:
            grid_positions(self.positions, (), 1)
        except ValueError as error:
            raise ConfigError(f"hypotheses.positions: {error}") from None


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping of the grid's trials, counted in *hard reports*.

    Hard-mask IIA judges the mask training produced only once the boundary temperature is
    low enough that the soft mask is within ~0.1 of the hard one (`alignment.train.
    mask_hard_step`: with the 2023 schedule 50 -> 0.1 over 300 steps, step 299). A hard report
    is an evaluation (one every train.eval_every steps, plus the last) after that step; for
    fixed masks (das, full_swap) every evaluation is one. Before its first hard report a trial
    is never stopped, so the values below count hard reports, not reports: a schedule that
    anneals late leaves early stopping little or nothing to do, which is the point. The last
    evaluation, the task's control causal models and the controls phase are never stopped.

    kind: "asha" stops weak trials at rungs; "fifo" runs every trial to the end (the collapse
        rule still applies).
    grace_period: ASHA's first rung, in hard reports (1: the first hard report); the later
        rungs come at grace_period * reduction_factor^k hard reports.
    reduction_factor: ASHA's (metric "iia", mode max): the share 1/reduction_factor survives a rung.
    collapse_width / collapse_after: stop a trial whose learned boundary has at most
        `collapse_width` dimensions for some variable at its `collapse_after`-th hard report or
        later (a hard mask of width 0 swaps nothing and does not grow back); -1 turns it off.
    """

    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    collapse_width: int = 0
    collapse_after: int = 1

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
    """MLflow: where runs go. No uri: a SQLite store inside the sweep folder.

    uri: a tracking server (http://host:5000, https://...), a database (sqlite:////abs/path.db,
        postgresql://...) or databricks. MLflow's plain-folder store is in maintenance mode and
        is refused.
    """

    uri: str | None = None
    experiment: str = "align-search"

    def __post_init__(self) -> None:
        if self.uri is not None and not TRACKING_URI.match(self.uri):
            raise ConfigError(f"tracking.uri must be an MLflow server (http://HOST:PORT), a database "
                              f"(sqlite:///PATH.db, postgresql://...) or databricks, got {self.uri!r}. "
                              f"Drop it to log into the sweep folder")
        if not self.experiment.strip():
            raise ConfigError("tracking.experiment must be a non-empty name, got ''")


@dataclass(frozen=True)
class ControlsConfig:
    """The validity controls run after the grid for the best hypotheses (by dev IIA) of each causal model.

    top_k: hypotheses per causal model that get controls (0 turns the phase off, and the
        verdict can then only say "unchecked").
    kinds: random_rotation (untrained, at the hypothesis's learned hard width, over
        `random_draws` draws: what a subspace claim must beat), random_model (the hypothesis
        trained on a randomly initialised copy of the model: a sanity check it must beat) and
        full_swap (the whole vector swapped, untrained: a description of what the site
        carries, not a rival). The verdict needs random_rotation and random_model.
    seeds: more seeds of each such hypothesis (its IIA is then a mean over seeds).
    margin: how far above each floor and control an alignment must be to count as found.
    random_draws: random rotations the random_rotation control is evaluated over (mean, sd).
    """

    top_k: int = 1
    kinds: tuple[ControlKind, ...] = CONTROL_KINDS
    seeds: tuple[int, ...] = (1, 2)
    margin: float = 0.05
    random_draws: int = 10

    def __post_init__(self) -> None:
        positive("controls.top_k", self.top_k, allow_zero=True)
        for kind in self.kinds:
            if kind not in CONTROL_KINDS:
                raise ConfigError(f"controls.kinds must be among {', '.join(CONTROL_KINDS)}, got {kind!r}")
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"controls.margin must be in [0, 1), got {self.margin}")
        if self.random_draws < 2:
            raise ConfigError(f"controls.random_draws must be >= 2 (a mean and a spread), got {self.random_draws}")


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
        if self.train.device is not None:
            raise ConfigError(f"train.device must be unset in a sweep, got {self.train.device!r}: a sweep puts each "
                              f"trial on a GPU with resources.gpu=1")


def default_config() -> SweepConfig:
    return SweepConfig()


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """The embedded default, or a TOML file, with `key.path=value` overrides applied in order."""
    config = default_config()
    if path is not None:
        config = from_dict(SweepConfig, _merge(to_dict(config), read_toml(Path(path))))
    return override(config, *overrides)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; ConfigError (one line, naming the file) for anything that is not one."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise ConfigError(f"sweep config must be a TOML file, got {str(path)!r} ({what})")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"sweep config {str(path)!r} must be UTF-8 text (TOML), got the byte "
                          f"{error.object[error.start]:#04x} at offset {error.start}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"sweep config {str(path)!r} is not valid TOML: {error}") from None


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
    """Local model and task-file paths made absolute; a Hugging Face Hub id stays as it is."""
    model_path, task = config.model_path, config.task
    if model_path and hub_id(model_path) is None and not Path(model_path).is_absolute():
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
