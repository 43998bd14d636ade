import json

import pytest

from causal_models import (
    CausalModel,
    FieldChar,
    Hypothesis,
    PromptTemplate,
    Task,
    Variable,
    enumerate_hypotheses,
    get_task,
    load_pairs,
    parse_layers,
    sample_pairs,
    save_pairs,
)
from causal_models.dataset import make_splits, row_floors, to_dataset
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
    assert all(splits[s].stats.held_out and splits[s].stats.shared_inputs == 0 for s in ("dev", "test"))
    assert splits["dev"].stats.reserved_inputs is None  # a large input space: excluding training's inputs suffices


def _small_task(inputs: int) -> Task:
    """A task over `inputs` distinct inputs whose answer is `x >= inputs / 2` (carried by `high`)."""
    model = CausalModel("small", [
        Variable("x", range(inputs)),
        Variable("high", (True, False), ("x",), lambda x: x >= inputs // 2),
        Variable("answer", (True, False), ("high",), lambda high: high),
    ], output="answer", default_variables=("high",))
    template = PromptTemplate("plain", "{x} ?", lambda x: {"x": str(x["x"])}, {"x": FieldChar("x")},
                              {True: "yes", False: "no"})
    return Task("small", "is x high", lambda rng: {"x": rng.randrange(inputs)}, {"small": model},
                {"plain": template}, "small", "plain")


@pytest.mark.parametrize("inputs", [30, 100])
def test_a_small_input_space_keeps_inputs_for_the_heldout_splits(inputs):
    """The default sizes (2000 / 200 / 400) over 30 or 100 inputs: training would use every input, so
    some are reserved first; dev and test then share none with training, and the stats say so."""
    splits = make_splits(_small_task(inputs), None, [], {"train": 2000, "dev": 200, "test": 400}, seed=0,
                         max_unchanged=0.5)
    train = {input_key(x) for p in splits["train"].pairs for x in (p.base, *p.sources.values())}
    assert splits["train"].stats.distinct_inputs == len(train) < inputs
    for split in ("dev", "test"):
        used = {input_key(x) for p in splits[split].pairs for x in (p.base, *p.sources.values())}
        assert not used & train and splits[split].stats.held_out is True and splits[split].stats.shared_inputs == 0
        assert splits[split].stats.reserved_inputs == inputs - len(train)
        assert splits[split].stats.label_shares == {"False": 0.5, "True": 0.5}
    model = splits["dev"].pairs[0]
    assert model.counterfactual_output == model.source_outputs["high"]  # labels still come from interchange


def test_without_heldout_the_stats_count_the_shared_inputs():
    splits = make_splits(_small_task(30), None, [], {"train": 200, "dev": 100}, seed=0, heldout=False)
    assert splits["dev"].stats.held_out is False and splits["dev"].stats.shared_inputs > 0
    assert splits["dev"].stats.reserved_inputs is None


def test_floors_of_rows_match_the_causal_model():
    """The copy-source floor read from dataset rows equals the share of pairs whose label is the source's
    own answer, recomputed here by running the causal model on each source."""
    model = TASK.causal_model("left_boundary")
    pairs = sample_pairs(model, ["left_boundary"], 300, seed=2, max_unchanged=0.5)
    rows = list(to_dataset(pairs, TASK.template("compact")))
    expected = sum(p.counterfactual_output == model.run(p.sources["left_boundary"])["answer"]
                   for p in pairs.pairs) / 300
    assert row_floors(rows) == {"no_op": pairs.stats.unchanged_share, "copy_source": round(expected, 4)}
    assert pairs.stats.floor_copy_source == round(expected, 4) and 0.6 < expected < 0.9
