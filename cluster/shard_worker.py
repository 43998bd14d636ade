"""What each Ray Train worker of a sharded trial runs: `alignment.trial.run_trial` on its shard.

Every worker joins the process group, loads its ZeRO-3 slice of the frozen model
(cluster/zero3.py) and calls the same `run_trial` an unsharded trial uses, with a
`TorchDataParallel` that gives it its part of every batch. All workers therefore make the
same calls in the same order, which ZeRO-3 needs (each sharded layer's forward is a
collective), and end with the same replicated intervention.

Only rank 0 writes: it runs `run_trial` in a scratch folder, and at each evaluation sends
the new lines of its metrics.jsonl (and, once, its resolved config.json) with the eval row
through `ray.train.report`; with checkpoints on, the report carries the `TrainState` to
resume from. The last report carries the summary and the intervention folder. Ray Train v2
needs every worker to call `ray.train.report` the same number of times, so the other
workers report too, with nothing in them. The driver (cluster/sharded.py) turns these
reports into the usual trial folder.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alignment.results import TrialResult
from alignment.train import TrainState
from alignment.trial import TrialInputs, run_trial
from cluster.parallel import TorchDataParallel
from cluster.zero3 import load_sharded_model, prepare_deepspeed, zero3_config

TRAIN_STATE = "train_state.pt"
INTERVENTION = "intervention"


def save_train_state(state: TrainState, path: Path) -> None:
    """Write a TrainState as plain tensors and containers (loadable with weights_only=True)."""
    torch.save(dataclasses.asdict(state), path)


def load_train_state(path: Path) -> TrainState:
    return TrainState(**torch.load(path, weights_only=True))


class _RankReports:
    """Report calls of one worker; rank 0's carry the trial's outputs as they appear."""

    def __init__(self, rank: int, folder: Path, checkpoints: bool):
        self.rank, self.folder, self.checkpoints = rank, folder, checkpoints
        self.metrics_offset = 0
        self.config_sent = False

    def eval_report(self, row: dict[str, Any], snapshot: Callable[[], TrainState]) -> None:
        """The `report` of alignment.train: called on every worker after each evaluation."""
        from ray import train as ray_train

        if self.rank != 0:
            ray_train.report({})
            return
        message = {"row": row, **self._news()}
        if not self.checkpoints:
            ray_train.report(message)
            return
        with tempfile.TemporaryDirectory(prefix="align-search-state-") as scratch:
            save_train_state(snapshot(), Path(scratch) / TRAIN_STATE)
            ray_train.report(message, checkpoint=ray_train.Checkpoint.from_directory(scratch))

    def final_report(self, summary: TrialResult) -> None:
        """The last report: the summary, and the intervention folder as the checkpoint."""
        from ray import train as ray_train

        if self.rank != 0:
            ray_train.report({})
            return
        with tempfile.TemporaryDirectory(prefix="align-search-final-") as scratch:
            shutil.copytree(self.folder / INTERVENTION, Path(scratch) / INTERVENTION)
            ray_train.report({"final": True, "summary": summary.to_dict(), **self._news()},
                             checkpoint=ray_train.Checkpoint.from_directory(scratch))

    def _news(self) -> dict[str, Any]:
        news: dict[str, Any] = {}
        if not self.config_sent:
            news["config_json"] = (self.folder / "config.json").read_text()
            self.config_sent = True
        metrics = self.folder / "metrics.jsonl"
        with open(metrics, "rb") as lines:
            lines.seek(self.metrics_offset)
            text = lines.read()
        complete = text[:text.rfind(b"\n") + 1]  # whole lines only
        self.metrics_offset += len(complete)
        news["metrics_lines"] = complete.decode()
        return news


def train_worker(payload: dict[str, Any]) -> None:
    """The Ray Train loop of one worker (`train_loop_per_worker`); `payload` is built by run_sharded_trial."""
    from ray import train as ray_train

    rank = ray_train.get_context().get_world_rank()
    prepare_deepspeed(payload["use_gpu"])
    config = payload["config"]
    sharded = load_sharded_model(config, zero3_config(config.train.bf16, payload["zero_options"]))
    parallel = TorchDataParallel()
    with tempfile.TemporaryDirectory(prefix=f"align-search-rank{rank}-") as scratch:
        reports = _RankReports(rank, Path(scratch), payload["checkpoints"])
        inputs = TrialInputs(loaded=sharded.loaded, splits=payload["splits"], cache_dir=None)
        summary = run_trial(config, scratch, inputs, report=reports.eval_report, resume=payload["resume"],
                            parallel=parallel, may_stop=payload.get("may_stop"))
        reports.final_report(dataclasses.replace(summary, workers=parallel.world_size,
                                                 parameter_share_per_worker=round(sharded.local_share(), 4)))
