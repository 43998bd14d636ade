"""The sweep folder: everything a sweep needs and makes, in one place on (shared) storage.

    SWEEP/
      sweep.json          the fully resolved config
      trials.json         every trial: hypothesis, seed, phase (stable keys, in order)
      state.json          the MLflow experiment and parent run, phases done
      data/<name>/        counterfactual pairs per causal model and variables (HF datasets), built once
      data/prompts.json   every prompt of every trial: one shared prompt table, one cache per layer
      cache/              hidden states per layer (memory-mapped .npy, shared by trials; a layer's is built
                          from the highest layer below it already cached)
      trials/<key>/       each trial's config.json, metrics.jsonl, intervention/, summary.json, status.json,
                          checkpoint/, attempts.jsonl (one line per attempt: pid, node, step it resumed from),
                          best.json (test IIA and widths at the best dev state so far, written at the reports
                          where the sweep may stop the trial: a stopped trial's score),
                          timings.json (its last attempt's seconds by phase: model, data, site, step, dev_eval, ...)
      ray/                Ray Tune's experiment state (for --resume)
      mlflow.db           the default MLflow store; mlartifacts/ its artifacts
      results.csv, heatmap_<causal model>.png, report.md
      timings.json        the driver's seconds by phase: prepare, caches, ray_start, grid, controls, report, ...

Every path is found from the folder itself, never stored: a moved or copied sweep folder
opens (`ui`), reports and resumes where it is (state.json names the default store
`mlflow.db`, relative to the folder; search/tracking.py moves the store's artifact paths
along). Trials on other machines read the same folder, so on a multi-node cluster it must be
on shared storage (NFS, EFS, a mounted bucket); see docs/scaling.md.

A torn trial file (summary.json, status.json), or a summary.json that is not a trial's result
(`alignment.results`, read strictly), is skipped with a warning that names it, so
one bad trial never hides the others; a torn sweep-level file (sweep.json, trials.json,
state.json) stops the command with one line saying which file and how to recover.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from alignment.config_io import ConfigError, from_dict, to_dict
from alignment.files import atomic_write_text
from alignment.results import TrialResult, UntrainedResult, result_of
from causal_models import Hypothesis
from causal_models.errors import UserError
from search.config import ControlKind, SweepConfig

log = logging.getLogger(__name__)
Phase = Literal["grid", "controls"]
Role = Literal["hypothesis"] | ControlKind
# How to recover from a torn sweep-level file (each one line, printed with the file's name).
RECOVER = {
    "sweep.json": "restore it from the artifact sweep.json of the sweep's MLflow parent run, or start a new sweep",
    "trials.json": "delete it and resume: `align-search sweep --resume` plans the same trials again from sweep.json "
                   "and keeps every finished one",
    "state.json": "delete it and resume: every result is kept, and the sweep gets a new MLflow parent run",
}


class SweepFileError(UserError, ValueError):
    """A sweep-level file that is torn or not what align-search wrote."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a sweep: a hypothesis, a seed, and its role.

    phase: "grid" (the hypotheses) or "controls" (the checks of the best ones, run after).
    role: "hypothesis" for the grid and its extra seeds, or the control it is
        ("random_rotation", "random_model", "full_swap") for a found alignment's validity checks.
    target: for a control, the key of the trial it checks.
    """

    hypothesis: Hypothesis
    seed: int
    phase: Phase = "grid"
    role: Role = "hypothesis"
    target: str | None = None

    @property
    def key(self) -> str:
        suffix = "" if self.role == "hypothesis" else f"~{self.role}"
        return f"{self.hypothesis.id}#s{self.seed}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hypothesis": asdict(self.hypothesis), "key": self.key}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TrialSpec:
        hypothesis = data["hypothesis"]
        return TrialSpec(Hypothesis(**{**hypothesis, "variables": tuple(hypothesis["variables"])}), data["seed"],
                         data.get("phase", "grid"), data.get("role", "hypothesis"), data.get("target"))


def folder_name(key: str) -> str:
    """A trial key as a portable folder name."""
    return re.sub(r"[^A-Za-z0-9_.+@=#~-]", "_", key.replace("<-", "_from_").replace(":", "."))


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` only if the block succeeds.

    For files written by other libraries (matplotlib, datasets): a crash or a full disk leaves
    the previous file intact instead of a truncated one.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; a line torn by a crash or a full disk is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def read_trial_file(path: Path) -> dict[str, Any] | None:
    """A trial's JSON file, or None when it is missing or torn (a warning names it: the trial counts as not run)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("skipping %s: torn or not JSON (%s); that trial counts as not run, resume re-runs it", path, error)
        return None
    if not isinstance(data, dict):
        log.warning("skipping %s: must hold a JSON object, got %s", path, type(data).__name__)
        return None
    return data


def data_name(causal_model: str, variables: tuple[str, ...]) -> str:
    return f"{causal_model}__{'+'.join(variables)}"


class SweepFolder:
    """Paths and small files of one sweep folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_file(self) -> Path:
        return self.path / "sweep.json"

    def exists(self) -> bool:
        return self.config_file.is_file()

    def write_config(self, config: SweepConfig) -> None:
        atomic_write_text(self.config_file, json.dumps(to_dict(config), indent=2) + "\n")

    def read_config(self) -> SweepConfig:
        if not self.exists():
            raise FileNotFoundError(f"a sweep folder must hold sweep.json, got {str(self.path)!r}")
        return from_dict(SweepConfig, self._read_sweep_file("sweep.json", dict))

    def _read_sweep_file(self, name: str, kind: type) -> Any:
        """A sweep-level JSON file; SweepFileError (which file, how to recover) when it is torn."""
        path = self.path / name
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise SweepFileError(f"{str(path)!r} must be the JSON align-search wrote, got a torn or foreign file "
                                 f"({error}). To recover, {RECOVER[name]}") from None
        if not isinstance(data, kind):
            raise SweepFileError(f"{str(path)!r} must hold a JSON {'object' if kind is dict else 'list'}, got "
                                 f"{type(data).__name__}. To recover, {RECOVER[name]}")
        return data

    def write_trials(self, specs: list[TrialSpec]) -> None:
        atomic_write_text(self.path / "trials.json", json.dumps([s.to_dict() for s in specs], indent=1) + "\n")

    def read_trials(self) -> list[TrialSpec]:
        if not (self.path / "trials.json").is_file():
            return []
        try:
            return [TrialSpec.from_dict(d) for d in self._read_sweep_file("trials.json", list)]
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, UserError):
                raise
            raise SweepFileError(f"{str(self.path / 'trials.json')!r} must list trials as align-search wrote them, "
                                 f"got {error!r}. To recover, {RECOVER['trials.json']}") from None

    def trial(self, key: str) -> TrialSpec:
        for spec in self.read_trials():
            if spec.key == key:
                return spec
        raise ConfigError(f"trial must be one of the sweep's trials.json, got {key!r}")

    def trial_dir(self, key: str) -> Path:
        return self.path / "trials" / folder_name(key)

    def data_dir(self, causal_model: str, variables: tuple[str, ...]) -> Path:
        return self.path / "data" / data_name(causal_model, variables)

    def data_directories(self) -> list[Path]:
        """Every built pair set of the sweep (one per causal model and variables)."""
        return sorted(done.parent for done in (self.path / "data").glob("*/done"))

    @property
    def prompts_file(self) -> Path:
        return self.path / "data" / "prompts.json"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def read_state(self) -> dict[str, Any]:
        return self._read_sweep_file("state.json", dict) if (self.path / "state.json").is_file() else {}

    def update_state(self, **values: Any) -> dict[str, Any]:
        state = {**self.read_state(), **values}
        atomic_write_text(self.path / "state.json", json.dumps(state, indent=2) + "\n")
        return state

    def summary(self, key: str) -> TrialResult | UntrainedResult | None:
        """The trial's result; None when its summary.json is missing, torn or not a result (a warning says which)."""
        path = self.trial_dir(key) / "summary.json"
        data = read_trial_file(path)
        if data is None:
            return None
        try:
            return result_of(data)
        except ConfigError as error:
            log.warning("skipping %s: not a trial's result (%s); that trial counts as not run, resume re-runs it",
                        path, error)
            return None

    def status(self, key: str) -> dict[str, Any] | None:
        return read_trial_file(self.trial_dir(key) / "status.json")

    def best(self, key: str) -> dict[str, Any] | None:
        """The trial's test IIA and widths at its best dev state so far (written as it reports)."""
        path = self.trial_dir(key) / "best.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_best(self, key: str, values: dict[str, Any]) -> None:
        atomic_write_text(self.trial_dir(key) / "best.json", json.dumps(values, indent=2) + "\n")

    def write_status(self, key: str, **values: Any) -> None:
        atomic_write_text(self.trial_dir(key) / "status.json", json.dumps(values, indent=2) + "\n")

    def reopen_failed(self, among: Collection[str] | None = None, unstarted_only: bool = False) -> list[str]:
        """Forget which trials failed (not their checkpoints or attempts), so that they run again: of the
        trials `among` (default: all); with `unstarted_only`, those that failed before their code started
        (no attempt on record)."""
        keys = [spec.key for spec in self.read_trials() if (among is None or spec.key in among)
                and (self.status(spec.key) or {}).get("status") == "failed"
                and not (unstarted_only and self.attempts(spec.key))]
        for key in keys:
            (self.trial_dir(key) / "status.json").unlink()
        return keys

    def record_attempt(self, key: str, **values: Any) -> None:
        """Append one line to the trial's attempts.jsonl (each start or retry of the trial)."""
        directory = self.trial_dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        row = {"attempt": len(self.attempts(key)) + 1, "time": round(time.time(), 3), **values}
        with open(directory / "attempts.jsonl", "a") as out:
            out.write(json.dumps(row) + "\n")

    def attempts(self, key: str) -> list[dict[str, Any]]:
        return read_jsonl(self.trial_dir(key) / "attempts.jsonl")
