"""The Ray Tune pieces of a sweep: scheduler, collapse stopper, and the driver callback.

ASHA compares trials on "iia" (dev IIA) at rungs of `grace_period * reduction_factor^k`
reports. Its `max_t` is set past the last report, so a trial that runs to the end returns
normally and writes its summary (code after a scheduler's stop never runs). A trial that
stops early keeps what it reported; the callback records why it stopped (ASHA or a
collapsed boundary) and at which step, and mirrors every trial into MLflow.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.stopper import Stopper

from alignment.config_io import ConfigError
from alignment.train import total_steps
from search.config import SchedulerConfig, SweepConfig
from search.folder import SweepFolder, TrialSpec, folder_name
from search.tracking import Tracker

log = logging.getLogger(__name__)


def reports_per_trial(config: SweepConfig) -> int:
    """Evaluations a full trial reports (one every eval_every steps, and one at the end)."""
    steps = total_steps(config.data.n_train, config.train)
    return math.ceil(steps / config.train.eval_every) + 1


def tune_config(config: SweepConfig, kind: str) -> Any:
    scheduler_config = config.scheduler
    if kind == "asha":
        scheduler: Any = ASHAScheduler(time_attr="training_iteration", max_t=reports_per_trial(config) + 2,
                                       grace_period=scheduler_config.grace_period,
                                       reduction_factor=scheduler_config.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(metric="iia", mode="max", scheduler=scheduler, reuse_actors=True,
                           max_concurrent_trials=max_concurrent(config),
                           trial_name_creator=lambda trial: trial.config["trial"],
                           trial_dirname_creator=lambda trial: folder_name(trial.config["trial"])[:100])


def max_concurrent(config: SweepConfig) -> int:
    """`resources.concurrency`, capped for sharded trials by what the cluster can hold at once
    (Tune does not see a Train job's workers)."""
    shard = config.hypotheses.shard
    if shard == 1:
        return config.resources.concurrency
    import ray

    from cluster.sharded import concurrent_sharded_trials
    free = ray.available_resources()
    fits = concurrent_sharded_trials(free.get("CPU", 0.0), free.get("GPU", 0.0), shard, config.resources.gpu > 0)
    if fits < 1:
        raise ConfigError(f"hypotheses.shard = {shard} needs {shard + 1} free CPUs per trial "
                          f"({'and GPUs ' if config.resources.gpu else ''}on the cluster); it has {free.get('CPU', 0)}")
    return min(config.resources.concurrency, fits)


class CollapseStopper(Stopper):
    """Stop a trial whose learned boundary has collapsed to `collapse_width` dimensions or fewer."""

    def __init__(self, config: SchedulerConfig):
        self.width, self.after = config.collapse_width, config.collapse_after

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if self.width < 0 or result.get("done") or result.get("final") or result.get("min_width") is None:
            return False  # never at the last evaluation: the trial is about to write its test IIA
        return bool(result["training_iteration"] >= self.after and result["min_width"] <= self.width)

    def stop_all(self) -> bool:
        return False


class SweepCallback(tune.Callback):
    """Records how each trial ended and mirrors it into MLflow.

    The MLflow calls run on one background thread, in order: Tune's driver loop calls these
    hooks between trial results, and a function trainable's report waits for the driver, so a
    slow tracking store (a database write is tens of milliseconds on a busy machine, a run's
    upload several of them) would otherwise stall every trial. The thread is drained when the
    experiment ends; `drain()` then re-raises any error it met.
    """

    def __init__(self, folder: SweepFolder, tracker: Tracker, scheduler: SchedulerConfig, specs: list[TrialSpec]):
        self.folder, self.tracker, self.scheduler = folder, tracker, scheduler
        self.last: dict[str, dict[str, Any]] = {}
        self.best: dict[str, float] = {}
        self.specs = {spec.key: spec for spec in specs}
        self.bar: Any = None
        self.mirror: ThreadPoolExecutor | None = None  # made on first use: Tune pickles its callbacks
        self.pending: list[Future[Any]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "mirror": None, "pending": []}

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        from tqdm.auto import tqdm
        phase = next(iter(self.specs.values())).phase if self.specs else "sweep"
        self.bar = tqdm(total=len(self.specs), desc=phase, unit="trial", mininterval=1.0)

    def _advance(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if self.best:
            key = max(self.best, key=lambda k: self.best[k])
            self.bar.set_postfix_str(f"best dev IIA {self.best[key]:.3f} {key}", refresh=False)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        self.stop_mirror()  # the sweep calls drain() after Tune returns, which re-raises a failed call

    def drain(self) -> None:
        """Wait for every queued MLflow call; re-raise the first that failed."""
        self.stop_mirror()
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()

    def stop_mirror(self) -> None:
        """Let the queued MLflow calls finish; later ones start a new thread."""
        if self.mirror is not None:
            self.mirror.shutdown(wait=True)
            self.mirror = None

    def _in_background(self, action: Any, *args: Any) -> None:
        if self.mirror is None:
            self.mirror = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-mirror")
        self.pending.append(self.mirror.submit(action, *args))

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        key = trial.config["trial"]
        self.last[key] = result
        self.best[key] = max(self.best.get(key, -1.0), float(result.get("iia", -1.0)))
        if not result.get("done"):
            self._in_background(self.tracker.log_live, key, dict(result))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key = trial.config["trial"]
        if self.folder.summary(key) is None and self.folder.status(key) is None:
            last = self.last.get(key, {})
            collapsed = (self.scheduler.collapse_width >= 0 and last.get("min_width") is not None
                         and last["min_width"] <= self.scheduler.collapse_width)
            self.folder.write_status(key, status="stopped_early", reason="collapsed" if collapsed else "asha",
                                     step=last.get("step", 0), best_dev_iia=self.best.get(key, 0.0),
                                     reports=last.get("training_iteration", 0), node_id=last.get("node_id"))
        self._upload(key)
        self._advance()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key = trial.config["trial"]
        if self.folder.status(key) is None:
            self.folder.write_status(key, status="failed", error=_error_text(trial),
                                     step=self.last.get(key, {}).get("step", 0),
                                     node_id=self.last.get(key, {}).get("node_id"))
        self._upload(key)
        self._advance()

    def _upload(self, key: str) -> None:
        spec = self.specs.get(key)
        if spec is None:
            return
        node = self.last.get(key, {}).get("node_id")
        self._in_background(self.tracker.upload_trial, spec, {"node_id": node} if node else None)


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        with open(path) as handle:
            lines = [line for line in handle.read().strip().splitlines() if line.strip()]
        return lines[-1][:2000] if lines else "unknown error"
    except OSError:
        return str(getattr(trial, "error_msg", None) or "unknown error")[:2000]
