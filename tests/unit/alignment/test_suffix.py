"""The suffix path (layers above the site on the tokens from the earliest edited one on, earlier keys and
values from the store) gives the plain path's logits and the intervention's gradients: per architecture,
with left padding and per-example positions, at a layer's output and at its attention and MLP outputs."""

import pytest
import torch
import torch.nn.functional as F

from alignment import InterventionConfig, TrainConfig, TrialConfig, build_interchange
from alignment.batches import build_trial_data
from alignment.hooks import capture_output
from alignment.models import LoadedModel
from alignment.sites import component_site
from tests.helpers import tiny_model
from tests.unit.alignment.test_frozen_paths import TASK, mixed_rows

FAMILIES = ["gpt2", "llama", "qwen2", "mistral", "gpt_neox"]


def suffix_interchange(tokenizer, family, layer, component, position="amount_last_digit", source_position="last",
                       model_options=None, **train):
    """A 3-layer random `family` model's interchange over mixed-length (left-padded) prompts, and its pairs."""
    loaded = LoadedModel(tiny_model(family, len(tokenizer), layers=3, **(model_options or {})), tokenizer, family)
    answers = sorted(set(TASK.template("compact").answers.values()))
    data = build_trial_data(loaded.tokenizer, {"train": mixed_rows()}, ["left_boundary", "right_boundary"], answers)
    config = TrialConfig(model_path=family, variables=("left_boundary", "right_boundary"), layer=layer,
                         component=component, position=position, source_position=source_position,
                         intervention=InterventionConfig(kind="boundless"), train=TrainConfig(seed=1, **train))
    interchange = build_interchange(config, loaded.model, data.table)
    with torch.no_grad():
        interchange.intervention.basis.generator.normal_(0, 0.3)
    return interchange, interchange.locate(data.split("train"))


def logits_and_gradients(interchange, pairs, plain):
    parameters = [p for p in interchange.intervention.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.grad = None
    logits = interchange.logits(pairs, plain=plain)
    F.cross_entropy(logits, pairs.pairs.labels).backward()
    return logits.detach(), [parameter.grad.clone() for parameter in parameters]


def assert_suffix_equals_plain(interchange, pairs):
    suffix, suffix_grads = logits_and_gradients(interchange, pairs, plain=False)
    plain, plain_grads = logits_and_gradients(interchange, pairs, plain=True)
    untouched = interchange.frozen.plain_logits(pairs.pairs.base_rows)
    torch.testing.assert_close(suffix, plain, atol=1e-6, rtol=1e-5)
    for ours, reference in zip(suffix_grads, plain_grads, strict=True):
        assert reference.abs().max() > 0
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-4)
    assert (suffix - untouched).abs().max() > 2e-5  # the edit reaches the answer


def tokens_seen_above(interchange, pairs):
    """Token count of the last decoder layer's input in the fast path."""
    frozen = interchange.frozen
    last = component_site(frozen.model, 2, "block")
    with torch.no_grad(), capture_output(frozen.model, last) as captured:
        interchange.logits(pairs)
    return captured[-1].shape[1]  # the last pass: the first may fill the key/value store


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("layer", "component"), [(0, "block"), (1, "block"), (0, "attention"), (1, "attention"),
                                                  (0, "mlp"), (2, "mlp")])
def test_suffix_path_equals_the_plain_path(price_tokenizer, family, layer, component):
    # Token 4 from each prompt's start (and the last token, so that the edit reaches the answer from any
    # layer): 4 or 13 in padded coordinates, so the examples of a batch differ and the suffix starts at
    # the earliest; the shorter prompts' prefix is then all padding.
    interchange, pairs = suffix_interchange(price_tokenizer, family, layer, component, "4+last", None)
    frozen = interchange.frozen
    assert frozen.suffix_reason is None
    earliest = int(pairs.base_positions.min())
    assert pairs.base_positions.unique().numel() > 1 and 0 < earliest < frozen.table.seq_len - 1
    assert tokens_seen_above(interchange, pairs) == frozen.table.seq_len - earliest
    assert frozen.table.attention_mask.min() == 0  # left padding
    assert_suffix_equals_plain(interchange, pairs)
    assert frozen.store.used == len(pairs.pairs.base_rows.unique())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize(("component", "position", "source_position"), [
    ("block", "amount_first_digit+last", None), ("attention", "amount_dollars+amount_first_digit+last", None),
    ("mlp", "amount_first_digit+last", "amount_last_digit+-2")])
def test_suffix_path_at_a_group_of_tokens(price_tokenizer, family, component, position, source_position):
    interchange, pairs = suffix_interchange(price_tokenizer, family, 1, component, position, source_position)
    assert tokens_seen_above(interchange, pairs) == interchange.frozen.table.seq_len - int(pairs.base_positions.min())
    assert_suffix_equals_plain(interchange, pairs)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_an_edit_at_the_first_token_runs_every_token(price_tokenizer, family):
    """No prefix to keep (the longest prompt's first token is edited): every token runs, as the plain path."""
    interchange, pairs = suffix_interchange(price_tokenizer, family, 0, "block", "0+last", None)
    assert int(pairs.base_positions.min()) == 0
    assert tokens_seen_above(interchange, pairs) == interchange.frozen.table.seq_len
    assert_suffix_equals_plain(interchange, pairs)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rows_past_the_key_value_budget_are_recomputed(price_tokenizer, family):
    # A budget of a few rows: the first ones are kept, the others recomputed at every step, in the same batch.
    interchange, pairs = suffix_interchange(price_tokenizer, family, 0, "block", kv_budget_mb=0.1)
    store, rows = interchange.frozen.store, pairs.pairs.base_rows
    assert_suffix_equals_plain(interchange, pairs)                 # fills the store
    assert store.capacity is not None and 0 < store.used == store.capacity < len(rows.unique())
    assert store.holds(rows[:store.capacity]) and not store.holds(rows)
    assert_suffix_equals_plain(interchange, pairs)                 # kept and recomputed rows together


def test_evaluation_keeps_no_keys_and_values(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "llama", 1, "attention")
    with torch.no_grad():
        interchange.logits(pairs)
    assert interchange.frozen.store.used == 0
    assert_suffix_equals_plain(interchange, pairs)
    assert interchange.frozen.store.used == len(pairs.pairs.base_rows.unique())


def test_uncached_hidden_states_and_eager_attention(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "gpt2", 1, "block", cache="off",
                                            model_options={"attn_implementation": "eager"})
    assert interchange.frozen.suffix_reason is None and not interchange.frozen.cached
    assert_suffix_equals_plain(interchange, pairs)


def test_a_sliding_window_shorter_than_the_prompts_runs_every_token(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "mistral", 0, "block", model_options={"sliding_window": 8})
    assert "sliding window" in interchange.frozen.suffix_reason
    assert tokens_seen_above(interchange, pairs) == interchange.frozen.table.seq_len
    assert_suffix_equals_plain(interchange, pairs)


def test_the_switch_turns_it_off(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "llama", 0, "block", suffix_only=False)
    assert "turned off" in interchange.frozen.suffix_reason
    assert tokens_seen_above(interchange, pairs) == interchange.frozen.table.seq_len
    assert interchange.frozen.store.used == 0


def test_bf16_keys_and_values_are_kept_in_the_model_dtype(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "llama", 0, "attention")
    interchange.frozen.model.to(torch.bfloat16)
    suffix, _ = logits_and_gradients(interchange, pairs, plain=False)
    plain, _ = logits_and_gradients(interchange, pairs, plain=True)
    assert {keys.dtype for keys in interchange.frozen.store.keys} == {torch.bfloat16}
    torch.testing.assert_close(suffix, plain, atol=2e-2, rtol=2e-2)


def test_the_untouched_model_runs_only_the_last_token(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "gpt2", 0, "block")
    frozen, rows = interchange.frozen, pairs.pairs.base_rows
    with torch.no_grad(), capture_output(frozen.model, component_site(frozen.model, 2, "block")) as captured:
        untouched = frozen.logits(rows)
    assert captured[-1].shape[1] == 1
    torch.testing.assert_close(untouched, frozen.plain_logits(rows), atol=1e-6, rtol=1e-5)


def test_the_store_grows_with_the_rows_it_keeps(price_tokenizer):
    interchange, pairs = suffix_interchange(price_tokenizer, "gpt2", 0, "block")
    store, rows = interchange.frozen.store, pairs.pairs.base_rows
    assert_suffix_equals_plain(interchange, pairs.select(torch.arange(3)))
    assert store.used == 3 and len(store.keys[0]) == 3
    assert_suffix_equals_plain(interchange, pairs)                 # the first three stay where they were
    assert store.used == len(rows.unique()) < len(interchange.frozen.table)  # the sources take no room
    assert store.nbytes == store.used * sum(t[0].numel() * t.element_size() for t in (*store.keys, *store.values))
