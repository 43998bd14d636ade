"""benchmarks/driver_steps.py: the driver's steps before the first trial, each timed once, on a tiny model."""

from __future__ import annotations

import re

from benchmarks.driver_steps import main
from tests.unit.search.cli_run import PLANTED


def test_every_step_before_the_grid_is_timed_and_the_shared_files_profiled(tiny_planted, capsys):
    sets = [f'model_path="{tiny_planted}"', f'task="{PLANTED}"', 'hypotheses.causal_models=["planted"]',
            'hypotheses.positions=["filler", "last"]', "data.n_train=40", "data.n_dev=20", "data.n_test=20"]
    main([part for value in sets for part in ("--set", value)] + ["--profile", "5"])
    printed = capsys.readouterr().out
    steps = dict(re.findall(r"^\| ([a-z ]+) \| (\d+\.\d\d) \|$", printed, flags=re.M))
    assert list(steps) == ["prepare", "load the model", "the shared files", "the probe and the plan line"], printed
    assert "Ray not started" in printed and "build_shared_files" in printed  # cProfile's table names the build
