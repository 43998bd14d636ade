import copy
from dataclasses import replace

import pytest
import torch

from alignment.config import PAPER_2023, InterventionConfig, TrainConfig
from alignment.interventions import Boundary
from alignment.train import (
    TrialDiverged,
    anneal_steps,
    learning_rate_factor,
    mask_hard_step,
    penalty_weight_at,
    temperature_at,
    total_steps,
    train,
)
from tests.unit.alignment.test_frozen_paths import interchange_for

BLOCKS = (64, 128, 576, 768, 4096)


def test_the_2023_schedule_is_reachable_by_config():
    config = PAPER_2023.intervention
    assert temperature_at(0, 100, config) == 50.0
    assert temperature_at(99, 100, config) == pytest.approx(0.1)
    assert all(temperature_at(10, 100, config, block) == temperature_at(10, 100, config) for block in BLOCKS)
    assert torch.tensor(temperature_at(50, 100, config)).dtype == torch.float32
    assert penalty_weight_at(0, 100, config) == 1.0
    factors = [learning_rate_factor(s, 100, 0.1) for s in range(100)]
    assert factors[9] == 1.0 and factors[0] == 0.1 and factors[-1] == pytest.approx(1 / 90)
    assert total_steps(1000, TrainConfig(batch_size=10, gradient_accumulation=4, epochs=2)) == 50


def test_default_temperature_starts_relative_to_the_block_and_ends_in_coordinates():
    config = InterventionConfig()
    end = anneal_steps(300, config) - 1
    assert end == round(config.anneal_share * 300) - 1
    for block in BLOCKS:
        temperatures = [temperature_at(step, 300, config, block) for step in range(300)]
        assert temperatures[0] == pytest.approx(config.temperature_start * block)
        assert temperatures[end:] == [pytest.approx(config.temperature_end)] * (300 - end)
        assert all(a >= b for a, b in zip(temperatures, temperatures[1:]))


def soft_and_hard(block: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-variable mask with its boundary halfway between two coordinates (the hardest case for T)."""
    mask = Boundary(1, block)
    mask.set_share((block // 3) / block)
    mask.temperature.fill_(temperature)
    with torch.no_grad():
        soft = mask.weights()
        with mask.hard_mode():
            return soft, mask.weights()


@pytest.mark.parametrize("config", [InterventionConfig(), PAPER_2023.intervention], ids=["default", "2023"])
def test_from_mask_hard_step_on_every_block_size_is_near_hard(config):
    """The soft mask is within 0.1 of the hard one at every coordinate, whatever the block, from that step on."""
    step = mask_hard_step(300, config)
    for block in BLOCKS:
        for later in (step, 299):
            soft, hard = soft_and_hard(block, temperature_at(later, 300, config, block))
            assert (soft - hard).abs().max() <= 0.1
    soft, hard = soft_and_hard(4096, temperature_at(step - 20, 300, config, 4096))
    assert (soft - hard).abs().max() > 0.1


def test_mask_hard_step_under_the_defaults_and_2023():
    assert mask_hard_step(300, PAPER_2023.intervention) == 299
    default = InterventionConfig()
    assert mask_hard_step(300, default) == anneal_steps(300, default) - 1
    assert mask_hard_step(300, replace(default, temperature_end=0.5)) == 300  # never near-hard


def test_learning_rate_floor_and_penalty_warmup():
    factors = [learning_rate_factor(s, 100, 0.1, floor=0.25) for s in range(100)]
    assert factors[9] == 1.0 and factors[-1] == pytest.approx(0.25 + 0.75 / 90)
    assert all(factor == 1.0 for factor in (learning_rate_factor(s, 100, 0.1, floor=1.0) for s in range(9, 100)))
    ramp = replace(InterventionConfig(), width_penalty=2.0, penalty_warmup=0.5)
    assert [penalty_weight_at(s, 100, ramp) for s in (0, 25, 50, 99)] == [0.0, 1.0, 2.0, 2.0]


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
    shares = interchange.intervention.mask.share().detach()
    assert ((shares >= 0) & (shares <= 1)).all()
    rotation = interchange.intervention.basis.compute().detach()
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(rotation.shape[0]), atol=1e-4, rtol=0)


def test_the_best_state_is_one_trained_under_a_near_hard_mask(tiny_price):
    """A soft-phase state, however good its hard-mask IIA, gives way to the first near-hard one."""
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    config = TrainConfig(batch_size=4, max_steps=10, eval_every=1)
    result = train(interchange, pairs, pairs, torch.tensor([0, 1]), InterventionConfig(), config)
    hard_step = mask_hard_step(10, InterventionConfig())
    assert [row["mask_hard"] for row in result.history] == [step >= hard_step for step in range(1, 11)]
    best_hard = max(row["dev_iia"] for row in result.history if row["mask_hard"])
    assert result.best_step >= hard_step and result.best_dev_iia == best_hard


def test_each_evaluation_says_where_the_best_state_is(tiny_price):
    """`best_step` in every evaluation row; the first near-hard evaluation always takes the best state."""
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    result = train(interchange, pairs, pairs, torch.tensor([0, 1]), InterventionConfig(),
                   TrainConfig(batch_size=4, max_steps=10, eval_every=1))
    first_hard = next(row for row in result.history if row["mask_hard"])
    assert first_hard["best_step"] == first_hard["step"]
    assert result.history[-1]["best_step"] == result.best_step


def test_a_stopped_trial_is_scored_at_the_best_state_even_when_the_best_dev_iia_fell(monkeypatch):
    """The first near-hard evaluation replaces a better soft-phase state: best.json must follow it, or a trial
    stopped there is scored (test IIA, widths) at a state the verdict's rule no longer counts as its best."""
    from types import SimpleNamespace

    import alignment.trial as trial_module

    monkeypatch.setattr(trial_module, "correct_per_pair",
                        lambda *args: (torch.tensor([True, False]), torch.tensor([True, False])))
    mask = SimpleNamespace(sizes=lambda: [3])
    trial = SimpleNamespace(interchange=SimpleNamespace(intervention=SimpleNamespace(mask=mask, hidden_size=8)),
                            positioned={"test": None}, data=SimpleNamespace(answer_ids=None),
                            config=SimpleNamespace(variables=("v",), train=SimpleNamespace(eval_batch_size=2)),
                            floors={"no_op": 0.5})
    seen = []
    report = trial_module._with_test_at_best(lambda row, snapshot: seen.append(row), trial, None)
    for step, dev, best_dev, best_step in ((1, 0.6, 0.6, 1), (2, 0.5, 0.5, 2), (3, 0.4, 0.5, 2), (4, 0.55, 0.55, 4)):
        report({"step": step, "dev_iia": dev, "best_dev_iia": best_dev, "best_step": best_step, "final": False},
               lambda: None)
    assert [row["test_at_best"]["step"] for row in seen if "test_at_best" in row] == [1, 2, 4]
    assert seen[1]["test_at_best"]["boundary_widths"] == {"v": 3}
