import json

import pytest

from causal_models import (
    Hypothesis,
    enumerate_hypotheses,
    get_task,
    load_pairs,
    parse_layers,
    sample_pairs,
    save_pairs,
)
from causal_models.dataset import make_splits, to_dataset
from causal_models.hypotheses import grid_positions
from causal_models.pairs import input_key

TASK = get_task("price_tagging")


def test_hypothesis_ids_are_readable_and_stable():
    assert Hypothesis("left_boundary", ("left_boundary",), 6, "amount_last_digit").id == \
        "left_boundary@L6:amount_last_digit:boundless"
    both = Hypothesis("left_and_right_boundary", ("left_boundary", "right_boundary"), 2, "last", "das")
    assert both.id == "left_and_right_boundary:left_boundary+right_boundary@L2:last:das"
    cross = Hypothesis("left_boundary", ("left_boundary",), 1, "last", source_position="amount_last_digit")
    assert cross.id == "left_boundary@L1:last<-amount_last_digit:boundless"


def test_components_offsets_and_groups_in_ids_and_labels():
    def hypothesis(position, **extra):
        return Hypothesis("left_boundary", ("left_boundary",), 2, position, **extra)

    assert hypothesis("last", component="mlp").id == "left_boundary@L2.mlp:last:boundless"
    offset = hypothesis("-3", position_tokens=("dollars",))
    assert (offset.id, offset.label) == ("left_boundary@L2:-3=dollars:boundless", "-3 'dollars'")
    newline = hypothesis("-1", component="attention", position_tokens=("\n",))
    assert (newline.id, newline.label) == ("left_boundary@L2.attention:-1=NL:boundless", "-1 '\\n'")
    group = hypothesis("amount_first_digit+-2", position_tokens=("", ":"))
    assert group.id == "left_boundary@L2:amount_first_digit+-2=colon:boundless"
    assert group.label == "[amount_first_digit + -2 ':']" and group.members == ("amount_first_digit", "-2")
    assert hypothesis("-3").id == "left_boundary@L2:-3:boundless"  # no sample token: the offset alone
    for bad in ("last+last", "a++b", ""):
        with pytest.raises(ValueError, match="position"):
            hypothesis(bad)
    with pytest.raises(ValueError, match="must have as many tokens"):
        hypothesis("a+b", source_position="c")
    with pytest.raises(ValueError, match="component must be one of"):
        hypothesis("last", component="head")


def test_grid_positions_expand_all_every_offsets_and_groups():
    names = ("amount_first_digit", "last")
    assert grid_positions("all", names, 5) == list(names)
    assert grid_positions("every", names, 3) == ["-3", "-2", "-1"]
    assert grid_positions(["last", -2, ["amount_first_digit", "last"], "every"], names, 2) == [
        "last", "-2", "amount_first_digit+last", "-1"]
    assert grid_positions("every", names, None) == []  # before the prompts exist
    with pytest.raises(ValueError, match="a position group must list positions"):
        grid_positions([["every", "last"]], names, 3)


def test_enumerate_gives_the_full_grid_with_filters():
    grid = enumerate_hypotheses(TASK, range(4), causal_models=["left_boundary", "right_boundary"])
    assert len(grid) == 2 * 4 * len(TASK.template().position_names)
    assert len({h.id for h in grid}) == len(grid)
    some = enumerate_hypotheses(TASK, [1, 3], causal_models=["mid_point_distance"], positions=["last", "response"],
                                interventions=["boundless", "full_swap"])
    assert {(h.layer, h.position, h.intervention) for h in some} == {
        (layer, p, i) for layer in (1, 3) for p in ("last", "response") for i in ("boundless", "full_swap")}
    with pytest.raises(ValueError, match="position of template 'alpaca' must be one of"):
        enumerate_hypotheses(TASK, [0], positions=["amount_lst_digit"])
    mixed = enumerate_hypotheses(TASK, [0, 1], causal_models=["left_boundary"], components=["block", "mlp"],
                                 positions=["-2", "amount_first_digit+last", "last<--1"], tokens={"-2": ":"})
    assert len(mixed) == 2 * 2 * 3
    assert {h.id for h in mixed if h.layer == 1 and h.component == "mlp"} == {
        "left_boundary@L1.mlp:-2=colon:boundless", "left_boundary@L1.mlp:amount_first_digit+last:boundless",
        "left_boundary@L1.mlp:last<--1:boundless"}
    with pytest.raises(ValueError, match="position of template 'alpaca' must be one of"):
        enumerate_hypotheses(TASK, [0], positions=["last+amount_lst_digit"])


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("1-3") == [1, 2, 3]
    assert parse_layers("0, 5,2") == [0, 2, 5]
    assert parse_layers([3, 1]) == [1, 3]
    with pytest.raises(ValueError, match=r"layer must be in 0..3 \(the model has 4 layers\), got 7"):
        parse_layers("7", 4)
    with pytest.raises(ValueError, match="layers must be"):
        parse_layers("one")


def test_dataset_round_trip_and_determinism(tmp_path):
    model = TASK.causal_model("left_and_right_boundary")
    pairs = sample_pairs(model, ["left_boundary", "right_boundary"], 50, seed=3)
    first = save_pairs(pairs, TASK.template("compact"), TASK.name, tmp_path / "a")
    again = to_dataset(sample_pairs(model, ["left_boundary", "right_boundary"], 50, seed=3), TASK.template("compact"))
    assert first.to_dict() == again.to_dict()
    loaded, meta = load_pairs(tmp_path / "a")
    assert loaded.to_dict() == first.to_dict() and meta["variables"] == ["left_boundary", "right_boundary"]
    line = json.loads((tmp_path / "a" / "pairs.jsonl").read_text().splitlines()[0])
    assert {"base_prompt", "source_prompts", "variables", "base_output", "counterfactual_output"} <= set(line)
    assert json.loads((tmp_path / "a" / "stats.json").read_text())["label_shares"] == {"False": 0.5, "True": 0.5}


def test_heldout_splits_share_no_inputs_with_training():
    splits = make_splits(TASK, "left_boundary", ["left_boundary"], {"train": 300, "dev": 50, "test": 100}, seed=0)
    seen = {input_key(x) for p in splits["train"].pairs for x in (p.base, *p.sources.values())}
    for split in ("dev", "test"):
        assert not any(input_key(x) in seen for p in splits[split].pairs for x in (p.base, *p.sources.values()))
