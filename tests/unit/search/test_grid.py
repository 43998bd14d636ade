"""The full grid before it runs and after: every token and component planned with token labels, the plan line,
and heatmaps per causal model and component that wrap long rows and hatch cells at the floor."""

import pytest
from PIL import Image

from alignment.models import load_model
from causal_models import Hypothesis
from search import heatmaps as heatmaps_module
from search.config import load_config
from search.estimate import TUNE_SECONDS, grid_shape, plan_sweep
from search.folder import SweepFolder, TrialSpec
from search.heatmaps import MAX_COLUMNS, MAX_PANELS, heatmaps
from search.sweep import prepare_sweep
from tests.unit.search.conftest import PLANTED


def grid_config(model, out, *overrides):
    return load_config(None, [f'model_path="{model}"', f'task="{PLANTED}"', 'hypotheses.causal_models=["planted"]',
                              'hypotheses.positions=["every", "filler", ["key", "last"]]',
                              'hypotheses.components=["block", "mlp"]', 'hypotheses.layers="all"',
                              "data.n_train=64", "data.n_dev=16", "data.n_test=16", "train.batch_size=8",
                              "train.max_steps=6", "train.eval_every=3", f'output_dir="{out}"', *overrides])


def test_every_token_and_component_is_planned_in_token_order_with_labels(tiny_planted, tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    specs = prepare_sweep(grid_config(tiny_planted, folder.path), folder)
    # "{f0} {f1} {f2} {key} =": five tokens; the filler is the second, the key the fourth; then the group.
    labels = list(dict.fromkeys(s.hypothesis.label for s in specs))
    assert [label.split(" ")[0] for label in labels] == ["-5", "-4", "filler", "-3", "-2", "-1", "[key"]
    assert labels[5:] == ["-1 '='", "[key + last]"]
    assert len(specs) == 2 * 2 * 7  # layers x components x positions
    ids = {s.hypothesis.id for s in specs}
    assert "planted:in_set@L1.mlp:-1=equals_sign:boundless" in ids
    assert "planted:in_set@L0:key+last:boundless" in ids
    tokens = {s.hypothesis.position: s.hypothesis.position_tokens for s in specs}
    assert all(len(tokens[str(offset)]) == 1 and tokens[str(offset)][0] for offset in range(-5, 0))
    assert folder.read_trials() == specs  # trials.json round-trips every field
    assert grid_shape(specs) == "1 causal model x 2 layers x 2 components x 7 positions x 1 intervention x 1 seed"


def test_a_group_whose_tokens_coincide_fails_before_any_trial(tiny_planted, tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    config = grid_config(tiny_planted, folder.path, 'hypotheses.positions=[["last", "-1"]]')
    with pytest.raises(ValueError, match="must be different tokens"):
        prepare_sweep(config, folder)


def test_the_plan_line_counts_the_trials_and_estimates_their_time_from_a_probe(tiny_planted, tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    config = grid_config(tiny_planted, folder.path, "resources.concurrency=2")
    specs = prepare_sweep(config, folder)
    loaded = load_model(str(tiny_planted))
    plan = plan_sweep(config, folder, specs, 2, "plain", loaded)
    assert (plan.trials, plan.done) == (28, 0)
    # Deepest site: layer 0's MLP runs both layers; shallowest: layer 1's block output runs none.
    assert [cost.depth for cost in plan.costs] == [0, 2]
    assert all(min(cost.step, cost.pair, cost.fixed) >= 0 for cost in plan.costs)
    assert plan.seconds is not None and plan.seconds >= 28 * TUNE_SECONDS / 2
    line = plan.line(2)
    assert line.startswith("plan: 28 trials to run (1 causal model x 2 layers x 2 components x 7 positions")
    assert "at 2 at a time" in line and "ms a training step" in line
    folder.write_status(specs[0].key, status="finished")
    assert plan_sweep(config, folder, specs, 2, "plain", loaded).done == 1
    skipped = plan_sweep(config, folder, specs, 2, "plain", None, "a GGUF model is not loaded in the driver")
    assert skipped.line(2).endswith("time not estimated (a GGUF model is not loaded in the driver)")


def test_heatmaps_split_by_component_wrap_long_rows_label_tokens_and_hatch_floors(tmp_path, monkeypatch):
    folder = SweepFolder(tmp_path)
    offsets = range(-MAX_COLUMNS * MAX_PANELS - 3, 0)   # one row too long for one file
    specs = [TrialSpec(Hypothesis("planted", ("in_set",), layer, str(offset), component=component,
                                  position_tokens=(f"t{-offset}",)), 0)
             for component in ("block", "mlp") for layer in (0, 1) for offset in offsets]
    specs.append(TrialSpec(Hypothesis("planted", ("in_set",), 0, "key+last"), 0))
    folder.write_trials(specs)
    ranked = [{"hypothesis": s.hypothesis.id, "mean": 0.5 + 0.4 * (s.hypothesis.layer == 1),
               **({"floor_no_op": 0.5, "floor_copy_source": 0.4} if s.hypothesis.component == "mlp" else {})}
              for s in specs]
    drawn = []
    monkeypatch.setattr(heatmaps_module, "_save", lambda path, title, layers, panels, labels, values, hatched, margin:
                        drawn.append((path.name, title, layers, panels, labels, values, hatched)))
    files = heatmaps(folder, ranked, 0.05)
    assert [f.name for f in files] == ["heatmap_planted.png", "heatmap_planted_part2.png", "heatmap_planted_mlp.png",
                                       "heatmap_planted_mlp_part2.png"]
    name, title, layers, panels, labels, values, hatched = drawn[0]
    assert layers == [0, 1] and len(panels) == MAX_PANELS and all(len(p) == MAX_COLUMNS for p in panels)
    assert labels[panels[0][0]] == f"{offsets[0]} 't{-offsets[0]}'"   # token labels, in token order
    assert "block outputs" in title and "MLP outputs" in drawn[2][1]
    assert panels[0][0] == (str(offsets[0]), None) and drawn[1][3][-1][-1] == ("key+last", None)
    monkeypatch.undo()
    # Block cells carry no floors (read as 0.0, like the verdict): none is hatched. MLP cells: layer 0 sits on
    # its no-op floor 0.5 and is hatched; layer 1 (0.9) clears both floors by the margin.
    assert hatched == set()
    mlp_hatched = drawn[2][6]
    assert mlp_hatched and {layer for layer, _ in mlp_hatched} == {0} and len(mlp_hatched) == len(offsets)
    for path in heatmaps(folder, ranked, 0.05):
        assert Image.open(path).size[0] > 0
