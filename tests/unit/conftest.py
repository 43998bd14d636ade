"""A planted-task model that solves its task and an intervention aligned on it, trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.models import LoadedModel
from alignment.results import TrialResult
from alignment.taskmodels import TaskModelConfig, train_task_model
from alignment.trial import TrialInputs, run_trial
from tests.planted_task import planted_task

TASK_SPEC = f"{Path(__file__).resolve().parents[1] / 'planted_task.py'}:PLANTED"


@pytest.fixture(scope="session")
def aligned(tmp_path_factory):
    """(the trained model, its folder): `model/` solves the planted task; `run/` holds a DAS intervention
    trained on it at layer 1, last position, where the planted variable lives (test IIA >= 0.95)."""
    folder = tmp_path_factory.mktemp("steer")
    result = train_task_model(planted_task(), TaskModelConfig(layers=2, hidden=32, heads=2, steps=150, batch_size=64,
                                                              lr=1e-2, warmup=20, eval_examples=300, threads=1),
                              out=folder / "model", progress=False)
    config = TrialConfig(model_path=str(folder / "model"), task=TASK_SPEC, layer=1, position="last",
                         intervention=InterventionConfig(kind="das", subspace_dim=1),
                         train=TrainConfig(batch_size=32, max_steps=80, lr=1e-2, eval_every=40),
                         data=DataConfig(n_train=300, n_dev=100, n_test=100, max_unchanged=0.5))
    summary = run_trial(config, folder / "run", TrialInputs(LoadedModel(result.model, result.tokenizer, "m")))
    assert summary.test_iia >= 0.95
    assert TrialResult.read(folder / "run" / "summary.json") == summary  # the file is the result, field for field
    return result, folder
