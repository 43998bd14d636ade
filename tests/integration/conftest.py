"""Fixtures for the slow tests: a planted-task model on disk, sweep configs, process cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from alignment.taskmodels import TaskModelConfig, train_task_model
from tests.planted_task import planted_task

PLANTED_FILE = Path(__file__).resolve().parents[1] / "planted_task.py"


@pytest.fixture(scope="session")
def planted_model(tmp_path_factory) -> Path:
    """A tiny GPT-2 that solves the planted task, saved as a Hugging Face folder."""
    out = tmp_path_factory.mktemp("planted_model")
    result = train_task_model(planted_task(), TaskModelConfig(layers=2, hidden=32, heads=2, steps=150, batch_size=64,
                                                              lr=1e-2, warmup=20, eval_examples=500, threads=1),
                              out=out, progress=False)
    assert result.accuracy["plain"] == 1.0
    return out


def planted_sweep_args(model: Path, out: Path, *extra: str) -> list[str]:
    """CLI arguments of a small sweep over the planted task."""
    return ["sweep", "--out", str(out),
            "--set", f'model_path="{model}"', "--set", f'task="{PLANTED_FILE}:PLANTED"',
            "--set", 'hypotheses.causal_models=["planted", "key_low"]',
            "--set", 'hypotheses.positions=["filler", "last"]', "--set", 'hypotheses.layers="all"',
            "--set", 'intervention.kind="das"', "--set", 'hypotheses.interventions=["das"]',
            "--set", "intervention.subspace_dim=1",
            "--set", "data.n_train=300", "--set", "data.n_dev=100", "--set", "data.n_test=100",
            "--set", "train.max_steps=60", "--set", "train.eval_every=10", "--set", "train.batch_size=32",
            "--set", "train.lr=0.01", "--set", "resources.concurrency=2", *extra]


def kill_group(pgid: int) -> None:
    """Kill every process of a process group this test started (never a broad name)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
