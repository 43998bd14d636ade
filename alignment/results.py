"""What a trial returns and writes as `summary.json`: typed results with a strict round trip.

`run_trial` returns a `TrialResult`; an untrained control (`alignment.untrained`: the random
rotation of a learned width, the full swap) returns an `UntrainedResult`. Each is a frozen
dataclass whose fields are the keys of the summary.json it writes (`to_dict()`, in field
order); `from_dict` reads one back with the same strict rules as every config
(`alignment.config_io.from_dict`: an unknown key, a missing one or a value of the wrong type is
a `ConfigError` naming it). The sweep's files (results.csv, report.json) keep these keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from alignment.config_io import ConfigError, from_dict, to_dict

R = TypeVar("R", bound="_Summary")


class _Summary:
    """to_dict / from_dict / read for a result dataclass; `OPTIONAL` fields stay out of the file while None."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data: the keys of summary.json."""
        return {k: v for k, v in to_dict(self).items() if not (k in self.OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """The result `data` holds; strict about keys and types (ConfigError names the key)."""
        return from_dict(cls, data)

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """The result in a summary.json; a file that is not one is a ConfigError naming the file."""
        data = _load(path)
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(f"{str(path)!r} is not a {cls.__name__}: {error}") from None


def _load(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{str(path)!r} must be a summary.json align-search wrote, got {error}") from None


@dataclass(frozen=True)
class _Site(_Summary):
    """The fields every summary opens with: the hypothesis, and where in the model it was tested."""

    hypothesis: str
    task: str
    causal_model: str
    variables: tuple[str, ...]
    layer: int | None
    site: str


@dataclass(frozen=True)
class TrialResult(_Site):
    """One trained hypothesis: prealign accuracy, dev IIA, test IIA at the best dev state, and its context.

    best_dev_iia, best_step: the best dev IIA and the step of the state kept (`intervention/`).
    test_iia (answer tokens) and test_iia_full_vocab (argmax over the vocabulary) at that state,
    with the bootstrap 95% interval test_iia_ci_low/high over n_test pairs and the per-pair
    correctness test_correct ("0"/"1" per pair, `alignment.intervals`).
    floor_no_op, floor_copy_source: the test pairs' floors (`causal_models.pairs.floors`);
    test_unchanged_share is floor_no_op under its older name.
    boundary_widths: hard dimensions per variable, of hidden_size.
    model: `alignment.persistence.model_identity`. cached: whether the layers below the site were cached.
    workers, parameter_share_per_worker: a sharded trial's (`cluster.run_sharded_trial`); absent otherwise.
    """

    OPTIONAL: ClassVar[tuple[str, ...]] = ("workers", "parameter_share_per_worker")

    component: str
    position: str
    position_label: str
    source_position: str
    intervention: str
    seed: int
    prealign_accuracy: float
    prealign_accuracy_full_vocab: float
    best_dev_iia: float
    best_step: int
    steps: int
    test_iia: float
    test_iia_full_vocab: float
    n_test: int
    test_iia_ci_low: float
    test_iia_ci_high: float
    test_correct: str
    test_unchanged_share: float
    boundary_widths: dict[str, int]
    hidden_size: int
    floor_no_op: float
    floor_copy_source: float
    cached: bool
    model: dict[str, Any]
    seconds: float
    train_examples_per_second: float
    workers: int | None = None
    parameter_share_per_worker: float | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The scores a saved intervention carries (its intervention.json's "metrics")."""
        return {"prealign_accuracy": self.prealign_accuracy, "best_dev_iia": self.best_dev_iia,
                "test_iia": self.test_iia, "test_iia_full_vocab": self.test_iia_full_vocab}


@dataclass(frozen=True)
class UntrainedResult(_Site):
    """An untrained control evaluated on the test pairs: a random rotation of a learned width (over
    `draws` draws: test_iia is their mean, test_iia_sd their spread, test_iia_draws each) or the
    full swap (one draw). test_correct is the per-pair correctness of a single draw, else None."""

    position: str
    intervention: str
    seed: int
    trained: bool
    prealign_accuracy: float
    test_iia: float
    test_iia_sd: float
    test_iia_draws: tuple[float, ...]
    draws: int
    test_iia_full_vocab: float
    n_test: int
    test_iia_ci_low: float
    test_iia_ci_high: float
    test_correct: str | None
    boundary_widths: dict[str, int]
    hidden_size: int
    floor_no_op: float
    floor_copy_source: float
    seconds: float

    def __post_init__(self) -> None:
        if self.trained:
            raise ConfigError("an UntrainedResult must have trained false, got true")


def result_of(data: Mapping[str, Any]) -> TrialResult | UntrainedResult:
    """The result a summary.json's data holds: an untrained control's (it says "trained": false), else a
    trained trial's; strict as `from_dict`."""
    return UntrainedResult.from_dict(data) if data.get("trained") is False else TrialResult.from_dict(data)
