"""The full grid end to end: every token x every component x every layer, a position group, on Ray Tune."""

from __future__ import annotations

import csv

import pytest

from alignment.results import TrialResult
from search.cli import main
from tests.integration.conftest import planted_sweep_args
from tests.integration.test_sweep import runs_of

pytestmark = pytest.mark.slow


def test_every_token_and_component_sweep_reports_components_and_token_labels(planted_model, tmp_path, capsys):
    folder = tmp_path / "grid"
    args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo",
                              "--set", 'hypotheses.causal_models=["planted"]',
                              "--set", 'hypotheses.positions=["every", ["key", "last"]]',
                              "--set", 'hypotheses.components=["block", "attention", "mlp"]',
                              "--set", "controls.top_k=0")
    assert main(args) == 0
    out = capsys.readouterr().out
    # "{f0} {f1} {f2} {key} =" is five tokens: 6 positions (with the group) x 3 components x 2 layers.
    assert out.startswith("plan: 36 trials to run (1 causal model x 2 layers x 3 components x 6 positions")
    assert "at most about" in out and "ms a training step" in out
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert len(rows) == 36 and all(r["status"] == "finished" for r in rows)
    assert {r["component"] for r in rows} == {"block", "attention", "mlp"}
    labels = {r["position"]: r["position_label"] for r in rows}
    assert labels["-1"] == "-1 '='" and labels["key+last"] == "[key + last]" and len(labels) == 6
    assert all(labels[str(offset)].startswith(f"{offset} '") for offset in range(-5, 0))
    iia = {(r["layer"], r["component"], r["position"]): float(r["test_iia"]) for r in rows}
    # The variable is read at the key and carried to the last token: there, every component's sum is the
    # block output, and at layer 1's block output it is the answer itself.
    assert iia[("1", "block", "-1")] >= 0.9 and iia[("1", "block", "key+last")] >= 0.9
    assert max(iia[("0", component, "-4")] for component in ("block", "attention", "mlp")) <= 0.65  # a filler
    for stem in ("heatmap_planted", "heatmap_planted_attention", "heatmap_planted_mlp"):
        assert (folder / f"{stem}.png").is_file()
    _, children = runs_of(folder)
    params = {run.data.params["position"]: run.data.params for run in children}
    assert params["-1"]["position_label"] == "-1 '='" and {"component"} <= set(params["-1"])
    summary = TrialResult.read(next(folder.glob("trials/*L1.mlp.-1=equals_sign*/summary.json")))
    assert summary.site == "transformer.h.1.mlp" and summary.cached is True
