"""`align-search accuracy` and `convert-gguf` on tiny models saved to disk (the real model: tests/integration)."""

import pytest
import torch

from alignment.evaluation import template_accuracy
from alignment.models import LoadedModel
from alignment.tokenizer import task_tokenizer
from causal_models import get_task
from search.cli import main
from tests.helpers import tiny_model


@pytest.fixture
def tiny_ioi(family, tmp_path):
    tokenizer = task_tokenizer(get_task("ioi"))
    model = tiny_model(family, len(tokenizer), seed=3)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return LoadedModel(model, tokenizer, str(tmp_path / "model"))


def test_accuracy_is_the_share_of_prompts_answered_right_one_by_one(tiny_ioi):
    task = get_task("ioi")
    template = task.template("then")
    inputs = task.sample_factual(40, 7)
    answers = sorted(template.answers.values())
    answer_ids = torch.tensor([tiny_ioi.tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in answers])
    right = right_full = 0
    with torch.no_grad():
        for x in inputs:  # unpadded, one prompt at a time
            ids = tiny_ioi.tokenizer(template.render(x).text, return_tensors="pt")["input_ids"]
            logits = tiny_ioi.model(input_ids=ids).logits[0, -1]
            label = answer_ids[answers.index(template.answer(task.factual_output(x)))]
            right += int(answer_ids[logits[answer_ids].argmax()] == label)
            right_full += int(logits.argmax() == label)
    result = template_accuracy(tiny_ioi, task, "then", n=40, seed=7, batch_size=16)
    assert (result.accuracy.answers, result.accuracy.full_vocab, result.accuracy.n) == (right / 40, right_full / 40, 40)
    assert result.multi_token_answers == ()


def test_accuracy_command_reports_every_template(tiny_ioi, capsys):
    assert main(["accuracy", "ioi", "--model-path", tiny_ioi.path, "--n", "8", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    for template in ("went", "then", "after"):
        assert f"  {template}: " in out and "among the 20 answers" in out
    assert main(["accuracy", "ioi", "--model-path", tiny_ioi.path, "--template", "wnt"]) == 2
    assert "Did you mean 'went'?" in capsys.readouterr().err


def test_convert_gguf_refuses_bad_input_in_one_line(tmp_path, capsys):
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_text("x")
    assert main(["convert-gguf", str(not_gguf), "--out", str(tmp_path / "out")]) == 2
    assert "must be a .gguf file or one of ['smollm2']" in capsys.readouterr().err
    assert main(["convert-gguf", str(tmp_path / "missing.gguf"), "--out", str(tmp_path / "out")]) == 2
    assert "model path must exist" in capsys.readouterr().err
    assert main(["convert-gguf", str(not_gguf), "--out", str(tmp_path)]) == 2  # --out holds model.bin
    assert "must be a new or empty folder" in capsys.readouterr().err

