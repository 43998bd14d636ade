"""The suffix path (layers above the site on the tokens from the earliest edited one on, earlier keys and
values from the store) gives the plain path's logits and the intervention's gradients: per architecture,
with left padding and per-example positions, at a layer's output and at its attention and MLP outputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alignment import InterventionConfig, TrainConfig, TrialConfig, build_interchange
from alignment.batches import build_trial_data
from alignment.frozen import FrozenSite
from alignment.hooks import capture_output
from alignment.models import LoadedModel
from alignment.site_files import KeyValueFile, rows_file
from alignment.sites import component_site
from tests.helpers import tiny_model
from tests.unit.alignment.test_frozen_paths import TASK, mixed_rows

FAMILIES = ["gpt2", "llama", "qwen2", "mistral", "gpt_neox"]


def suffix_interchange(tokenizer, family, layer, component, position="amount_last_digit", source_position="last",
                       model_options=None, cache_dir=None, model=None, kv_rows=None, **train):
    """A 3-layer random `family` model's interchange over mixed-length (left-padded) prompts, and its pairs."""
    model = model or tiny_model(family, len(tokenizer), layers=3, **(model_options or {}))
    loaded = LoadedModel(model, tokenizer, family)
    answers = sorted(set(TASK.template("compact").answers.values()))
    data = build_trial_data(loaded.tokenizer, {"train": mixed_rows()}, ["left_boundary", "right_boundary"], answers)
    config = TrialConfig(model_path=family, variables=("left_boundary", "right_boundary"), layer=layer,
                         component=component, position=position, source_position=source_position,
                         intervention=InterventionConfig(kind="boundless"), train=TrainConfig(seed=1, **train))
    if kv_rows is not None:  # the sweep's driver builds the file first, of the rows it names
        FrozenSite(loaded.model, component_site(loaded.model, layer, component), data.table, cache_dir=cache_dir,
                   kv_rows=kv_rows)
    interchange = build_interchange(config, loaded.model, data.table, cache_dir)
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


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("layer", "component"), [(1, "block"), (1, "attention"), (2, "mlp")])
def test_keys_and_values_shared_through_a_file_equal_the_plain_path(price_tokenizer, tmp_path, family, layer,
                                                                     component):
    interchange, pairs = suffix_interchange(price_tokenizer, family, layer, component, "4+last", None,
                                            cache_dir=tmp_path)
    frozen = interchange.frozen
    assert frozen.shared_keys_values is not None and frozen.shared_keys_values.skip == 0
    assert_suffix_equals_plain(interchange, pairs)
    assert tokens_seen_above(interchange, pairs) == frozen.table.seq_len - int(pairs.base_positions.min())
    assert frozen.store.used == 0  # nothing computed per trial


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_file_of_a_lower_layer_serves_the_sites_above_it(price_tokenizer, tmp_path, family):
    lower, _ = suffix_interchange(price_tokenizer, family, 0, "block", cache_dir=tmp_path)
    (built,) = tmp_path.glob("*.kv")
    stamp = built.stat().st_mtime_ns
    for layer, component, skip in [(1, "block", 1), (1, "attention", 0), (1, "mlp", 0), (2, "attention", 1)]:
        interchange, pairs = suffix_interchange(price_tokenizer, family, layer, component, "4+last", None,
                                                cache_dir=tmp_path, model=lower.frozen.model)
        assert interchange.frozen.shared_keys_values.skip == skip
        assert_suffix_equals_plain(interchange, pairs)
    assert list(tmp_path.glob("*.kv")) == [built] and built.stat().st_mtime_ns == stamp


def test_keys_and_values_past_the_budget_are_not_shared(price_tokenizer, tmp_path):
    interchange, pairs = suffix_interchange(price_tokenizer, "llama", 1, "block", cache_dir=tmp_path,
                                            kv_budget_mb=0.01)
    assert interchange.frozen.shared_keys_values is None and not list(tmp_path.glob("*.kv"))
    assert_suffix_equals_plain(interchange, pairs)
    assert interchange.frozen.store.used > 0


def test_bf16_keys_and_values_shared_through_a_file_are_exact(price_tokenizer, tmp_path):
    """Stored as float32, read back in the model's dtype: the very keys and values the model computes."""
    model = tiny_model("llama", len(price_tokenizer), layers=3).to(torch.bfloat16)
    interchange, pairs = suffix_interchange(price_tokenizer, "llama", 1, "block", cache_dir=tmp_path, model=model)
    frozen = interchange.frozen
    rows, tokens = torch.arange(len(frozen.table)), frozen.table.seq_len - 1
    shared, computed = frozen.shared_keys_values.gather(rows, tokens), frozen._upper_keys_values(rows, tokens)
    for ours, reference in zip(shared, computed, strict=True):
        assert ours[0].dtype == torch.bfloat16
        torch.testing.assert_close(ours, reference, atol=0, rtol=0)
    suffix, _ = logits_and_gradients(interchange, pairs, plain=False)
    plain, _ = logits_and_gradients(interchange, pairs, plain=True)
    torch.testing.assert_close(suffix, plain, atol=2e-2, rtol=2e-2)


def test_a_file_of_some_rows_serves_them_and_the_others_are_computed(price_tokenizer, tmp_path):
    """A sweep's file holds its pairs' bases only: a batch with another base gets its prefix computed, exactly."""
    first, pairs = suffix_interchange(price_tokenizer, "llama", 1, "block", "4+last", None)
    bases = pairs.pairs.base_rows.unique()
    model = first.frozen.model
    partial, pairs = suffix_interchange(price_tokenizer, "llama", 1, "block", "4+last", None, cache_dir=tmp_path,
                                        model=model, kv_rows=bases[:3])
    frozen = partial.frozen
    assert frozen.shared_keys_values.holds(bases[:3]) and not frozen.shared_keys_values.holds(bases)
    assert_suffix_equals_plain(partial, pairs)
    assert frozen.store.used == len(bases)  # the file did not hold them all: the batch went to the store
    held = pairs.select(torch.nonzero(torch.isin(pairs.pairs.base_rows, bases[:3])).flatten())
    again, _ = suffix_interchange(price_tokenizer, "llama", 1, "block", "4+last", None, cache_dir=tmp_path, model=model)
    assert again.frozen.shared_keys_values.holds(bases[:3])  # the file is mapped, not built again for every row
    assert_suffix_equals_plain(again, held)
    assert again.frozen.store.used == 0


def test_keys_and_values_copied_to_the_device_once_equal_the_plain_path(price_tokenizer, tmp_path):
    """What an accelerator does (the file's layers resident on the device, in the model's dtype), here on the CPU."""
    interchange, pairs = suffix_interchange(price_tokenizer, "qwen2", 1, "attention", "4+last", None,
                                            cache_dir=tmp_path)
    shared = interchange.frozen.shared_keys_values
    interchange.frozen.shared_keys_values = KeyValueFile(shared.array, np.load(rows_file(next(tmp_path.glob("*.kv")))),
                                                         len(interchange.frozen.table), shared.skip, shared.device,
                                                         shared.dtype, resident=True)
    assert interchange.frozen.shared_keys_values.resident is not None
    assert_suffix_equals_plain(interchange, pairs)
