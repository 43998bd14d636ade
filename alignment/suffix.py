"""Suffix-only upper layers: what an edit at token P cannot change is computed once.

Attention is causal: an intervention at token P of a prompt changes nothing at its tokens
before P, in any layer. Above the site, those tokens' keys and values are the same at every
step of a trial. So a step runs the layers above the site only on the tokens from the batch's
split on (the earliest edited token of any of its examples), and their attention reads the
earlier tokens' keys and values from a transformers `DynamicCache` built from a store:

- `KeyValueStore` keeps, per prompt row, the keys and values of every layer above the site at
  the prompt's tokens before its last, in the model's dtype on its device, computed once
  without gradient, within a byte budget (filled by the first rows a trial uses as bases);
- a row that is not stored (past the budget, or seen only in evaluation, under no_grad) gets its
  prefix keys and values recomputed without gradient for that batch: still cheaper than the
  plain path when training (no backward through them), the same forward pass in evaluation.

The rest is transformers' own machinery: the suffix's real position ids (rotary models), its
left-padding mask over prefix + suffix as one 4D causal mask offset by the prefix length
(`suffix_mask`), and the model's forward with the cache. Learned position embeddings (GPT-2)
enter below the site only, from the cached states, or through the suffix's position ids at a
sub-layer of layer 0. `suffix_support` says where this cannot apply (an attention kernel
that takes no 4D mask, a sliding window shorter than the prompts, a model without a cache
argument); FrozenSite then runs every token as before.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask

KeysValues = list[tuple[Tensor, Tensor]]  # per layer above the site: (B, kv_heads, tokens, head_dim) twice
MASKED_ATTENTION = ("sdpa", "eager")      # kernels that take the 4D mask the suffix needs


def cache_argument(model: nn.Module) -> str | None:
    """The name under which the model's forward takes a key/value cache, None when it takes none."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def suffix_support(model: nn.Module, first_layer: int, seq_len: int) -> str | None:
    """Why the suffix path cannot run the layers from `first_layer` up on `seq_len`-token prompts; None if it can."""
    config = getattr(model, "config", None)
    if config is None or cache_argument(model) is None:
        return f"{type(model).__name__} takes no key/value cache"
    if not getattr(config, "is_causal", True):
        return "the model's attention is not causal"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in MASKED_ATTENTION:
        return f"attention kernel {implementation!r} is not one of {MASKED_ATTENTION}"
    if seq_len < 2:
        return "prompts of one token have no prefix"
    layers = DynamicCache(config=config).layers
    if first_layer >= len(layers):
        return "no layer runs above the site"
    short = [index for index, layer in enumerate(layers[first_layer:], first_layer)
             if getattr(layer, "is_sliding", False) and getattr(layer, "sliding_window", seq_len) < seq_len]
    if short:
        return f"layers {short} attend through a sliding window shorter than the {seq_len}-token prompts"
    return None


def prefix_cache(model: nn.Module, first_layer: int, prefix: KeysValues) -> DynamicCache:
    """A fresh `DynamicCache` holding `prefix` in the layers from `first_layer` up (the layers below stay empty)."""
    empty: list[tuple[Tensor | None, Tensor | None]] = [(None, None)] * first_layer
    return DynamicCache(ddp_cache_data=[*empty, *prefix], config=getattr(model, "config", None))


def suffix_mask(model: nn.Module, prefix_keys: Tensor, attention_mask: Tensor, suffix_length: int) -> Any:
    """(B, 1, S, P + S) the causal mask of S suffix tokens after P cached ones, with the prompts' padding.

    Built by transformers for the model's attention kernel and handed to the forward as a 4D mask,
    so that the model does not size it from its cache's first layer (empty below the site).

    Args:
        prefix_keys: (B, kv_heads, P, head_dim) the cached keys of one layer (only their shape is read).
        attention_mask: (B, P + S) 1 for real tokens, 0 for left padding.
    """
    sizes = DynamicCache(ddp_cache_data=[(prefix_keys, prefix_keys)])
    dtype = next(model.parameters()).dtype
    shape = (prefix_keys.shape[0], suffix_length, 1)
    return create_causal_mask(config=model.config, inputs_embeds=prefix_keys.new_empty(shape, dtype=dtype),
                              attention_mask=attention_mask, cache=sizes, layer_idx=0, allow_is_causal_skip=False)


def cache_layers(cache: DynamicCache, first_layer: int) -> KeysValues:
    """The keys and values a forward pass left in `cache`'s layers from `first_layer` up."""
    layers: list[Any] = cache.layers[first_layer:]
    return [(layer.keys, layer.values) for layer in layers]


class KeyValueStore:
    """Keys and values of the layers above the site, per prompt row, within `budget_bytes`.

    Rows are stored the first time they are computed while there is room (a row is never
    evicted); `holds` says whether every row of a batch is there. The storage grows (doubling)
    with the rows stored, up to `capacity` rows, so prompts only ever used as sources cost nothing.
    """

    def __init__(self, n_rows: int, budget_bytes: float):
        self.slot_of = torch.full((n_rows,), -1, dtype=torch.long)
        self.budget_bytes = budget_bytes
        self.keys: list[Tensor] = []       # per layer: (allocated rows, kv_heads, tokens, head_dim)
        self.values: list[Tensor] = []
        self.capacity: int | None = None
        self.used = 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def room(self) -> int | None:
        """Rows that still fit; None before the first row (the size of a row is not known yet)."""
        return None if self.capacity is None else self.capacity - self.used

    def holds(self, rows: Tensor) -> bool:
        return bool((self.slot_of[rows.cpu()] >= 0).all())

    def add(self, rows: Tensor, computed: KeysValues) -> None:
        """Store the keys and values `computed` for distinct `rows` (as many as fit)."""
        if self.capacity is None:
            row_bytes = sum(t[0].numel() * t.element_size() for pair in computed for t in pair)
            self.capacity = min(len(self.slot_of), int(self.budget_bytes // row_bytes)) if row_bytes else 0
        count = min(len(rows), self.room() or 0)
        if count == 0:
            return
        self._grow(self.used + count, computed)
        slots = torch.arange(self.used, self.used + count)
        for stored_keys, stored_values, (keys, values) in zip(self.keys, self.values, computed, strict=True):
            stored_keys[slots.to(stored_keys.device)] = keys[:count]
            stored_values[slots.to(stored_values.device)] = values[:count]
        self.slot_of[rows[:count].cpu()] = slots
        self.used += count

    def gather(self, rows: Tensor, tokens: int, fresh_rows: Tensor | None = None,
               fresh: KeysValues | None = None) -> KeysValues:
        """Per layer, (B, kv_heads, `tokens`, head_dim) keys and values of `rows`' first tokens.

        Rows in sorted `fresh_rows` are read from `fresh` (their keys and values just computed), the others from
        the store.
        """
        rows = rows.cpu()
        if fresh is None or fresh_rows is None:
            slots = self.slot_of[rows]
            return [(keys[slots.to(keys.device), :, :tokens], values[slots.to(values.device), :, :tokens])
                    for keys, values in zip(self.keys, self.values, strict=True)]
        is_fresh = torch.isin(rows, fresh_rows)
        in_fresh = torch.searchsorted(fresh_rows, rows[is_fresh])
        stored, slots = ~is_fresh, self.slot_of[rows[~is_fresh]]
        merged: KeysValues = []
        for layer, pair in enumerate(fresh):
            both = []
            for kind, computed in enumerate(pair):
                out = computed.new_empty((len(rows), computed.shape[1], tokens, computed.shape[3]))
                out[is_fresh.to(out.device)] = computed[in_fresh.to(out.device), :, :tokens]
                if len(slots):
                    kept = (self.keys, self.values)[kind][layer]
                    out[stored.to(out.device)] = kept[slots.to(kept.device), :, :tokens]
                both.append(out)
            merged.append((both[0], both[1]))
        return merged

    def _grow(self, rows: int, computed: KeysValues) -> None:
        """Make room for `rows` rows: at least double what is allocated, at most `capacity`."""
        allocated = len(self.keys[0]) if self.keys else 0
        if rows <= allocated:
            return
        size = min(self.capacity or 0, max(rows, 2 * allocated))

        def grown(old: Tensor | None, like: Tensor) -> Tensor:
            new = like.new_empty((size, *like.shape[1:]))
            if old is not None:
                new[:self.used] = old[:self.used]
            return new

        none: list[Tensor | None] = [None] * len(computed)
        old_keys, old_values = self.keys or none, self.values or none
        self.keys = [grown(old, keys) for old, (keys, _) in zip(old_keys, computed, strict=True)]
        self.values = [grown(old, values) for old, (_, values) in zip(old_values, computed, strict=True)]
