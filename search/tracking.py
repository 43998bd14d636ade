"""MLflow: one parent run per sweep, one nested child run per trial, all logged from the driver.

Trials write everything to their folder; the driver mirrors it into MLflow: dev IIA live as
trials report, then, when a trial ends, its params, metric history, final metrics, tags and
the trained intervention. Logging from the driver (in batches) keeps trials independent of
the tracking server: if it goes down mid-sweep, trials keep training, the failed uploads are
left for `align-search sync DIR` (or the next resume), and a marker in each trial folder
(`mlflow.json`: run id, store, uploaded or not) makes every upload happen once. Uploading
again never duplicates: a trial's child run is found again (marker, else its `trial_key`
tag), and its metrics carry timestamps derived from the run's start and the step, so a
re-logged point is the same point, which the store keeps once.

The default store is a SQLite file in the sweep folder, so a fresh machine needs no server;
search/store.py keeps it portable and saves the view the MLflow UI opens on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from alignment.files import atomic_write_text
from causal_models.errors import UserError
from search.folder import SweepFolder, TrialSpec, read_jsonl
from search.store import LOCAL_STORE, default_uri, relocate, set_view, stored_uri, uri_of

__all__ = ["MARKER", "Tracker", "TrackingUnreachable", "check_tracking", "client_for", "default_uri", "is_local"]

log = logging.getLogger(__name__)
MARKER = "mlflow.json"
FINAL_METRICS = ("prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab", "test_iia_ci_low",
                 "test_iia_ci_high", "test_iia_sd", "floor_no_op", "floor_copy_source")


class TrackingUnreachable(UserError, RuntimeError):
    """The MLflow tracking server cannot be reached (or its local store cannot be written)."""


def is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client_for(uri: str) -> MlflowClient:
    """A client of the store at `uri` (a SQLite file is checked first: SQLAlchemy retries one it cannot open)."""
    if uri.startswith("sqlite:///"):
        _check_sqlite(uri)
    if not is_local(uri):  # fail fast, never retry for minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    return MlflowClient(tracking_uri=uri)


def check_tracking(uri: str, client: MlflowClient | None = None) -> None:
    """Raise TrackingUnreachable (one line, naming the URI) unless the store answers."""
    if uri.startswith("sqlite:///"):  # SQLAlchemy retries an unopenable file for minutes: look first
        _check_sqlite(uri)
    try:
        (client or client_for(uri)).search_experiments(max_results=1)
    except Exception as error:  # any transport or storage error means the same to the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if is_local(uri):
            raise TrackingUnreachable(f"MLflow store {uri} must be writable, got: {first[:160]}. "
                                      f"Free some space or choose another --out") from None
        raise TrackingUnreachable(f"MLflow tracking server {uri} must be reachable, got: {first[:160]}. "
                                  f"Start it, or drop --tracking-uri to log into the sweep folder") from None


def _check_sqlite(uri: str) -> None:
    path = Path(uri.removeprefix("sqlite:///"))
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        why = ("it is a folder" if path.is_dir() else "its folder does not exist" if not folder.is_dir()
               else "it or its folder is read-only")
        raise TrackingUnreachable(f"MLflow store {uri} must be a SQLite file this process can write, got {why}. "
                                  f"Choose another --tracking-uri, or drop it to log into the sweep folder")


class Tracker:
    """The sweep's MLflow experiment and parent run; every call survives an unreachable server."""

    def __init__(self, folder: SweepFolder, uri: str, experiment: str):
        self.folder, self.uri, self.experiment = folder, uri, experiment
        self.stored = stored_uri(folder, uri)  # how state.json and the trial markers name this store
        if self.stored == LOCAL_STORE:
            relocate(folder)
        self.client = client_for(uri)
        self.available = True
        self.live: dict[str, tuple[str, int]] = {}  # trial key -> (child run id, its start in ms)

    def check(self) -> None:
        check_tracking(self.uri, self.client)

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = (self.folder.path.resolve() / "mlartifacts").as_uri() if is_local(self.uri) else None
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

    def start_parent(self, config: dict[str, Any]) -> str:
        """The sweep's parent run: created once, reused (and marked running again) on resume."""
        state = self.folder.read_state()
        if state.get("parent_run_id") and uri_of(self.folder, state.get("tracking_uri")) == self.uri:
            self.client.update_run(state["parent_run_id"], status="RUNNING")
            return str(state["parent_run_id"])
        run = self.client.create_run(self.experiment_id(), run_name=self.folder.path.name,
                                     tags={"sweep": str(self.folder.path.resolve()), "align_search.kind": "sweep"})
        params = [Param(k, str(v)[:500]) for k, v in _flatten(config).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        self.client.log_artifact(run.info.run_id, str(self.folder.config_file))
        set_view(self.client, run.info.experiment_id, run.info.run_id)
        self.folder.update_state(parent_run_id=run.info.run_id, tracking_uri=self.stored,
                                 experiment_id=run.info.experiment_id)
        return str(run.info.run_id)

    def reopen(self, keys: list[str]) -> None:
        """Trials that run again after failing: upload them again, into the same child run, without the old error."""
        for key in keys:
            marker = _read_marker(self.folder.trial_dir(key))
            if marker.get("run_id") and marker.get("uri", self.stored) == self.stored:
                _write_marker(self.folder.trial_dir(key), run_id=marker["run_id"], uri=self.stored, uploaded=False)
                self._safely(lambda run_id=marker["run_id"]: self._drop_tag(run_id, "error"))

    def _drop_tag(self, run_id: str, tag: str) -> bool:
        if tag in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, tag)
        return True

    def log_live(self, key: str, result: dict[str, Any]) -> None:
        """Dev IIA of a trial as it reports (best effort)."""
        if not self.available or "dev_iia" not in result:
            return
        step = int(result.get("step", 0))
        self._safely(lambda: self.client.log_batch(self._run_for(key), metrics=[
            Metric("dev_iia", float(result["dev_iia"]), self._stamp(key, step), step)]))

    def upload_trial(self, spec: TrialSpec, extra_tags: dict[str, str] | None = None) -> bool:
        """Mirror a finished (or stopped, diverged, failed) trial into its child run, once."""
        directory = self.folder.trial_dir(spec.key)
        if _uploaded(_read_marker(directory), self.stored):
            return True
        return self._safely(lambda: self._upload(spec, directory, extra_tags or {}))

    def _upload(self, spec: TrialSpec, directory: Path, extra_tags: dict[str, str]) -> bool:
        run_id = self._run_for(spec.key, spec)
        result = self.folder.summary(spec.key)
        summary = result.to_dict() if result is not None else {}
        status = _read_json(directory / "status.json")
        # A stopped trial is scored like a finished one: test IIA at its best dev state (best.json).
        scored = summary or (_read_json(directory / "best.json") if status.get("status") == "stopped_early" else {})
        steps = int(summary.get("steps", status.get("step", 0)))
        metrics = [Metric(key, value, self._stamp(spec.key, step), step)
                   for key, value, step in _history(directory / "metrics.jsonl")]
        metrics += [Metric(k, float(scored[k]), self._stamp(spec.key, steps), steps)
                    for k in FINAL_METRICS if scored.get(k) is not None]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start:start + 900])
        tags = {**_status_tags(summary, status), "attempts": str(len(self.folder.attempts(spec.key))), **extra_tags}
        self.client.log_batch(run_id, params=_params(spec, summary), tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for name in ("summary.json", "status.json", "config.json", "attempts.jsonl"):
            if (directory / name).is_file():
                self.client.log_artifact(run_id, str(directory / name))
        if (directory / "intervention").is_dir():
            self.client.log_artifacts(run_id, str(directory / "intervention"), "intervention")
        final = "FINISHED" if summary or status.get("status") in ("stopped_early", "diverged") else "FAILED"
        self.client.set_terminated(run_id, final)
        _write_marker(directory, run_id=run_id, uri=self.stored, uploaded=True)
        return True

    def _run_for(self, key: str, spec: TrialSpec | None = None) -> str:
        """The trial's child run: the one it already has in this store, else a new one."""
        if key not in self.live:
            directory = self.folder.trial_dir(key)
            marker = _read_marker(directory)
            known = marker.get("run_id") if marker.get("uri", self.stored) == self.stored else None
            run = self._existing_run(key, known) or self._create_run(key, spec or self.folder.trial(key))
            self.live[key] = (run.info.run_id, int(run.info.start_time))
            if known != run.info.run_id:
                _write_marker(directory, run_id=run.info.run_id, uri=self.stored, uploaded=False)
        return self.live[key][0]

    def _existing_run(self, key: str, run_id: str | None) -> Any:
        state = self.folder.read_state()
        if run_id:
            try:
                return self.client.get_run(run_id)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        if "'" in key:
            return None
        runs = self.client.search_runs([state["experiment_id"]], filter_string=f"tags.trial_key = '{key}'")
        mine = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state["parent_run_id"]]
        return mine[0] if mine else None

    def _create_run(self, key: str, spec: TrialSpec) -> Any:
        state = self.folder.read_state()
        return self.client.create_run(state["experiment_id"], run_name=key, tags={
            "mlflow.parentRunId": state["parent_run_id"], "trial_key": key, "hypothesis": spec.hypothesis.id,
            "role": spec.role, "phase": spec.phase})

    def _stamp(self, key: str, step: int) -> int:
        """A metric's timestamp: the run's start plus the step, the same every time it is logged."""
        self._run_for(key)
        return self.live[key][1] + step

    def finish_parent(self, metrics: dict[str, float], tags: dict[str, str], artifacts: list[Path],
                      status: str = "FINISHED") -> None:
        def finish() -> bool:
            run_id = self.folder.read_state()["parent_run_id"]
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()],
                                  tags=[RunTag(k, v) for k, v in tags.items()])
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(run_id, str(path))
            self.client.set_terminated(run_id, status)
            return True
        self._safely(finish)

    def _safely(self, action: Any) -> bool:
        try:
            return bool(action())
        except Exception as error:  # a tracking outage must never stop the sweep
            if self.available:
                log.warning("MLflow at %s failed (%s); results stay in the sweep folder, run "
                            "`align-search sync %s` once it is back", self.uri, str(error).splitlines()[0][:200],
                            self.folder.path)
            self.available = False
            return False


def _now() -> int:
    import time
    return int(time.time() * 1000)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_marker(directory: Path) -> dict[str, Any]:
    return _read_json(directory / MARKER)


def _uploaded(marker: dict[str, Any], uri: str) -> bool:
    return bool(marker.get("uploaded")) and marker.get("uri", uri) == uri


def _write_marker(directory: Path, **values: Any) -> None:
    atomic_write_text(directory / MARKER, json.dumps(values) + "\n")


def _history(path: Path) -> list[tuple[str, float, int]]:
    """(metric, value, step) of every number in metrics.jsonl; the latest row wins a repeated step."""
    points: dict[tuple[str, int], float] = {}
    for row in read_jsonl(path):
        step = int(row.get("step", 0))
        for key, value in row.items():
            if key in ("step", "widths") or isinstance(value, (list, dict, str)) or value is None:
                continue
            points[(key, step)] = float(value)
        for index, width in enumerate(row.get("widths") or []):
            points[(f"width_{index}", step)] = float(width)
    return [(key, value, step) for (key, step), value in points.items()]


def _params(spec: TrialSpec, summary: dict[str, Any]) -> list[Param]:
    hypothesis = spec.hypothesis
    values = {"causal_model": hypothesis.causal_model, "variables": "+".join(hypothesis.variables),
              "layer": hypothesis.layer, "component": hypothesis.component, "position": hypothesis.position,
              "position_label": hypothesis.label,
              "source_position": hypothesis.source_position or hypothesis.position,
              "intervention": hypothesis.intervention, "seed": spec.seed, "role": spec.role,
              "position_index": summary.get("position_index"), "model": (summary.get("model") or {}).get("name"),
              "task": summary.get("task")}
    return [Param(k, str(v)) for k, v in values.items() if v is not None]


def _status_tags(summary: dict[str, Any], status: dict[str, Any]) -> dict[str, str]:
    """status, stopped_early, stopped_by ("asha", "collapse" or empty), stop_step, error, node_id."""
    state = "finished" if summary else status.get("status", "failed")
    tags = {"status": state, "stopped_early": str(state == "stopped_early").lower(),
            "stopped_by": str(status.get("stopped_by", "")) if state == "stopped_early" else ""}
    for key in ("step", "error", "node_id"):
        if key in status:
            tags[f"stop_{key}" if key == "step" else key] = str(status[key])[:4000]
    return tags
