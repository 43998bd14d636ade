"""`align-search steer` with --source, --generate and --eval, on an intervention aligned where the planted
variable lives (tests/unit/conftest.py `aligned`): the answers must move as the causal model says."""

from __future__ import annotations

import json

from search.cli import main
from tests.planted_task import planted_task

TEMPLATE = planted_task().template()
INSIDE = TEMPLATE.render({"key": "red", "f0": "cat", "f1": "dog", "f2": "cow"}).text  # answer: yes
OUTSIDE = TEMPLATE.render({"key": "navy", "f0": "pig", "f1": "hen", "f2": "fox"}).text  # answer: no


def steer(capsys, *argv: str) -> dict:
    code = main(["steer", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return json.loads(captured.out.strip().splitlines()[-1])


def test_source_based_steering_takes_the_variable_from_the_source(aligned, capsys):
    _, folder = aligned
    result = steer(capsys, str(folder / "run"), "--prompt", OUTSIDE, "--prompt", INSIDE, "--source", INSIDE)
    assert result["answers"] == [{"prompt": OUTSIDE, "without": "no", "with": "yes"},
                                 {"prompt": INSIDE, "without": "yes", "with": "yes"}]
    one_each = steer(capsys, str(folder / "run"), "--prompt", OUTSIDE, "--prompt", INSIDE,
                     "--source", OUTSIDE, "--source", OUTSIDE)
    assert [a["with"] for a in one_each["answers"]] == ["no", "no"]


def test_generate_continues_the_steered_prompt(aligned, capsys):
    _, folder = aligned
    result = steer(capsys, str(folder / "run"), "--prompt", OUTSIDE, "--source", INSIDE, "--generate", "1")
    assert [text.strip() for text in result["generated"]] == ["yes"]
    plain = steer(capsys, str(folder / "run"), "--prompt", OUTSIDE, "--source", OUTSIDE, "--generate", "1")
    assert [text.strip() for text in plain["generated"]] == ["no"]


def test_eval_measures_fixed_value_steering_on_fresh_prompts(aligned, capsys):
    _, folder = aligned
    for value in ("True", "False"):
        success = steer(capsys, str(folder / "run"), "--set", f"in_set={value}", "--eval", "60")["steering_success"]
        assert success["n_flip"] == success["n_keep"] == 60
        assert success["flipped"] >= 0.9 and success["kept"] >= 0.9, (value, success)
