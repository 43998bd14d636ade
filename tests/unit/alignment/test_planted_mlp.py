"""A variable planted at an MLP output by hand is found there, and not at the block output of the layer below.

The task: the answer is the XOR of two bits of the last word (the key). A 2-layer GPT-2 is
built by hand to compute it in one place: every attention and layer 0's MLP output nothing,
and layer 1's MLP computes the XOR from the key's embedding (two ReLU-like units) and writes
it as +-3 along one direction d, which the (tied) unembedding reads as yes/no. So after layer
1's MLP the variable is a 1-dimensional subspace, while before it (the block output of layer
0, the key's embedding) it is a XOR of two directions, which no single direction carries.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.models import LoadedModel
from alignment.tokenizer import word_level_tokenizer
from alignment.trial import TrialInputs, run_trial
from causal_models import CausalModel, FieldChar, PromptTemplate, Task, Variable

KEYS = ("red", "blue", "green", "pink", "gray", "gold", "teal", "navy")   # key i has bits i & 1, i & 2, i & 4
FILLERS = ("cat", "dog", "cow", "pig", "hen", "fox")
HIDDEN, SCALE, WRITE = 32, 5.0, 3.0


def xor_task() -> Task:
    def bit(key: str, which: int) -> bool:
        return bool(KEYS.index(key) >> which & 1)

    model = CausalModel("xor", [
        Variable("key", KEYS), Variable("f0", FILLERS), Variable("f1", FILLERS),
        Variable("in_set", (True, False), ("key",), lambda key: bit(key, 0) != bit(key, 1)),
        Variable("answer", (True, False), ("in_set",), lambda value: value),
    ], output="answer", default_variables=("in_set",))
    template = PromptTemplate("plain", "{f0} {f1} {key}", lambda x: {k: x[k] for k in ("f0", "f1", "key")},
                              {"key": FieldChar("key")}, {True: "yes", False: "no"})
    return Task("xor", "XOR of two bits of the key", lambda rng: {
        "key": rng.choice(KEYS), "f0": rng.choice(FILLERS), "f1": rng.choice(FILLERS)}, {"xor": model},
        {"plain": template}, "xor", "plain")


def directions(n: int, seed: int = 0) -> torch.Tensor:
    """(n, HIDDEN) orthonormal rows with zero mean (so LayerNorm only rescales their sums)."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(HIDDEN, n, generator=generator)
    raw -= raw.mean(dim=0)
    return torch.linalg.qr(raw).Q.T


def xor_model(tokenizer) -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=2, n_embd=HIDDEN, n_head=2, vocab_size=len(tokenizer), n_positions=16,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).eval().requires_grad_(False)
    v1, v2, v3, d, *others = directions(4 + len(FILLERS))
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        embeddings = model.transformer.wte.weight   # tied with the unembedding
        embeddings.zero_()
        for index, key in enumerate(KEYS):
            signs = [1.0 if index >> b & 1 else -1.0 for b in range(3)]
            embeddings[tokenizer.convert_tokens_to_ids(key)] = signs[0] * v1 + signs[1] * v2 + signs[2] * v3
        for filler, direction in zip(FILLERS, others):
            embeddings[tokenizer.convert_tokens_to_ids(filler)] = 2 * direction
        embeddings[tokenizer.convert_tokens_to_ids("yes")] = 3 * d
        embeddings[tokenizer.convert_tokens_to_ids("no")] = -3 * d
        for block in model.transformer.h:
            for projection in (block.attn.c_proj, block.mlp.c_proj):
                projection.weight.zero_()
                projection.bias.zero_()
        mlp = model.transformer.h[1].mlp
        unit = (HIDDEN / 3) ** 0.5          # a key's +-1 bit after LayerNorm
        mlp.c_fc.weight.zero_()
        mlp.c_fc.bias.fill_(-5.0)           # every other unit stays off
        mlp.c_fc.bias[:2] = 0.0
        mlp.c_fc.weight[:, 0] = SCALE * (v1 - v2) / unit   # 2 * SCALE when bit 0 > bit 1, else <= 0
        mlp.c_fc.weight[:, 1] = SCALE * (v2 - v1) / unit
        mlp.c_proj.weight[:2] = WRITE / SCALE * d          # XOR: +WRITE along d, else -WRITE
        mlp.c_proj.bias.copy_(-WRITE * d)
    return model


@pytest.fixture(scope="module")
def planted_mlp():
    task = xor_task()
    tokenizer = word_level_tokenizer([*KEYS, *FILLERS, "yes", "no"])
    return task, LoadedModel(xor_model(tokenizer), tokenizer, "xor-by-hand")


def trial(planted_mlp, tmp_path, monkeypatch, layer, component):
    task, loaded = planted_mlp
    monkeypatch.setattr("alignment.trial.get_task", lambda name: task)
    config = TrialConfig(model_path="xor-by-hand", task="xor", layer=layer, component=component, position="key",
                         intervention=InterventionConfig(kind="das", subspace_dim=1),
                         train=TrainConfig(batch_size=32, max_steps=80, lr=1e-2, eval_every=40, threads=1),
                         data=DataConfig(n_train=400, n_dev=100, n_test=200, max_unchanged=0.5))
    return run_trial(config, tmp_path / f"L{layer}-{component}", TrialInputs(loaded=loaded))


def test_a_variable_planted_at_an_mlp_output_is_found_there_only(planted_mlp, tmp_path, monkeypatch):
    at_mlp = trial(planted_mlp, tmp_path, monkeypatch, 1, "mlp")
    assert at_mlp["prealign_accuracy"] == 1.0 and at_mlp["site"] == "transformer.h.1.mlp"
    assert at_mlp["test_iia"] >= 0.95
    below = trial(planted_mlp, tmp_path, monkeypatch, 0, "block")
    assert below["test_iia"] <= 0.8  # one direction of the key's embedding cannot carry a XOR of two
    beside = trial(planted_mlp, tmp_path, monkeypatch, 1, "attention")
    # The attention outputs nothing: swapping it leaves every base answer, right on the unchanged pairs only.
    assert beside["test_iia"] == pytest.approx(beside["test_unchanged_share"], abs=1e-9)
