"""The success paths of `tasks`, `data`, `sites` and `convert-gguf FILE`, run as a user runs them."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from alignment.models import load_model
from causal_models import TASKS, get_task
from search.cli import main
from tests.tiny_gguf import write_tiny_gguf


def run(capsys, argv: list[str]) -> str:
    """`align-search ARGV` must exit 0; return what it printed."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, f"exit {code}: {captured.err[-2000:]}"
    return captured.out


def sections(text: str) -> dict[str, str]:
    """`tasks` output cut into one section per task (a task's line starts at the margin)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line[0].isspace():
            found[line.split(":")[0]] = []
        found[list(found)[-1]].append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}


def test_tasks_lists_every_task_causal_model_variable_and_position(capsys):
    listed = sections(run(capsys, ["tasks"]))
    assert set(listed) == set(TASKS)
    for name, task in TASKS.items():
        section = listed[name]
        for model in task.causal_models.values():
            assert f"causal model {model.name}" in section, (name, model.name)
            assert all(variable in section for variable in model.intermediate_names), (name, model.name)
        for template in task.templates.values():
            assert f"template {template.name}" in section
            assert all(position in section for position in template.position_names), (name, template.name)
        assert f"causal model {task.default_causal_model} (default)" in section
        assert f"template {task.default_template} (default)" in section


def test_data_writes_pairs_whose_labels_the_causal_model_gives(tmp_path, capsys):
    out = tmp_path / "pairs"
    run(capsys, ["data", "price_tagging", "--causal-model", "left_boundary", "--n", "40", "--seed", "3",
                 "--max-unchanged", "0.5", "--out", out])
    task = get_task("price_tagging")
    model, template = task.causal_model("left_boundary"), task.template()
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and len(datasets.load_from_disk(str(out / "dataset"))) == 40
    for row in rows:
        base, source = row["base_inputs"], row["source_inputs"]["left_boundary"]
        assert row["base_prompt"] == template.render(base).text
        assert row["source_prompts"]["left_boundary"] == template.render(source).text
        counterfactual = model.interchange(base, {"left_boundary": source})[model.output]
        assert row["counterfactual_output"] == template.answer(counterfactual)
        assert row["base_output"] == template.answer(model.run(base)[model.output])
    labels = [row["counterfactual_output"] for row in rows]
    assert sorted(set(labels)) == ["No", "Yes"] and labels.count("Yes") == 20  # balanced
    assert sum(row["counterfactual_output"] == row["base_output"] for row in rows) <= 20  # --max-unchanged 0.5
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n"] == 40 and stats["balanced"] and stats["unchanged_share"] <= 0.5


def test_data_without_balancing_says_so(tmp_path, capsys):
    out = tmp_path / "plain"
    run(capsys, ["data", "hierarchical_equality", "--n", "30", "--no-balance", "--out", out])
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 30
    assert json.loads((out / "stats.json").read_text())["balanced"] is False


@pytest.mark.parametrize("fixture, kind, layers, hidden, path", [
    ("tiny_planted", "GPT2LMHeadModel", 2, 32, "transformer.h"),
    ("other_planted", "LlamaForCausalLM", 3, 48, "model.layers"),
])
def test_sites_names_the_decoder_layers(request, capsys, fixture, kind, layers, hidden, path):
    folder = request.getfixturevalue(fixture)
    line = run(capsys, ["sites", folder]).strip().splitlines()[-1]  # (DeepSpeed may print a warning first)
    assert line.startswith(kind) and f"{layers} decoder layers" in line and f"hidden size {hidden}" in line
    assert f"{path}.0" in line and f"{path}.{layers - 1}" in line
    every = [name for name in run(capsys, ["sites", folder, "--all"]).splitlines() if " " not in name]
    loaded = load_model(folder).model
    assert every == [name for name, _ in loaded.named_modules() if name]
    assert f"{path}.{layers - 1}" in every and f"{path}.{layers}" not in every


def test_convert_gguf_file_gives_a_folder_with_the_same_logits(tmp_path, capsys):
    pytest.importorskip("gguf", reason="convert-gguf needs the [gguf] extra: pip install -e '.[gguf]'")
    gguf_file, model, tokens = write_tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "converted"
    printed = run(capsys, ["convert-gguf", gguf_file, "--out", out])
    assert str(out) in printed and (out / "config.json").is_file()
    converted = load_model(out)
    ids = converted.tokenizer(" the tea", add_special_tokens=False).input_ids
    assert converted.tokenizer.convert_ids_to_tokens(ids) == ["Ġt", "h", "e", "Ġt", "e", "a"]  # bytes and one merge
    assert ids == [tokens.index(t) for t in ["Ġt", "h", "e", "Ġt", "e", "a"]]
    batch = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(converted.model(batch).logits, model(batch).logits, rtol=0, atol=1e-5)
    assert "2 decoder layers at model.layers.0 .. model.layers.1" in run(capsys, ["sites", gguf_file])
