"""Every sweep README.md tells a user to run is planned as written, with `--plan`: the shipped model's layers
and hidden size, the grid, the data at the configured sizes and every position in every prompt are checked
(`.ci/run` runs the first one for real). docs/smollm2-ioi.toml is planned in tests/integration/test_smollm2.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from search.cli import main

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
MAIN = re.search(r"```bash\n.*?&& \.venv/bin/align-search (sweep[^\n]*)\n", README, flags=re.DOTALL).group(1)
SWEEPS = [MAIN] + [command for command in re.findall(r"`(?:\.venv/bin/)?align-search (sweep[^`]*)`", README)
                   if not re.search(r"\[[A-Z-]", command) and "--print-config" not in command]  # not the synopsis


def plan(capsys, command: str) -> str:
    code = main([*shlex.split(command), "--plan"])
    captured = capsys.readouterr()
    assert code == 0, f"`align-search {command} --plan` exit {code}: {captured.err[-2000:]}"
    return captured.out


def test_the_readme_names_its_sweeps():
    assert MAIN == "sweep"
    tasks = {match.group(1) for command in SWEEPS if (match := re.search(r"task=\"(\w+)\"", command))}
    assert {"hierarchical_equality", "word_logic"} <= tasks, SWEEPS


@pytest.mark.parametrize("command", sorted(set(SWEEPS) - {MAIN}))  # the main one: the test after
def test_a_readme_sweep_plans_on_its_shipped_model(capsys, command):
    out = plan(capsys, command)
    assert out.startswith("plan of sweep") and "nothing was trained or started" in out
    trials = int(re.search(r": (\d+) grid trials", out).group(1))
    assert trials > 0


def test_the_main_sweep_plans_the_grid_the_readme_describes(capsys):
    """README: four causal models x every layer x six named positions = 72 trials, pairs balanced 50/50."""
    out = plan(capsys, MAIN)
    assert ": 72 grid trials on " in out and "(3 decoder layers" in out
    for name in ("left_boundary", "right_boundary", "mid_point_distance", "bracket_identity"):
        line = next(line for line in out.splitlines() if line.strip().startswith(f"{name}:"))
        assert "18 trials, layers 0, 1, 2" in line and "{'False': 0.5, 'True': 0.5}" in line, line
    printed = main(["sweep", "--print-config"])
    assert printed == 0 and 'task = "price_tagging"' in capsys.readouterr().out.splitlines()


def test_a_plan_refuses_a_layer_the_model_does_not_have(capsys):
    code = main(["sweep", "--set", "hypotheses.layers=[7]", "--plan"])
    assert code == 2 and "hypotheses.layers" in capsys.readouterr().err
