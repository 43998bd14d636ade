import pytest
import torch

from alignment.persistence import InterventionMismatch, load_intervention, model_identity, save_intervention
from tests.helpers import tiny_model
from tests.unit.alignment.test_frozen_paths import interchange_for


def test_save_then_load_gives_identical_logits(tiny_price, tmp_path):
    interchange, pairs = interchange_for(tiny_price, 1, "last")
    with torch.no_grad():
        interchange.intervention.mask.set_share(0.3)
        interchange.intervention.set_temperature(2.5)
        before = interchange.logits(pairs)
    save_intervention(tmp_path, interchange.intervention, {"model": model_identity(tiny_price.model)})
    loaded = load_intervention(tmp_path, tiny_price.model)
    interchange.intervention = loaded.intervention
    with torch.no_grad():
        after = interchange.logits(pairs)
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    assert loaded.description["temperature"] == 2.5 and loaded.description["kind"] == "boundless"


def test_loading_onto_another_model_is_refused_with_the_reason(tiny_price, tmp_path):
    interchange, _ = interchange_for(tiny_price, 0, "last")
    save_intervention(tmp_path, interchange.intervention, {"model": model_identity(tiny_price.model, "tiny")})
    other = tiny_model("llama" if "gpt2" in tiny_price.path else "gpt2", 40, hidden=48)
    with pytest.raises(InterventionMismatch, match="trained on 'tiny'.*has architecture"):
        load_intervention(tmp_path, other)
    wider = tiny_model("gpt2" if "gpt2" in tiny_price.path else "llama", len(tiny_price.tokenizer), hidden=48)
    with pytest.raises(InterventionMismatch, match="hidden_size 48 instead of 32"):
        load_intervention(tmp_path, wider)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="must hold intervention.json"):
        load_intervention(tmp_path / "nothing")


def test_a_2023_boundary_loads_as_one(tmp_path):
    """A share-valued, soft-start boundary (the 2023 mask) is rebuilt as one, not read as a log-share."""
    from alignment.interventions import build_intervention

    swap = build_intervention("boundless", 16, log_boundary=False, soft_start=True)
    swap.mask.set_share(0.3)
    swap.set_temperature(2.0)
    save_intervention(tmp_path, swap, {})
    loaded = load_intervention(tmp_path).intervention
    assert not loaded.mask.log_scale and loaded.mask.soft_start
    torch.testing.assert_close(loaded.mask.weights(), swap.mask.weights(), atol=0, rtol=0)
