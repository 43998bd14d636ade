"""The task models: the shipped ones solve their tasks with no align-search code, and train-model
writes a folder that plain transformers loads, the same bits again from the command it records."""

import json
import random
import shlex

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.taskmodels import (
    FOCUS_INPUTS,
    TaskModelConfig,
    default_config,
    focus_share_at,
    reproduce_command,
    shipped_model_path,
    shipped_task_models,
)
from causal_models import UnknownNameError, get_task
from search.cli import main

# A few points under each shipped model's recorded accuracy: 400 prompts are a small sample.
TARGETS = {"price_tagging": 0.98, "hierarchical_equality": 0.98, "word_logic": 0.97}


def plain_accuracy(folder, task, template, n, seed):
    """Accuracy among the answer tokens, with only transformers touching the model."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    rng = random.Random(seed)
    inputs = [task.sample_inputs(rng) for _ in range(n)]
    texts = [task.template(template).render(x).text for x in inputs]
    answers = task.template(template).answers
    answer_ids = {value: tokenizer(text, add_special_tokens=False)["input_ids"][0] for value, text in answers.items()}
    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    assert bool(encoded["attention_mask"].all()), "prompts of one template have one length: no padding"
    with torch.no_grad():
        logits = model(**encoded).logits[:, -1]
    values = list(answer_ids)
    chosen = logits[:, list(answer_ids.values())].argmax(dim=1)
    return sum(values[int(c)] == task.factual_output(x) for c, x in zip(chosen, inputs)) / n


def test_every_target_task_has_a_shipped_model():
    assert set(TARGETS) <= set(shipped_task_models())


@pytest.mark.parametrize("task_name", sorted(TARGETS))
def test_shipped_model_solves_fresh_prompts_of_every_template(task_name):
    folder = shipped_model_path(task_name)
    meta = json.loads((folder / "align_search.json").read_text())
    task = get_task(task_name)
    for template in meta["templates"]:
        accuracy = plain_accuracy(folder, task, template, n=400, seed=20240611)
        assert accuracy >= TARGETS[task_name], (template, accuracy)
        assert meta["accuracy"][template] >= TARGETS[task_name]


def test_train_model_defaults_are_the_shipped_settings():
    for task_name in shipped_task_models():
        meta = json.loads((shipped_model_path(task_name) / "align_search.json").read_text())
        assert reproduce_command(task_name, default_config(task_name)) == meta["command"]


def test_shipped_price_model_defaults_to_the_compact_template_and_covers_the_variants():
    meta = json.loads((shipped_model_path("price_tagging") / "align_search.json").read_text())
    assert meta["template"] == "compact"
    assert {"compact_prefix_game", "compact_prefix_frogs", "compact_true_false"} <= set(meta["templates"])


def test_shipped_tokenizer_puts_each_digit_in_its_own_token():
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_path("price_tagging"))
    ids = tokenizer("between 1.30 and 18.55 dollars", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["between", "1", ".", "3", "0", "and", "1", "8", ".", "5", "5",
                                                    "dollars"]
    assert tokenizer.unk_token_id not in ids


def test_unknown_task_names_the_shipped_models_and_the_train_command():
    with pytest.raises(UnknownNameError) as error:
        shipped_model_path("price_taging")
    message = str(error.value)
    assert "'price_tagging'" in message and "Did you mean 'price_tagging'" in message
    assert "align-search train-model price_taging --out DIR" in message


def test_hard_price_inputs_sit_near_a_bound_and_come_after_a_clean_start():
    task, move, rng = get_task("price_tagging"), FOCUS_INPUTS["price_tagging"], random.Random(0)
    moved = [move(rng, task.sample_inputs(rng)) for _ in range(500)]
    distances = [min(abs(x["amount"] - x["lower"]), abs(x["amount"] - x["upper"])) for x in moved]
    assert all(1 <= x["amount"] <= 999 for x in moved) and max(distances) <= 100
    assert 0 in distances and sum(d <= 1 for d in distances) > 50
    config = TaskModelConfig(steps=1000, focus_share=0.3, focus_after=0.2)
    shares = [focus_share_at(step, config) for step in range(1000)]
    assert max(shares[:200]) == 0.0 and 0.0 < shares[300] < 0.3 and min(shares[400:]) == 0.3


def test_focused_inputs_keep_the_factual_rule_and_make_the_neglected_part_decide():
    rng = random.Random(1)
    equality, logic = get_task("hierarchical_equality"), get_task("word_logic")
    for _ in range(200):
        x = FOCUS_INPUTS["hierarchical_equality"](rng, equality.sample_inputs(rng))
        assert x["W"] == x["X"] or x["Y"] == x["Z"]
        y = FOCUS_INPUTS["word_logic"](rng, logic.sample_inputs(rng))
        values = logic.causal_models["program"].run(y)
        assert values["op3"] is False and logic.factual_output(y) == values["op4"]


TINY = ["--steps", "30", "--layers", "1", "--hidden", "16", "--set", "heads=2", "--set", "batch_size=16",
        "--set", "eval_examples=50", "--set", "warmup=5"]


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_train_model_writes_a_folder_that_plain_transformers_loads(tmp_path, architecture):
    out = tmp_path / "model"
    assert main(["train-model", "hierarchical_equality", "--out", str(out), "--architecture", architecture,
                 "--quiet", *TINY]) == 0
    meta = json.loads((out / "align_search.json").read_text())
    assert meta["task"] == "hierarchical_equality" and meta["templates"] == ["letters"]
    assert 0.0 <= meta["accuracy"]["letters"] <= 1.0 and meta["train_seconds"] >= 0
    assert meta["config"]["architecture"] == architecture and meta["config"]["steps"] == 30
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == architecture
    # The folder holds the very model that was evaluated: plain transformers scores the same.
    task = get_task("hierarchical_equality")
    assert plain_accuracy(out, task, "letters", 50, meta["eval_seed"]) == meta["accuracy"]["letters"]


def test_the_recorded_command_trains_the_same_bits_again(tmp_path):
    first = tmp_path / "first"
    assert main(["train-model", "word_logic", "--out", str(first), "--seed", "3", "--quiet", *TINY]) == 0
    command = json.loads((first / "align_search.json").read_text())["command"]
    argv = shlex.split(command.replace("--out DIR", f"--out {tmp_path / 'again'}"))[1:]
    assert main([*argv, "--quiet"]) == 0
    weights, again = load_file(first / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_train_model_rejects_bad_input_with_one_line(tmp_path, capsys):
    assert main(["train-model", "no_such_task", "--out", str(tmp_path)]) == 2
    assert "task must be one of" in capsys.readouterr().err
    assert main(["train-model", "ioi", "--out", str(tmp_path), "--set", "focus_share=0.5"]) == 2
    assert "focus_share must be 0 for task 'ioi'" in capsys.readouterr().err
