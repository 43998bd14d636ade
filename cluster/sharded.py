"""A sharded trial: one hypothesis trained by a Ray Train job whose workers share the frozen model.

For a model that does not fit one device, `run_sharded_trial` runs the trial as a Ray Train
`TorchTrainer` with `workers` workers (cluster/shard_worker.py):
- the frozen model is partitioned with DeepSpeed ZeRO-3, each layer gathered only while it
  runs (cluster/zero3.py);
- every batch of counterfactual pairs is split across the workers, and the intervention is
  replicated on each, its gradients summed every step (cluster/parallel.py), so the steps,
  losses and IIA are those of the unsharded trial (to float rounding);
- the outputs are those of `alignment.trial.run_trial` (config.json, metrics.jsonl,
  intervention/, summary.json, plus `workers` and `parameter_share_per_worker` in the
  summary), and `report` is called the same way: after each evaluation, with the eval row
  and a function returning the `TrainState` to resume from, in the calling process.

Inside a Ray Tune function trainable, pass the same `report` as for `run_trial` (one that
calls `tune.report`): it runs in the trial's own thread, so per-eval metrics reach Tune and
ASHA can stop the trial there; a stop (or any error raised by `report`) aborts the Train run
and frees its workers. Do not also add `TuneReportCallback`: reports reach the trial
process through a relay of our own (`_Relay`, the same mechanism: a Ray queue, read by the
trial process), which also waits until `report` has returned, so the checkpoint it reads
still exists.

Resources: the calling process (a Tune trial: `tune.with_resources(trainable, {"cpu": 1})`)
holds 1 CPU, the Train controller 0, and each worker `cpus_per_worker` CPUs (+ 1 GPU). Tune
does not see the workers' share, so a sweep of sharded trials needs `workers + 1` CPUs (and
`workers` GPUs) free per concurrent trial; cap `max_concurrent_trials` with
`concurrent_sharded_trials`, or trials start whose workers then wait for resources.

Inputs reach the workers thus: the model by path (`config.model_path` must be readable at
the same path on the trial's node and every worker's: shared storage, or copied to each); the
counterfactual pairs, if given as `splits`, and the `resume` state inside the Train job's
config, which Ray ships through its object store (else each worker builds the pairs from the
seeded config itself); the outputs through Ray Train checkpoints under `storage_path`, which
on a multi-node cluster must be shared storage (NFS/EFS or s3://). By default it is a hidden
folder in `output_dir`, removed when the trial ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from ray.train import UserCallback

from alignment.config import TrialConfig
from alignment.hub import hub_id, local_path
from alignment.models import ModelLoadError
from alignment.persistence import atomic_write_text
from alignment.results import TrialResult
from alignment.train import MayStop, Report, TrainState
from cluster.janitor import PlacementGroupJanitor
from cluster.shard_worker import INTERVENTION, TRAIN_STATE, load_train_state, train_worker

Rows = Sequence[Mapping[str, Any]]


class ShardedTrialStopped(RuntimeError):
    """The calling process stopped a sharded trial (its `report` raised, or it timed out)."""


def concurrent_sharded_trials(free_cpus: float, free_gpus: float, workers: int, use_gpu: bool,
                              cpus_per_worker: float = 1.0) -> int:
    """How many sharded trials of `workers` workers fit at once (each also holds 1 CPU for its driver)."""
    by_cpu = int(free_cpus // (workers * cpus_per_worker + 1))
    return min(by_cpu, int(free_gpus // workers)) if use_gpu else by_cpu


def run_sharded_trial(config: TrialConfig, output_dir: str | Path, workers: int, report: Report | None = None,
                      resume: TrainState | None = None, *, splits: Mapping[str, Rows] | None = None,
                      use_gpu: bool = False, cpus_per_worker: float = 1.0,
                      zero_options: dict[str, Any] | None = None, storage_path: str | None = None,
                      timeout_s: float | None = None, may_stop: MayStop | None = None) -> TrialResult:
    """Train and evaluate one hypothesis on `workers` Ray Train workers sharing the frozen model.

    Args:
        workers: Train workers (GPUs with use_gpu); the model is cut into this many slices.
        report / resume: as for `alignment.trial.run_trial`.
        splits: train/dev/test rows built once by the caller (else each worker builds them).
        zero_options: overrides of DeepSpeed's `zero_optimization` (e.g. persistence threshold).
        storage_path: where Ray Train keeps checkpoints (shared storage on multi-node clusters).
        timeout_s: give up after this many seconds (ShardedTrialStopped); the Train run then stops at
            its next report, or when its collectives time out if a worker hangs.
        may_stop: as for `alignment.trial.run_trial`; it runs on every worker (the test evaluations
            are collectives, so all must decide alike: it may read only the row), hence picklable.
    Returns:
        The result (also written to output_dir/summary.json), with `workers` and `parameter_share_per_worker`.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_model_folder(config.model_path)
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    storage = Path(storage_path) if storage_path else output / ".ray_train"
    model_path = config.model_path if hub_id(config.model_path) else os.path.abspath(config.model_path)
    payload = {"config": replace(config, model_path=model_path), "splits": splits,
               "resume": resume, "use_gpu": use_gpu, "zero_options": zero_options,
               "checkpoints": report is not None, "may_stop": may_stop}
    relay = _Relay.create()
    try:
        fit = _FitThread(_trainer(payload, workers, use_gpu, cpus_per_worker, str(storage), relay))
        fit.start()
        folder = _OutputFolder(output, append=resume is not None)
        summary = _relay_reports(relay, fit, folder, report, timeout_s)
    finally:
        relay.close()
        if storage_path is None:
            shutil.rmtree(storage, ignore_errors=True)
    return summary


def _check_model_folder(model_path: str) -> None:
    """Refuse here, in one line, what every worker would otherwise fail on after Ray Train started."""
    path = local_path(model_path)  # a Hub id: its snapshot here (each worker resolves it from its own cache)
    if path.is_file() and path.suffix == ".gguf":
        raise ModelLoadError(f"a sharded trial must load a Hugging Face model folder, got the GGUF file "
                             f"{model_path!r}; convert it once with alignment.models.convert_gguf")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model path must be a Hugging Face model folder readable by every worker, got "
                             f"{model_path!r} (no config.json there)")


def _trainer(payload: dict[str, Any], workers: int, use_gpu: bool, cpus_per_worker: float, storage: str,
             relay: _Relay) -> Any:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        train_worker, train_loop_config=payload,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"sharded-{uuid.uuid4().hex[:8]}", storage_path=storage,
            callbacks=cast(list[Any], [relay, PlacementGroupJanitor()]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=0)))


class _FitThread(threading.Thread):
    """`trainer.fit()` in the background, so the calling thread can relay reports meanwhile."""

    def __init__(self, trainer: Any):
        super().__init__(daemon=True, name="sharded-trial-fit")
        self.trainer = trainer
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as error:  # handed to the calling thread, which raises it
            self.error = error


def _relay_reports(relay: _Relay, fit: _FitThread, folder: _OutputFolder, report: Report | None,
                   timeout_s: float | None) -> TrialResult:
    """Handle each report from rank 0 in this thread until the Train run ends; return the result."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    summary: TrialResult | None = None
    try:
        while fit.is_alive() or not relay.empty():
            if deadline is not None and time.monotonic() > deadline:
                raise ShardedTrialStopped(f"the sharded trial did not finish within {timeout_s} s")
            item = relay.next(timeout_s=1.0)
            if item is None:
                continue
            message, checkpoint = item
            folder.add(message)
            if message.get("final"):
                summary = folder.finish(TrialResult.from_dict(message["summary"]), checkpoint)
            elif report is not None:
                report(dict(message["row"]), _snapshot_of(checkpoint))
            relay.reply("continue")
    except BaseException:
        relay.reply("stop")  # the controller, waiting on the reply, aborts the run and frees the workers
        fit.join(timeout=60)
        raise
    fit.join()
    if fit.error is not None:
        cause = worker_error(fit.error)
        raise cause from (fit.error if cause is not fit.error else None)
    if summary is None:
        raise RuntimeError("the sharded trial ended without its final report")
    return summary


def worker_error(error: BaseException) -> BaseException:
    """The exception a worker raised (a PositionError, TrialDiverged, ...) rather than Ray's wrapper of it.

    A sharded trial then fails with the same exception as an unsharded one; Ray's own errors
    (a worker process that died, a controller error) come through as they are.
    """
    from ray.exceptions import RayError

    failures = getattr(error, "worker_failures", None)
    if failures:
        first = failures[min(failures)]
        if isinstance(first, Exception) and not isinstance(first, RayError):
            return first
    return error


def _snapshot_of(checkpoint: Any) -> Any:
    def snapshot() -> TrainState:
        if checkpoint is None:
            raise RuntimeError("this report carries no checkpoint")
        with checkpoint.as_directory() as directory:
            return load_train_state(Path(directory) / TRAIN_STATE)
    return snapshot


class _OutputFolder:
    """The trial folder, written as rank 0's reports arrive: the same files as run_trial writes."""

    def __init__(self, output: Path, append: bool):
        self.output = output
        (output / "metrics.jsonl").open("a" if append else "w").close()

    def add(self, message: Mapping[str, Any]) -> None:
        if "config_json" in message:
            atomic_write_text(self.output / "config.json", message["config_json"])
        if message.get("metrics_lines"):
            with open(self.output / "metrics.jsonl", "a") as metrics:
                metrics.write(message["metrics_lines"])

    def finish(self, summary: TrialResult, checkpoint: Any) -> TrialResult:
        with checkpoint.as_directory() as directory:
            target = self.output / INTERVENTION
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(Path(directory) / INTERVENTION, target)
        atomic_write_text(self.output / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
        return summary


class _Relay(UserCallback):
    """Runs in the Train controller: hands rank 0's reports to the calling process, one at a time.

    `after_report` puts (rank 0's metrics, checkpoint) on one Ray queue and waits for the
    caller's reply on another; "stop" raises, which ends the Train run (max_failures=0).
    The queues are actors owned by the calling process: if it dies, the run fails too.
    """

    def __init__(self, reports: Any, replies: Any):
        self.reports, self.replies = reports, replies

    @classmethod
    def create(cls) -> _Relay:
        from ray.util.queue import Queue
        options = {"num_cpus": 0}
        return cls(Queue(maxsize=1, actor_options=options), Queue(maxsize=1, actor_options=options))

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        self.reports.put((metrics[0], checkpoint))
        reply = self.replies.get()
        if reply != "continue":
            raise ShardedTrialStopped("the calling process stopped the sharded trial")

    # the calling process's side
    def next(self, timeout_s: float) -> tuple[dict[str, Any], Any] | None:
        from ray.util.queue import Empty
        try:
            return self.reports.get(timeout=timeout_s)
        except Empty:
            return None

    def empty(self) -> bool:
        return bool(self.reports.empty())

    def reply(self, answer: str) -> None:
        from ray.util.queue import Full
        with contextlib.suppress(Full):  # a reply is already waiting
            self.replies.put(answer, block=False)

    def close(self) -> None:
        import ray
        for queue in (self.reports, self.replies):
            ray.kill(queue.actor)
