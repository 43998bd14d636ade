"""The benchmark's own checks: the floor computes the un-intervened loss, memory is read right,
mismatched first-step losses stop the run, and (with pyvene installed) the equal-work check
passes on a tiny shape. No test here times anything."""

import sys

import pytest
import torch
import torch.nn.functional as F

from alignment.batches import build_trial_data
from alignment.frozen import FrozenSite
from alignment.sites import layer_site
from benchmarks import sweep
from benchmarks.common import floor_step, peak_step_bytes, price_tagging_pairs
from benchmarks.pyvene_steps import single_token, unit_locations
from benchmarks.trial_vs_pyvene import Variant, check_first_losses, main
from causal_models import get_task, make_splits, to_dataset


@pytest.mark.parametrize("layer", [0, 1])
def test_floor_is_the_unintervened_step(tiny_price, layer):
    pairs = price_tagging_pairs(tiny_price.tokenizer, "compact", 8, "last")
    model = tiny_price.model
    frozen = FrozenSite(model, layer_site(model, layer), pairs.data.table)
    train = pairs.data.split("train")
    loss = floor_step(frozen, train.base_rows, train.labels)
    with torch.no_grad():
        logits = model(input_ids=pairs.data.table.input_ids[train.base_rows]).logits[:, -1]
    assert loss == pytest.approx(float(F.cross_entropy(logits, train.labels)), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_peak_step_bytes_sees_a_temporary_tensor():
    def step():
        scratch = torch.ones(1000, 1000)                    # 4,000,000 bytes, freed at return
        return float(scratch.sum())

    peak = peak_step_bytes(step, torch.device("cpu"))
    assert 4_000_000 <= peak < 4_200_000


def test_first_step_losses_must_agree():
    agree = [Variant("pyvene-tutorial/das", "das", None, losses=[10.5]),
             Variant("align-search/das", "das", None, losses=[10.5 + 1e-6])]
    assert check_first_losses(agree, 1e-4)["das"]["max_difference"] < 1e-5
    differ = [Variant("pyvene-tutorial/das", "das", None, losses=[10.5]),
              Variant("align-search/das", "das", None, losses=[10.6])]
    with pytest.raises(SystemExit, match="EQUAL-WORK CHECK FAILED"):
        check_first_losses(differ, 1e-4)


def test_equal_work_check_passes_on_a_tiny_shape():
    pytest.importorskip("pyvene")
    report = main(["--models", "gpt2-tiny", "--layers", "1", "--check-only", "--no-uncached"])
    check = report["models"]["gpt2-tiny"]["layers"][0]["check"]
    assert set(check["first_step_losses"]) == {"das", "boundless"}
    assert check["align-search/boundless"]["intervention_max_difference"] < 1e-5


def test_pyvene_locations_are_one_int_only_where_every_site_is_the_same_token():
    same = torch.tensor([[5], [5], [5]])
    assert single_token(same, same) == 5
    assert unit_locations(same, same, single_token(same, same)) == 5
    base, source = torch.tensor([[5], [7], [6]]), torch.tensor([[4], [5], [6]])
    assert single_token(base, same) is None and single_token(same, source) is None
    assert single_token(torch.tensor([[5, 6]]), torch.tensor([[5, 6]])) is None      # a group: two tokens
    # pyvene's form: (sources, bases), each a list over interventions of a list over the batch of token lists
    assert unit_locations(base, source, None) == ([[[4], [5], [6]]], [[[5], [7], [6]]])


def test_sweep_benchmark_says_how_to_make_a_missing_model(tmp_path):
    with pytest.raises(SystemExit, match="convert-gguf smollm2 --out models/smollm2-135m-instruct"):
        sweep.parse_args(["--grid", "ioi", "--model", str(tmp_path / "missing")])


def test_sweep_benchmark_runs_the_toml_with_its_own_learning_rates(tmp_path):
    args = sweep.parse_args(["--grid", "ioi", "--model", str(tmp_path), "--layers", "21", "--positions",
                             "last,name1", "--steps", "4"])
    command = sweep.sweep_command(args, tmp_path / "sweep")
    assert command[1:3] == ["sweep", str(sweep.ROOT / "docs" / "smollm2-ioi.toml")]
    settings = dict(s.split("=", 1) for s in command[command.index("--out") + 2:] if s != "--set")
    assert settings["hypotheses.layers"] == "[21]" and settings["train.max_steps"] == "4"
    assert settings["hypotheses.positions"] == '["last", "name1"]' and settings["controls.top_k"] == "0"
    assert not any(key.startswith(("train.lr", "train.boundary_lr", "train.batch_size")) for key in settings)


def test_pyvene_per_example_sites_with_left_padding_equal_align_search(tiny_price):
    """Pairs from two templates of different lengths in one batch: pyvene gets per-example locations, and
    its answer logits (intervened and not) equal align-search's reference path."""
    pytest.importorskip("pyvene")
    task = get_task("price_tagging")
    rows = []
    for template in ("compact", "alpaca"):
        pairs = make_splits(task, "left_boundary", ("left_boundary",), {"train": 8}, seed=0)["train"]
        rows += list(to_dataset(pairs, task.template(template)))
    answers = sorted(set(task.template("compact").answers.values()))
    data = build_trial_data(tiny_price.tokenizer, {"train": rows}, ["left_boundary"], answers)
    assert single_token(*sweep.site_tokens(data, "amount_first_digit", "train")) is None
    training = sweep.Training(steps=4, batch_size=16, lr=1e-3, boundary_lr=1e-2, warmup=0.1)
    row = {"hypothesis": "left_boundary@L0", "layer": 0, "position": "amount_first_digit"}
    found = sweep.check_equal_logits(tiny_price.model, data, row, training)
    assert found["logits_max_difference"] < 1e-4 < found["logits_effect"]


def test_pyvene_trains_with_the_sweeps_resolved_settings():
    config = {"train": {"batch_size": 16, "epochs": 2, "max_steps": None, "lr": 0.01, "boundary_lr": 0.05,
                        "warmup": 0.2, "threads": 1}}
    assert sweep.read_training(config, 100) == sweep.Training(steps=14, batch_size=16, lr=0.01, boundary_lr=0.05,
                                                              warmup=0.2)
    config["train"]["max_steps"] = 48
    assert sweep.read_training(config, 100).steps == 48


def test_trial_step_times_a_real_trial_at_every_layer_asked():
    from benchmarks.common import task_model_available
    from benchmarks.trial_step import main as trial_step

    if not task_model_available():
        pytest.skip("the shipped price-tagging model is not here")
    rows = trial_step(["--layers", "0,2", "--warmup", "1", "--steps", "2", "--batch-size", "8"])
    assert [row["layer"] for row in rows] == [0, 2]
    assert all(0 < row["min_ms"] <= row["median_ms"] for row in rows)
    assert rows[0]["suffix_reason"] is None and rows[1]["suffix_reason"] == "no layer runs above the site"


def test_cpu_budget_counts_the_command_and_its_children_and_splits_by_phase():
    from benchmarks.cpu_budget import Recording, Sample, budget, descendants, record

    assert descendants(10, {10: 1, 11: 10, 12: 11, 13: 1, 14: 13}) == {10, 11, 12}
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    parent = ("import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', " + repr(busy) + "])\n"
              + busy + "child.wait()\n")
    recording, wall = record([sys.executable, "-c", parent], interval=0.05)
    children = [pid for pid in recording.commands if pid != recording.root]
    assert len(children) == 1 and wall >= 0.4
    used = budget(recording, {}, cores=2, wall=wall, interval=0.05)
    assert used["per_kind"]["driver"] >= 0.3 and used["per_kind"]["other"] >= 0.3  # the child's last 0.05 s may be lost
    assert used["floor"] == pytest.approx(used["cpu_seconds"] / 2)
    with pytest.raises(SystemExit, match="exit status 3:\nthe config is wrong"):
        record([sys.executable, "-c", "import sys; print('the config is wrong', file=sys.stderr); sys.exit(3)"],
               interval=0.05)

    # a made-up recording: the driver busy in "prepare", a worker born in "grid"
    samples = [Sample(0.0, {1: 0.0}, 0.0), Sample(1.0, {1: 0.5}, 0.6), Sample(2.0, {1: 1.4}, 1.5),
               Sample(3.0, {1: 1.5, 2: 0.8}, 2.5), Sample(4.0, {1: 1.6, 2: 1.7}, 3.5)]
    made_up = Recording(1, samples, {1: "align-search sweep", 2: "python .../ray/_private/workers/default_worker.py"})
    result = budget(made_up, {"prepare": {"started": 1.0}, "grid": {"started": 2.0}}, cores=2, wall=4.0,
                    interval=1.0)
    assert result["per_kind"] == {"driver": 1.6, "trial workers": 1.7, "Ray's own": 0.0, "other": 0.0}
    assert [(r["phase"].split(" ")[0], r["wall"], r["driver"], r["everyone"]) for r in result["phases"]] == [
        ("before", 1.0, 0.5, 0.5), ("prepare", 1.0, pytest.approx(0.9), pytest.approx(0.9)),
        ("grid", 2.0, pytest.approx(0.2), pytest.approx(1.9))]
