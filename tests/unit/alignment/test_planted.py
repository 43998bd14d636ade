"""End to end: DAS finds a variable planted at a known layer and position, and nowhere else.

The task (tests/planted_task.py) plants the variable through the input. A tiny GPT-2 trained
on it for a second reads the key into the last position, whose final hidden state must carry
`in_set` (the unembedding reads the answer from there). At a filler's position the variable
cannot live at any layer: attention is causal and the fillers come before the key.
"""

import pytest

from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.models import LoadedModel
from alignment.taskmodels import TaskModelConfig, train_task_model
from alignment.trial import TrialInputs, run_trial
from tests.planted_task import planted_task


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    task = planted_task()
    result = train_task_model(task, TaskModelConfig(layers=2, hidden=32, steps=150, batch_size=64, lr=1e-2,
                                                    warmup=20, eval_examples=500), progress=False)
    assert result.accuracy["plain"] == 1.0
    return task, LoadedModel(result.model, result.tokenizer, "planted")


def iia(planted, tmp_path, layer, position):
    task, loaded = planted
    config = TrialConfig(model_path="planted", task="unused", layer=layer, position=position,
                         intervention=InterventionConfig(kind="das", subspace_dim=1),
                         train=TrainConfig(batch_size=32, max_steps=100, lr=1e-2, eval_every=50),
                         data=DataConfig(n_train=500, n_dev=100, n_test=200, max_unchanged=0.5))
    from alignment import trial
    original = trial.get_task
    trial.get_task = lambda name: task
    try:
        return run_trial(config, tmp_path / f"L{layer}-{position}", TrialInputs(loaded=loaded))
    finally:
        trial.get_task = original


def test_das_finds_the_planted_variable_and_not_a_wrong_position(planted, tmp_path):
    right = iia(planted, tmp_path, 1, "last")
    assert right.prealign_accuracy == 1.0
    assert right.test_iia >= 0.95
    for layer in (0, 1):
        wrong = iia(planted, tmp_path, layer, "filler")
        # Nothing the answer depends on can be swapped at a filler: the model keeps its base
        # answer, which is right on the unchanged half of the pairs only.
        assert abs(wrong.test_iia - wrong.test_unchanged_share) <= 0.05
        assert wrong.test_iia <= 0.6
