"""Steering with a found alignment, on the planted task (tests/planted_task.py; `aligned` in tests/unit/conftest.py)."""

import pytest

from alignment.persistence import InterventionMismatch
from alignment.steering import Steer, answer_with, generate_with, load_steering, locate, steering_success
from search.cli import main
from tests.helpers import tiny_model
from tests.planted_task import planted_task


def test_fixed_value_steering_follows_the_causal_model(aligned):
    result, folder = aligned
    saved = load_steering(folder / "run", result.model)
    for value in (True, False):
        success = steering_success(result.model, result.tokenizer, [Steer(saved, "in_set", value=value)], n=100)
        assert success.flipped >= 0.9 and success.kept >= 0.9 and success.n_flip == success.n_keep == 100


def test_source_based_steering_and_generation(aligned):
    result, folder = aligned
    saved = load_steering(folder / "run", result.model)
    template = planted_task().template()
    inside = {"key": "red", "f0": "cat", "f1": "dog", "f2": "cow"}
    outside = {**inside, "key": "navy"}
    prompts = [template.render(outside)] * 2
    steer = Steer(saved, "in_set", sources=[template.render(inside)] * 2)
    plain, steered = answer_with(result.model, result.tokenizer, prompts, [steer], ["no", "yes"])
    assert plain == ["no", "no"] and steered == ["yes", "yes"]
    generated = generate_with(result.model, result.tokenizer, prompts, [steer], max_new_tokens=1)
    assert [g.strip() for g in generated] == ["yes", "yes"]
    assert locate(saved, prompts[0].text).positions == prompts[0].positions


def test_shared_folder_loads_and_steers_like_the_run(aligned, tmp_path, capsys):
    result, folder = aligned
    assert main(["share", str(folder / "run"), "--out", str(tmp_path / "shared")]) == 0
    card = (tmp_path / "shared" / "README.md").read_text()
    assert "in_set" in card and "config hash" in card
    prompt = planted_task().template().render({"key": "navy", "f0": "cat", "f1": "dog", "f2": "cow"}).text
    capsys.readouterr()
    assert main(["steer", str(tmp_path / "shared"), "--model", str(folder / "model"), "--prompt", prompt,
                 "--set", "in_set=True"]) == 0
    assert '"with": "yes"' in capsys.readouterr().out


def test_steer_cli_and_refusal_on_another_model(aligned, capsys):
    result, folder = aligned
    prompt = planted_task().template().render({"key": "navy", "f0": "cat", "f1": "dog", "f2": "cow"}).text
    assert main(["steer", str(folder / "run"), "--prompt", prompt, "--set", "in_set=True"]) == 0
    out = capsys.readouterr().out
    assert '"without": "no"' in out and '"with": "yes"' in out
    with pytest.raises(InterventionMismatch, match="trained on"):
        load_steering(folder / "run", tiny_model("llama", len(result.tokenizer)))
