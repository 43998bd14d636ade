"""The Ray Tune pieces of a sweep: scheduler, collapse stopper, and the driver callback.

Early stopping judges hard-mask dev IIA, which means something only once training has
produced a near-hard mask (`alignment.train.mask_hard_step`). So every evaluation report
carries `hard_reports`: how many evaluations so far came after that step (0 before it; from
the first report for fixed masks such as das). ASHA counts its rungs in hard reports
(`grace_period * reduction_factor^k`), and the collapse rule acts from the
`collapse_after`-th one. Neither judges the last evaluation (the trial is about to write its
summary) nor the task's control causal models (they run to the end, see `SweepASHA`), and
the controls phase runs FIFO with no stopper.

Who stopped a trial is taken from the decision itself: `SweepASHA` and `CollapseStopper`
write each stop into a shared `StopLedger`, which the driver callback reads when the trial
ends (`stopped_by` = "asha" or "collapse" in its status.json, results.csv and MLflow run).
A trial stopped early keeps what it reported: its best dev IIA, and its test IIA at that
best state (`best.json`). Only a stopped trial's best.json is read, so the trainable evaluates
the test split only at the reports where the sweep may stop the trial (`may_stop`, the same
conditions the scheduler and the stopper act on), and only when its best state moved since.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

from alignment.config import InterventionConfig
from alignment.config_io import ConfigError
from alignment.train import mask_hard_step, total_steps
from causal_models import get_task
from search.config import SchedulerConfig, SweepConfig
from search.folder import SweepFolder, TrialSpec, folder_name

if TYPE_CHECKING:  # not imported: the trials' workers import this module for the stop rules, and MLflow's import
    from search.tracking import Tracker  # cost each of them 0.5 s

log = logging.getLogger(__name__)
# Interventions whose mask is annealed by a temperature; the others (das, full_swap) are hard from the start.
ANNEALED = ("boundless", "low_rank", "random_rotation", "neuron_mask")


def reports_per_trial(config: SweepConfig) -> int:
    """Evaluations a full trial reports (one every eval_every steps, and one at the end)."""
    steps = total_steps(config.data.n_train, config.train)
    return math.ceil(steps / config.train.eval_every) + 1


def first_hard_step(kind: str, total: int, intervention: InterventionConfig) -> int:
    """The first optimizer step trained with a near-hard mask (0 for a mask that is never soft)."""
    return mask_hard_step(total, intervention) if kind in ANNEALED else 0


def hard_reports(step: int, total: int, eval_every: int, hard_step: int) -> int:
    """Evaluations up to and including the one at `step` that came after `hard_step` was trained.

    Evaluations run at every multiple of `eval_every` and at the last step `total`.
    """
    def evaluations_until(k: int) -> int:
        return k // eval_every + (1 if k == total and total % eval_every else 0)
    return evaluations_until(step) - evaluations_until(hard_step) if step > hard_step else 0


class StopLedger:
    """Who stopped which trial (by Tune trial id): the scheduler and the stopper write, the callback reads.

    The three live in the driver process, so one object shared by reference is enough.
    """

    def __init__(self) -> None:
        self.stops: dict[str, str] = {}

    def record(self, trial_id: str, who: str) -> None:
        self.stops.setdefault(trial_id, who)

    def pop(self, trial_id: str) -> str:
        return self.stops.pop(trial_id, "")


def _judged(result: dict[str, Any]) -> bool:
    """Whether early stopping may act on this result: an evaluation after the mask is hard, not the last."""
    return not (result.get("done") or result.get("final")) and int(result.get("hard_reports") or 0) >= 1


def asha_exempt(config: SweepConfig, specs: list[TrialSpec]) -> set[str]:
    """The keys of the trials ASHA leaves alone: those of the task's control causal models (see `SweepASHA`)."""
    controls = set(get_task(config.task).controls)
    return {s.key for s in specs if s.hypothesis.causal_model in controls}


def collapsed(scheduler: SchedulerConfig, result: dict[str, Any]) -> bool:
    """The collapse rule, as `CollapseStopper` applies it: a judged report, at least `collapse_after` hard
    reports in, with some variable's hard width at most `collapse_width` (never when that is negative)."""
    if scheduler.collapse_width < 0 or not _judged(result) or result.get("min_width") is None:
        return False
    return bool(result["hard_reports"] >= scheduler.collapse_after and result["min_width"] <= scheduler.collapse_width)


@dataclass(frozen=True)
class StopRule:
    """Whether the sweep may stop one trial at a report: `may_stop` with the trial's exemption looked up once
    (a user's task file is imported again on every look-up). Picklable, for the workers of a sharded trial."""

    scheduler: SchedulerConfig
    grid: bool
    by_asha: bool

    @staticmethod
    def of(config: SweepConfig, spec: TrialSpec) -> StopRule:
        grid = spec.phase == "grid"
        by_asha = grid and config.scheduler.kind == "asha" and not asha_exempt(config, [spec])
        return StopRule(config.scheduler, grid, by_asha)

    def __call__(self, result: dict[str, Any]) -> bool:
        return self.grid and ((self.by_asha and _judged(result)) or collapsed(self.scheduler, result))


def may_stop(config: SweepConfig, spec: TrialSpec, result: dict[str, Any]) -> bool:
    """Whether `early_stopping`'s scheduler or stopper may stop this trial at the report `result` (its
    "hard_reports", "min_width" and "final"): ASHA at any judged report of a grid trial it does not exempt
    (whether it does depends on the other trials of the rung), the collapse rule exactly where it acts
    (`collapsed`, grid only), nothing in the controls phase.

    The trainable evaluates the test split at the best state only at such reports, for best.json: a
    report this says False about must be one no stop can follow, so it errs towards True, never False.
    """
    return StopRule.of(config, spec)(result)


class SweepASHA(ASHAScheduler):
    """ASHA in hard reports that records its stops and leaves the exempt trials alone.

    The exempt trials (the task's control causal models) never enter a bracket and run to
    the end: a control must be trained as fully as the hypothesis it is compared with, and a
    control stopped because hypotheses outscored it (or hypotheses stopped because a control
    outscored them) would make the comparison depend on who shared the bracket.
    """

    def __init__(self, ledger: StopLedger, exempt: set[str], **asha: Any):
        super().__init__(time_attr="hard_reports", **asha)
        self.ledger, self.exempt = ledger, exempt

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if trial.config["trial"] not in self.exempt:
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.trial_id not in self._trial_info or not _judged(result):
            return str(TrialScheduler.CONTINUE)
        action = str(super().on_trial_result(tune_controller, trial, result))
        if action == TrialScheduler.STOP:
            self.ledger.record(trial.trial_id, "asha")
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._trial_info.pop(trial.trial_id, None)  # the last report is not a rung result

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)


@dataclass(frozen=True)
class EarlyStopping:
    """A Tune run's scheduler and stopper, and the ledger in which both record their stops."""

    scheduler: Any
    stopper: Stopper | None
    ledger: StopLedger


def early_stopping(config: SweepConfig, specs: list[TrialSpec], phase: str) -> EarlyStopping:
    """The grid: the config's scheduler ("asha" sparing the task's control causal models, or "fifo") and the
    collapse rule. The controls phase: FIFO and no stopper (no control is stopped early)."""
    ledger = StopLedger()
    if phase != "grid":
        return EarlyStopping(FIFOScheduler(), None, ledger)
    stopper = CollapseStopper(config.scheduler, ledger)
    if config.scheduler.kind != "asha":
        return EarlyStopping(FIFOScheduler(), stopper, ledger)
    grace = config.scheduler.grace_period
    asha = SweepASHA(ledger, asha_exempt(config, specs), max_t=max(reports_per_trial(config) + 2, grace),
                     grace_period=grace, reduction_factor=config.scheduler.reduction_factor)
    return EarlyStopping(asha, stopper, ledger)


def tune_config(config: SweepConfig, scheduler: Any) -> Any:
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
    """Stop a trial whose learned boundary has collapsed to `collapse_width` dimensions or fewer,
    at its `collapse_after`-th hard report or later (the mask is hard: a width-0 boundary will not regrow)."""

    def __init__(self, config: SchedulerConfig, ledger: StopLedger):
        self.config, self.ledger = config, ledger

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if not collapsed(self.config, result):
            return False
        self.ledger.record(trial_id, "collapse")
        return True

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

    def __init__(self, folder: SweepFolder, tracker: Tracker, ledger: StopLedger, specs: list[TrialSpec]):
        self.folder, self.tracker, self.ledger = folder, tracker, ledger
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
        stopped_by = self.ledger.pop(trial.trial_id)
        if self.folder.summary(key) is None and self.folder.status(key) is None:
            last = self.last.get(key, {})
            if not stopped_by:
                log.warning("trial %s ended without a summary and without a stop decision on record", key)
            self.folder.write_status(key, status="stopped_early", stopped_by=stopped_by, step=last.get("step", 0),
                                     best_dev_iia=self.best.get(key, 0.0), reports=last.get("training_iteration", 0),
                                     hard_reports=last.get("hard_reports", 0), node_id=last.get("node_id"))
        self._upload(key)
        self._advance()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        key = trial.config["trial"]
        self.ledger.pop(trial.trial_id)
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
