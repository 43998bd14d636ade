import json

import pytest
import torch

from alignment.config import InterventionConfig
from alignment.config_io import ConfigError
from alignment.interventions import build_intervention
from alignment.persistence import (
    InterventionFileError,
    InterventionMismatch,
    load_intervention,
    model_identity,
    save_intervention,
)
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
    assert loaded.description.temperature == 2.5 and loaded.description.intervention.kind == "boundless"


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
    swap = build_intervention("boundless", 16, log_boundary=False, soft_start=True)
    swap.mask.set_share(0.3)
    swap.set_temperature(2.0)
    save_intervention(tmp_path, swap, {})
    loaded = load_intervention(tmp_path).intervention
    assert not loaded.mask.log_scale and loaded.mask.soft_start
    torch.testing.assert_close(loaded.mask.weights(), swap.mask.weights(), atol=0, rtol=0)


CONTEXT = {"task": "price_tagging", "causal_model": "left_boundary", "variables": ["left_boundary"],
           "template": None, "site": "transformer.h.1", "layer": 1, "position": "last", "source_position": "last",
           "model": {"name": "tiny"}, "metrics": {"test_iia": 0.9}}


def test_intervention_json_holds_the_config_it_was_trained_with(tmp_path):
    swap = build_intervention("das", 16, 2, subspace_dim=3)
    trained = InterventionConfig(kind="das", subspace_dim=3, width_penalty=0.5, temperature_curve="linear")
    save_intervention(tmp_path, swap, CONTEXT, trained)
    written = json.loads((tmp_path / "intervention.json").read_text())
    assert written["intervention"]["width_penalty"] == 0.5 and written["intervention"]["subspace_dim"] == 3
    description = load_intervention(tmp_path).description
    assert description.intervention == trained and description.variables == ("left_boundary",)
    assert (description.version, description.width, description.boundary_widths) == (2, 6, (3, 3))


def test_an_intervention_json_with_an_unknown_key_is_refused_in_one_line(tmp_path):
    save_intervention(tmp_path, build_intervention("boundless", 16), CONTEXT)
    path = tmp_path / "intervention.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "colour": "blue"}))
    with pytest.raises(InterventionFileError, match=r"must describe an intervention align-search saved: unknown "
                                                    r"key\(s\) \['colour'\]") as error:
        load_intervention(tmp_path)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['layers'\]"):  # a typo in what is saved, too
        save_intervention(tmp_path / "again", build_intervention("boundless", 16), {"layers": 1})


def test_a_format_1_intervention_json_still_loads(tmp_path):
    """Format 1 kept the config's fields at the top level (its keys are a subset of what format 2 reads
    once those are gathered into `intervention`); one saved before the boundary form was recorded has
    the 2023 boundary (a share, soft start)."""
    swap = build_intervention("boundless", 16, log_boundary=False, soft_start=True, rotation_map="matrix_exp")
    swap.mask.set_share(0.3)
    save_intervention(tmp_path, swap, CONTEXT)
    path = tmp_path / "intervention.json"
    new = json.loads(path.read_text())
    old = {k: v for k, v in new.items() if k not in ("intervention", "version")}
    old.update(version=1, kind="boundless", rotation_map="matrix_exp", subspace_dim=None)  # as format 1 wrote it
    path.write_text(json.dumps(old))
    loaded = load_intervention(tmp_path)
    assert loaded.description.intervention == InterventionConfig(rotation_map="matrix_exp", log_boundary=False,
                                                                 soft_start=True)
    assert loaded.description.task == "price_tagging" and loaded.description.metrics == {"test_iia": 0.9}
    torch.testing.assert_close(loaded.intervention.mask.weights(), swap.mask.weights(), atol=0, rtol=0)
    torch.testing.assert_close(loaded.intervention.basis.matrix(), swap.basis.matrix(), atol=0, rtol=0)
