import textwrap
from collections import Counter

import pytest

from causal_models import TASKS, UnknownNameError, get_task, sample_pairs
from causal_models.pairs import MAX_BALANCED_LABELS
from causal_models.tasks.word_logic import PROGRAM_07065A, word_logic_task


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"task must be one of \['hierarchical_equality', 'ioi', "
                                               r"'price_tagging', 'word_logic'\], got 'price_taging'. "
                                               r"Did you mean 'price_tagging'"):
        get_task("price_taging")


def test_unknown_causal_model_and_template_list_the_choices():
    task = get_task("price_tagging")
    with pytest.raises(UnknownNameError, match="causal model of task 'price_tagging' must be one of"):
        task.causal_model("left")
    with pytest.raises(UnknownNameError, match="template of task 'price_tagging' must be one of"):
        task.template("alpacca")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_samples_balanced_pairs_and_renders_every_position(name):
    task = get_task(name)
    for model in task.causal_models.values():
        pairs = sample_pairs(model, list(model.default_variables), 40, seed=0)
        assert_balanced(model, pairs)
        for template in task.templates.values():
            prompt = template.render(pairs.pairs[0].base)
            assert set(prompt.positions) == set(template.position_names)
            assert template.answer(pairs.pairs[0].counterfactual_output)


def assert_balanced(model, pairs) -> None:
    """Each intervened variable's pairs split evenly over every output value (up to rounding); an output of
    more than MAX_BALANCED_LABELS values is left unbalanced, and the stats say so."""
    outputs = model.variable(model.output).values
    labels = Counter(str(p.counterfactual_output) for p in pairs.pairs)
    assert pairs.stats.label_shares == {k: round(v / len(pairs), 4) for k, v in sorted(labels.items())}
    if outputs is None or len(outputs) > MAX_BALANCED_LABELS:
        assert not pairs.stats.balanced, model.name
        return
    assert pairs.stats.balanced, model.name
    for variable in pairs.variables:
        counts = Counter(str(p.counterfactual_output) for p in pairs.pairs if variable in p.sources)
        assert set(counts) == {str(v) for v in outputs}, (model.name, variable, counts)
        assert max(counts.values()) - min(counts.values()) <= 1, (model.name, variable, counts)


def test_word_logic_program_is_data():
    task = word_logic_task((("op1", "==", ("C0", "C1")), ("op2", "OR", ("op1", "op1"))), name="tiny_logic")
    model = task.causal_model("op1")
    values = model.run({"C0": "big", "C1": "big", "C2": "fast", "C3": "cold", "C4": "glad"})
    assert values["op1"] and values["answer"]
    with pytest.raises(ValueError, match="operator of 'op1' must be one of"):
        word_logic_task((("op1", "XOR", ("C0", "C1")),))


def test_word_logic_07065a():
    task = get_task("word_logic")
    model = task.causal_model("program")
    words = {"C0": "big", "C1": "happy", "C2": "fast", "C3": "glad", "C4": "fast"}
    values = model.run(words)
    assert values["op1"] and values["op2"] and values["op3"] and values["op4"] and values["answer"]
    assert [op for op, _, _ in PROGRAM_07065A] == list(model.intermediate_names)


def test_word_logic_sampler_balances_the_leaf_comparisons():
    task = get_task("word_logic")
    pairs = sample_pairs(task.causal_model("op1"), ["op1"], 1000, seed=0, balance_labels=False)
    model = task.causal_model("op1")
    share = sum(model.run(p.base)["op1"] for p in pairs.pairs) / len(pairs)
    assert 0.35 < share < 0.65


def test_hierarchical_equality():
    model = get_task("hierarchical_equality").causal_model()
    assert model.run({"W": "A", "X": "A", "Y": "B", "Z": "C"})["answer"] is False
    assert model.interchange({"W": "A", "X": "A", "Y": "B", "Z": "C"},
                             {"YZ": {"W": "A", "X": "B", "Y": "C", "Z": "C"}})["answer"] is True


def test_ioi():
    task = get_task("ioi")
    prompt = task.template("went").render({"name1": "Mary", "name2": "John", "io_first": True,
                                            "place": "store", "object": "drink"})
    assert prompt.text == "When Mary and John went to the store, John gave a drink to"
    model = task.causal_model("io_position")
    base = {"name1": "Mary", "name2": "John", "io_first": True, "place": "store", "object": "drink"}
    source = {**base, "name1": "Tom", "name2": "Anna", "io_first": False}
    assert model.interchange(base, {"position": source})["answer"] == "John"
    assert task.causal_model("io_name").interchange(base, {"io_name": source})["answer"] == "Anna"


def test_ioi_named_positions_are_distinct_characters():
    task = get_task("ioi")
    for name, template in task.templates.items():
        for inputs in task.sample_factual(20, 0):
            prompt = template.render(inputs)
            offsets = list(prompt.positions.values())
            assert len(set(offsets)) == len(offsets), (name, prompt.positions)
            assert prompt.text.endswith(" to") and prompt.positions["last"] == len(prompt.text) - 1
            subject = prompt.text[prompt.positions["subject"]:prompt.positions["subject_last"] + 1]
            assert subject == (inputs["name2"] if inputs["io_first"] else inputs["name1"])


def test_user_task_from_a_file(tmp_path):
    path = tmp_path / "my_tasks.py"
    path.write_text(textwrap.dedent('''
        from causal_models import CausalModel, FieldChar, PromptTemplate, Task, Variable
        DIGITS = range(10)
        model = CausalModel("carry", [Variable("a", DIGITS), Variable("b", DIGITS),
            Variable("carry", (True, False), ("a", "b"), lambda a, b: a + b >= 10),
            Variable("answer", (True, False), ("carry",), lambda c: c)], output="answer", default_variables=("carry",))
        template = PromptTemplate("sum", "{a} + {b} carries?", lambda x: {"a": str(x["a"]), "b": str(x["b"])},
                                  {"a": FieldChar("a"), "b": FieldChar("b")}, {True: "yes", False: "no"})
        CARRY = Task("carry", "does a + b carry", lambda rng: {"a": rng.randrange(10), "b": rng.randrange(10)},
                     {"carry": model}, {"sum": template}, "carry", "sum")
    '''))
    task = get_task(f"{path}:CARRY")
    assert task.name == "carry" and task.causal_model().run({"a": 5, "b": 7})["answer"]
    with pytest.raises(UnknownNameError, match="must define 'NOPE'; Task objects it defines: \\['CARRY'\\]"):
        get_task(f"{path}:NOPE")
    with pytest.raises(UnknownNameError, match="task file must exist"):
        get_task(f"{tmp_path}/missing.py:X")
