import pytest

from causal_models import CausalModel, CausalModelError, Variable

BOOL = (True, False)


def chain():
    return CausalModel("chain", [
        Variable("a", range(10)), Variable("b", range(10)),
        Variable("bigger", BOOL, ("a", "b"), lambda a, b: a > b),
        Variable("out", BOOL, ("bigger",), lambda x: not x),
    ], output="out", default_variables=("bigger",))


def test_run_computes_every_variable():
    values = chain().run({"a": 3, "b": 1})
    assert values == {"a": 3, "b": 1, "bigger": True, "out": False}


def test_interchange_takes_the_variable_from_the_source_and_recomputes_descendants():
    model = chain()
    values = model.interchange({"a": 3, "b": 1}, {"bigger": {"a": 0, "b": 5}})
    assert values["bigger"] is False and values["out"] is True
    assert values["a"] == 3  # the base's inputs stay


def test_interchange_of_an_input():
    values = chain().interchange({"a": 3, "b": 1}, {"a": {"a": 0, "b": 9}})
    assert values["a"] == 0 and values["bigger"] is False


def test_cycle_is_an_error_naming_the_variables():
    with pytest.raises(CausalModelError, match="cycle: .*x -> y -> x|cycle: .*y -> x -> y"):
        CausalModel("bad", [Variable("i"), Variable("x", None, ("y",), lambda y: y),
                            Variable("y", None, ("x",), lambda x: x)], output="y")


def test_unknown_parent_names_the_variable():
    with pytest.raises(CausalModelError, match="'x' has unknown parent 'nope'"):
        CausalModel("bad", [Variable("x", None, ("nope",), lambda v: v)], output="x")


def test_mechanism_that_raises_names_the_variable():
    model = CausalModel("bad", [Variable("i"), Variable("x", None, ("i",), lambda i: 1 / i)], output="x")
    with pytest.raises(CausalModelError, match="mechanism of variable 'x' raised ZeroDivisionError"):
        model.run({"i": 0})


def test_input_outside_its_domain_names_the_variable():
    with pytest.raises(CausalModelError, match="input of variable 'a' must be in"):
        chain().run({"a": 42, "b": 1})


def test_missing_and_unknown_inputs():
    with pytest.raises(CausalModelError, match=r"missing \['b'\] and unknown \['c'\]"):
        chain().run({"a": 1, "c": 2})


def test_mechanism_value_outside_domain():
    model = CausalModel("bad", [Variable("i"), Variable("x", BOOL, ("i",), lambda i: i)], output="x")
    with pytest.raises(CausalModelError, match="mechanism value of variable 'x'"):
        model.run({"i": 5})


def test_unknown_variable_lists_the_choices():
    with pytest.raises(CausalModelError, match=r"must be one of \['a', 'b', 'bigger', 'out'\]"):
        chain().interchange({"a": 1, "b": 2}, {"nope": {"a": 1, "b": 2}})


def test_intermediate_names_and_ancestors():
    model = chain()
    assert model.intermediate_names == ("bigger",)
    assert model.ancestors("out") == {"a", "b", "bigger"}
