"""A sweep over a model given by Hugging Face Hub id, offline, from a Hugging Face cache (one trial)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import PLANTED_FILE, ROOT
from tests.unit.search.test_hub_models import cache_repo

pytestmark = pytest.mark.slow


def test_a_one_trial_sweep_by_hub_id_offline(planted_model, tmp_path):
    home = tmp_path / "hf"
    cache_repo(home, "org/planted", planted_model)
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--scheduler", "fifo", "--set", 'model_path="org/planted@main"',
            "--set", f'task="{PLANTED_FILE}:PLANTED"', "--set", 'hypotheses.causal_models=["planted"]',
            "--set", 'hypotheses.layers="1"', "--set", 'hypotheses.positions=["last"]', "--set", "controls.top_k=0",
            "--set", "data.n_train=200", "--set", "data.n_dev=50", "--set", "data.n_test=50",
            "--set", "train.max_steps=30", "--set", "train.eval_every=10", "--set", "resources.concurrency=1"]
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    main = "import sys; from search.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "sweep.json").read_text())["model_path"] == "org/planted@main"
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert [r["status"] for r in rows] == ["finished"]
    assert float(rows[0]["test_iia"]) > 0.5
