"""MLflow: one parent run per sweep, one nested child run per trial, all logged from the driver.

Trials write everything to their folder; the driver mirrors it into MLflow: dev IIA live as
trials report, then, when a trial ends, its params, metric history, final metrics, tags and
the trained intervention. Logging from the driver (in batches) keeps trials independent of
the tracking server: if it goes down mid-sweep, trials keep training, the failed uploads are
left for `align-search sync DIR` (or the next resume), and a marker in each trial folder
(`mlflow.json`) makes every upload happen once.

The default store is a SQLite file in the sweep folder, so a fresh machine needs no server.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from alignment.persistence import atomic_write_text
from search.folder import SweepFolder, TrialSpec

log = logging.getLogger(__name__)
MARKER = "mlflow.json"


class TrackingUnreachable(RuntimeError):
    """The MLflow tracking server cannot be reached."""


def default_uri(folder: SweepFolder) -> str:
    return f"sqlite:///{folder.path.resolve() / 'mlflow.db'}"


def is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class Tracker:
    """The sweep's MLflow experiment and parent run; every call survives an unreachable server."""

    def __init__(self, folder: SweepFolder, uri: str, experiment: str):
        self.folder, self.uri, self.experiment = folder, uri, experiment
        if not is_local(uri):  # fail fast, never retry for minutes
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(tracking_uri=uri)
        self.available = True
        self.live: dict[str, str] = {}

    def check(self) -> None:
        """Raise TrackingUnreachable (one line, naming the URI) unless the store answers."""
        try:
            self.client.search_experiments(max_results=1)
        except Exception as error:  # any transport error means the same to the user
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrackingUnreachable(f"MLflow tracking server {self.uri} is unreachable ({first[:160]}). "
                                      f"Start it, or drop --tracking-uri to log into the sweep folder") from None

    def experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = (self.folder.path.resolve() / "mlartifacts").as_uri() if is_local(self.uri) else None
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

    def start_parent(self, config: dict[str, Any]) -> str:
        """The sweep's parent run: created once, reused (and marked running again) on resume."""
        state = self.folder.read_state()
        if state.get("parent_run_id") and state.get("tracking_uri") == self.uri:
            self.client.update_run(state["parent_run_id"], status="RUNNING")
            return str(state["parent_run_id"])
        run = self.client.create_run(self.experiment_id(), run_name=self.folder.path.name,
                                     tags={"sweep": str(self.folder.path.resolve()), "align_search.kind": "sweep"})
        params = [Param(k, str(v)[:500]) for k, v in _flatten(config).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[start:start + 100])
        self.client.log_artifact(run.info.run_id, str(self.folder.config_file))
        self.folder.update_state(parent_run_id=run.info.run_id, tracking_uri=self.uri,
                                 experiment_id=run.info.experiment_id)
        return str(run.info.run_id)

    def log_live(self, key: str, result: dict[str, Any]) -> None:
        """Dev IIA of a trial as it reports (best effort)."""
        if not self.available or "dev_iia" not in result:
            return
        self._safely(lambda: self.client.log_batch(self._run_for(key), metrics=[
            Metric("dev_iia", float(result["dev_iia"]), _now(), int(result.get("step", 0)))]))

    def upload_trial(self, spec: TrialSpec, extra_tags: dict[str, str] | None = None) -> bool:
        """Mirror a finished (or stopped, diverged, failed) trial into its child run, once."""
        directory = self.folder.trial_dir(spec.key)
        marker = _read_marker(directory)
        if marker.get("uploaded"):
            return True
        return self._safely(lambda: self._upload(spec, directory, extra_tags or {}))

    def _upload(self, spec: TrialSpec, directory: Path, extra_tags: dict[str, str]) -> bool:
        run_id = self._run_for(spec.key, spec)
        summary = _read_json(directory / "summary.json")
        status = _read_json(directory / "status.json")
        metrics = _history(directory / "metrics.jsonl") + [
            Metric(k, float(summary[k]), _now(), int(summary.get("steps", 0)))
            for k in ("prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab") if k in summary]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start:start + 900])
        self.client.log_batch(run_id, params=_params(spec, summary), tags=[
            RunTag(k, str(v)) for k, v in {**_status_tags(summary, status), **extra_tags}.items()])
        for name in ("summary.json", "status.json", "config.json"):
            if (directory / name).is_file():
                self.client.log_artifact(run_id, str(directory / name))
        if (directory / "intervention").is_dir():
            self.client.log_artifacts(run_id, str(directory / "intervention"), "intervention")
        final = "FINISHED" if summary or status.get("status") in ("stopped_early", "diverged") else "FAILED"
        self.client.set_terminated(run_id, final)
        _write_marker(directory, run_id=run_id, uploaded=True)
        return True

    def _run_for(self, key: str, spec: TrialSpec | None = None) -> str:
        directory = self.folder.trial_dir(key)
        run_id = self.live.get(key) or _read_marker(directory).get("run_id")
        if run_id is None:
            spec = spec or self.folder.trial(key)
            parent = self.folder.read_state()["parent_run_id"]
            run = self.client.create_run(self.folder.read_state()["experiment_id"], run_name=key, tags={
                "mlflow.parentRunId": parent, "trial_key": key, "hypothesis": spec.hypothesis.id,
                "role": spec.role, "phase": spec.phase})
            run_id = run.info.run_id
            _write_marker(directory, run_id=run_id, uploaded=False)
        self.live[key] = run_id
        return str(run_id)

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


def _write_marker(directory: Path, **values: Any) -> None:
    atomic_write_text(directory / MARKER, json.dumps(values) + "\n")


def _history(path: Path) -> list[Metric]:
    metrics: list[Metric] = []
    if not path.is_file():
        return metrics
    for line in path.read_text().splitlines():
        row = json.loads(line)
        step = int(row.get("step", 0))
        for key, value in row.items():
            if key in ("step", "widths") or isinstance(value, (list, dict, str)) or value is None:
                continue
            metrics.append(Metric(key, float(value), _now(), step))
        for index, width in enumerate(row.get("widths") or []):
            metrics.append(Metric(f"width_{index}", float(width), _now(), step))
    return metrics


def _params(spec: TrialSpec, summary: dict[str, Any]) -> list[Param]:
    hypothesis = spec.hypothesis
    values = {"causal_model": hypothesis.causal_model, "variables": "+".join(hypothesis.variables),
              "layer": hypothesis.layer, "position": hypothesis.position,
              "source_position": hypothesis.source_position or hypothesis.position,
              "intervention": hypothesis.intervention, "seed": spec.seed, "role": spec.role,
              "position_index": summary.get("position_index"), "model": (summary.get("model") or {}).get("name"),
              "task": summary.get("task")}
    return [Param(k, str(v)) for k, v in values.items() if v is not None]


def _status_tags(summary: dict[str, Any], status: dict[str, Any]) -> dict[str, str]:
    state = "finished" if summary else status.get("status", "failed")
    tags = {"status": state, "stopped_early": str(state == "stopped_early").lower()}
    for key in ("reason", "step", "error", "node_id"):
        if key in status:
            tags[f"stop_{key}" if key in ("reason", "step") else key] = str(status[key])[:4000]
    return tags
