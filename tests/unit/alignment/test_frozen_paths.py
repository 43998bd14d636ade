"""Every fast path gives the plain path's logits: cached in memory, cached in a file, uncached; at a layer's
output and at its attention and MLP outputs; at one token and at a group of tokens."""

import numpy as np
import pytest
import torch

from alignment import InterventionConfig, TrainConfig, TrialConfig, build_interchange, build_intervention
from alignment.batches import build_trial_data
from alignment.sites import get_module, layer_site
from causal_models import get_task, sample_pairs, to_dataset

TASK = get_task("price_tagging")


def mixed_rows(n=12):
    """Pairs whose prompts differ in length (two templates), so left padding is exercised."""
    model = TASK.causal_model("left_and_right_boundary")
    pairs = sample_pairs(model, ["left_boundary", "right_boundary"], n, seed=5)
    rows = list(to_dataset(pairs, TASK.template("compact")))
    frogs = list(to_dataset(sample_pairs(model, ["left_boundary", "right_boundary"], n, seed=6),
                            TASK.template("compact_prefix_frogs")))
    return rows + frogs


def interchange_for(loaded, layer, position, source_position=None, component="block", cache="auto", cache_dir=None):
    answers = sorted(set(TASK.template("compact").answers.values()))
    data = build_trial_data(loaded.tokenizer, {"train": mixed_rows()}, ["left_boundary", "right_boundary"], answers)
    config = TrialConfig(model_path=loaded.path, variables=("left_boundary", "right_boundary"), layer=layer,
                         component=component, position=position, source_position=source_position,
                         intervention=InterventionConfig(kind="boundless"), train=TrainConfig(cache=cache, seed=1))
    interchange = build_interchange(config, loaded.model, data.table, cache_dir)
    with torch.no_grad():
        interchange.intervention.basis.generator.normal_(0, 0.3)
    return interchange, interchange.locate(data.split("train"))


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("component", ["block", "attention", "mlp"])
@pytest.mark.parametrize("options", [{"cache": "auto"}, {"cache": "auto", "cache_dir": "FILE"}, {"cache": "off"}],
                         ids=["memory", "file", "uncached"])
def test_fast_paths_equal_the_plain_path(tiny_price, tmp_path, layer, component, options):
    if options.get("cache_dir") == "FILE":
        options = {**options, "cache_dir": tmp_path}
    # Base at the amount (its token index differs between the two templates), source at the last token;
    # at layer 0 the edit reaches the answer through the layer above.
    interchange, pairs = interchange_for(tiny_price, layer, "amount_last_digit", "last", component, **options)
    # Layer 0's sub-layers start from the embeddings, which are not worth caching.
    assert interchange.frozen.cached == (options["cache"] == "auto" and (component == "block" or layer > 0))
    assert_fast_equals_plain(interchange, pairs, moves_the_answer=layer == 0)


@pytest.mark.parametrize("component", ["block", "attention", "mlp"])
def test_fast_paths_equal_the_plain_path_at_the_last_layer(tiny_price, component):
    interchange, pairs = interchange_for(tiny_price, 1, "last", "amount_first_digit", component)
    assert_fast_equals_plain(interchange, pairs, moves_the_answer=True)


def assert_fast_equals_plain(interchange, pairs, moves_the_answer):
    with torch.no_grad():
        fast = interchange.logits(pairs)
        plain = interchange.logits(pairs, plain=True)
        untouched = interchange.frozen.plain_logits(pairs.pairs.base_rows)
    # Tight: a random tiny model's sub-layers move the answer by as little as 1e-4.
    torch.testing.assert_close(fast, plain, atol=1e-6, rtol=1e-5)
    if moves_the_answer:
        assert (fast - untouched).abs().max() > 2e-5


@pytest.mark.parametrize(("component", "position", "source_position"), [
    ("block", "amount_first_digit+last", None), ("mlp", "amount_first_digit+last", "amount_last_digit+-2"),
    ("attention", "amount_dollars+amount_first_digit+last", None)])
def test_fast_paths_equal_the_plain_path_at_a_group_of_tokens(tiny_price, component, position, source_position):
    interchange, pairs = interchange_for(tiny_price, 1, position, source_position, component)
    assert pairs.base_positions.shape == (len(pairs), len(position.split("+")))
    assert_fast_equals_plain(interchange, pairs, moves_the_answer=True)


def test_a_sub_layer_site_shares_the_cache_of_the_layer_below(tiny_price, tmp_path):
    interchange_for(tiny_price, 0, "last", cache_dir=tmp_path)
    interchange_for(tiny_price, 1, "last", component="mlp", cache_dir=tmp_path)
    interchange_for(tiny_price, 1, "last", component="attention", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1


def test_a_layers_cache_is_built_from_the_highest_cached_layer_below_it(tiny_price, tmp_path):
    alone = tmp_path / "alone"
    interchange_for(tiny_price, 1, "last", cache_dir=alone)  # built from the embeddings
    ladder = tmp_path / "ladder"
    interchange_for(tiny_price, 0, "last", cache_dir=ladder)
    calls = []
    first = get_module(tiny_price.model, layer_site(tiny_price.model, 0))
    handle = first.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    try:
        interchange_for(tiny_price, 1, "last", cache_dir=ladder)  # built from layer 0's cache
    finally:
        handle.remove()
    assert calls and set(calls) == {1}  # only one-prompt probes of widths, never over the prompt table
    (built_alone,), built_on = list(alone.glob("*.npy")), sorted(ladder.glob("*.npy"))
    assert [path.name.rsplit(".", 2)[-2] for path in built_on] == ["0", "1"]
    np.testing.assert_array_equal(np.load(built_alone), np.load(built_on[1]))


def test_the_intervention_changes_the_output(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    with torch.no_grad():
        intervened = interchange.logits(pairs)
        untouched = interchange.frozen.logits(pairs.pairs.base_rows, lambda hidden, positions: hidden)
        reference = interchange.frozen.plain_logits(pairs.pairs.base_rows)
    torch.testing.assert_close(untouched, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(intervened, untouched, atol=1e-3)


def test_full_swap_at_the_last_layer_and_position_gives_the_sources_output(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 1, "last")
    interchange.intervention = build_intervention("full_swap", interchange.frozen.hidden_size(), 2)
    only_first = pairs.select(torch.nonzero(pairs.pairs.active[:, 0]).flatten())
    with torch.no_grad():
        swapped = interchange.logits(only_first)
        source = interchange.frozen.plain_logits(only_first.pairs.source_rows[:, 0])
    torch.testing.assert_close(swapped, source, atol=1e-4, rtol=1e-4)


def test_file_cache_is_shared_and_reused(tiny_price, tmp_path):
    interchange_for(tiny_price, 1, "last", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    interchange_for(tiny_price, 1, "last", cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == stamp


def test_gradients_reach_only_the_intervention(tiny_price):
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    logits = interchange.logits(pairs)
    logits.logsumexp(dim=1).sum().backward()
    assert all(p.grad is None for p in tiny_price.model.parameters())
    assert interchange.intervention.basis.generator.grad is not None
    assert interchange.intervention.mask.boundaries.grad is not None


def test_bf16_model_with_fp32_rotation(tiny_price):
    tiny_price.model.to(torch.bfloat16)
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    logits = interchange.logits(pairs)
    logits.sum().backward()
    assert interchange.intervention.basis.generator.grad.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_the_head_reads_a_contiguous_answer_position(tiny_price):
    """A strided (B, 1, hidden) slice sends the LM head down a slow batched matmul on CPU."""
    interchange, pairs = interchange_for(tiny_price, 0, "last")
    seen = []
    head = tiny_price.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(
        lambda module, args: seen.append((args[0].shape, args[0].is_contiguous())))
    try:
        interchange.logits(pairs.select(torch.arange(4)))
    finally:
        handle.remove()
    assert seen == [((4, 1, interchange.frozen.hidden_size()), True)]
