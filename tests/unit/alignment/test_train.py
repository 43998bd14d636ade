import copy

import pytest
import torch

from alignment.config import InterventionConfig, TrainConfig
from alignment.train import TrialDiverged, learning_rate_factor, temperature_at, total_steps, train
from tests.unit.alignment.test_frozen_paths import interchange_for


def test_schedules():
    config = InterventionConfig()
    assert temperature_at(0, 100, config) == 50.0
    assert temperature_at(99, 100, config) == pytest.approx(0.1)
    assert torch.tensor(temperature_at(50, 100, config)).dtype == torch.float32
    factors = [learning_rate_factor(s, 100, 0.1) for s in range(100)]
    assert factors[9] == 1.0 and factors[0] == 0.1 and factors[-1] == pytest.approx(1 / 90)
    assert total_steps(1000, TrainConfig(batch_size=10, gradient_accumulation=4, epochs=2)) == 50


def test_gradient_accumulation_uses_every_batch(tiny_price, monkeypatch):
    """Two micro-batches of 4 give the gradient of one batch of 8 (the 2023 code dropped half)."""
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    start = copy.deepcopy(interchange.intervention.state_dict())
    grads = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):  # the gradient the optimizer is about to apply
        grads.append(interchange.intervention.basis.generator.grad.clone())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    for batch_size, accumulation in ((8, 1), (4, 2)):
        interchange.intervention.load_state_dict(start)
        config = TrainConfig(batch_size=batch_size, gradient_accumulation=accumulation, max_steps=1, eval_every=1,
                             lr=1e-9, boundary_lr=1e-9, warmup=0.0)
        train(interchange, pairs, pairs, torch.tensor([0, 1]), InterventionConfig(width_penalty=0.0), config)
    assert len(grads) == 2
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_resume_continues_exactly(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    answers = interchange.frozen.table.input_ids.new_tensor(
        sorted({int(x) for x in torch.cat([pairs.pairs.labels, pairs.pairs.base_labels])}))
    start = copy.deepcopy(interchange.intervention.state_dict())
    config = TrainConfig(batch_size=4, max_steps=6, eval_every=3, log_every=1)
    straight = train(interchange, pairs, pairs, answers, InterventionConfig(), config)
    interchange.intervention.load_state_dict(start)
    saved = {}
    def report(row, snapshot):
        if row["step"] == 3:
            saved["state"] = copy.deepcopy(snapshot())
    train(interchange, pairs, pairs, answers, InterventionConfig(), config, report=report)
    interchange.intervention.load_state_dict(start)
    resumed = train(interchange, pairs, pairs, answers, InterventionConfig(), config, resume=saved["state"])
    for key in straight.best_intervention:
        torch.testing.assert_close(straight.best_intervention[key], resumed.best_intervention[key])
    assert [r["dev_iia"] for r in straight.history] == [r["dev_iia"] for r in resumed.history]


def test_a_nan_loss_stops_the_trial_as_diverged(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    with torch.no_grad():
        interchange.intervention.basis.generator.fill_(float("nan"))
    with pytest.raises(TrialDiverged, match="loss became nan at step 1"):
        train(interchange, pairs, pairs, torch.tensor([0, 1]), InterventionConfig(), TrainConfig(max_steps=2))


def test_boundaries_stay_in_range_and_the_rotation_orthogonal(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    train(interchange, pairs, pairs, torch.tensor([0, 1]), InterventionConfig(width_penalty=5.0),
          TrainConfig(batch_size=8, max_steps=30, boundary_lr=0.2, eval_every=30))
    boundaries = interchange.intervention.mask.boundaries.detach()
    assert ((boundaries >= 0) & (boundaries <= 1)).all()
    rotation = interchange.intervention.basis.compute().detach()
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(rotation.shape[0]), atol=1e-4, rtol=0)
