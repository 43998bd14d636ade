"""`align-search align` takes the 2023 run_alignment.py flags, in both spellings, and das_config."""

import json

import pytest

from alignment.tokenizer import task_tokenizer
from causal_models import get_task
from search.cli import main
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = task_tokenizer(get_task("price_tagging"))
    tiny_model("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


COMMON = ["--template", "compact", "--max-steps", "4", "--valid_steps", "2", "--log_step", "2"]


def test_2023_flags_and_summary_line(model_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["align", "--model_path", str(model_folder), "--task_name", "pricing_tag_lb", "--layer", "1",
                 "--n_training_examples", "64", "--n_eval_examples", "32", "--n-test-examples", "32",
                 "--train_batch_size", "8", "--eval_batch_size", "16", "--gradient_accumulation_steps", "2",
                 "--lr", "0.001", "--seed", "3", "--epochs", "1", "--output_dir", str(out),
                 *COMMON]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    printed = json.loads(line)
    assert printed["hypothesis"] == "left_boundary@L1:last:boundless"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("prealign_accuracy", "best_dev_iia", "test_iia", "test_iia_full_vocab", "boundary_widths"):
        assert key in summary and key in printed
    config = json.loads((out / "config.json").read_text())
    assert config["causal_model"] == "left_boundary" and config["train"]["gradient_accumulation"] == 2
    assert (out / "intervention" / "intervention.safetensors").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 3


def test_das_config_of_a_2023_model_folder(model_folder, tmp_path):
    (model_folder / "das_config").mkdir(exist_ok=True)
    (model_folder / "das_config" / "config.json").write_text(json.dumps({"das_layer": 0, "das_token_range": [-2, -1]}))
    out = tmp_path / "run"
    try:
        assert main(["align", "--model-path", str(model_folder), "--task", "price_tagging",
                     "--causal-model", "right_boundary", "--n-training-examples", "32", "--n-eval-examples", "16",
                     "--n-test-examples", "16", "--output-dir", str(out), *COMMON]) == 0
    finally:
        (model_folder / "das_config" / "config.json").unlink()
    config = json.loads((out / "config.json").read_text())
    assert (config["layer"], config["position"]) == (0, "-2")


def test_a_component_and_a_position_group(model_folder, tmp_path, capsys):
    out = tmp_path / "mlp"
    assert main(["align", "--model-path", str(model_folder), "--task", "pricing_tag_lb", "--layer", "1",
                 "--component", "mlp", "--position", "amount_first_digit+last", "--n-training-examples", "32",
                 "--n-eval-examples", "16", "--n-test-examples", "16", "--train-batch-size", "8",
                 "--output-dir", str(out), *COMMON]) == 0
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["hypothesis"] == "left_boundary@L1.mlp:amount_first_digit+last:boundless"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["site"], summary["component"]) == ("model.layers.1.mlp", "mlp")
    assert summary["position_label"] == "[amount_first_digit + last]"
