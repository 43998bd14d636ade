"""A frozen model seen from one site: where the speed of a trial comes from.

The model never changes during a trial, so most of a plain interchange step is waste:
- the source pass only needs the hidden state at the site: it stops there, under no_grad;
- the base pass below the site gives the same hidden states every epoch: they are computed
  once for every prompt of the trial and cached (within a memory budget; past it they are
  recomputed per batch under no_grad), optionally in a file that every trial of a sweep at
  the same layer maps into memory;
- each step then runs only the layers from the site up, starting from the cached states with
  the intervention applied (`hooks.skip_layers`), and computes logits at the answer position
  only (`logits_to_keep`; prompts are left-padded, so the answer position is the last);
- and those layers run only on the tokens from the earliest edited one on, attending to the
  earlier tokens' keys and values, kept per prompt (`alignment/suffix.py`): the suffix path.

Sub-layer sites (a layer's attention or MLP output, or any module inside decoder layer L) use
the same cache one layer lower: it holds the *input* of layer L (the output of layer L-1), and
each step runs layer L from it with the edit applied by a hook on the sub-layer, then the layers
above. The source vectors of such a site are read by running layer L from the cache up to the
sub-layer. At L = 0 the input is the embeddings, which cost nothing to recompute, so nothing is
cached and each step runs the whole (cheap) model with the hook.

`plain_logits` is the reference: two full forward passes with hooks, as pyvene does it. Tests
check that every fast path gives the same logits and gradients.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import DynamicCache

from alignment.hooks import capture_output, edit_output, output_is_tuple, run_until_stopped, skip_layers
from alignment.prompts import PromptTable
from alignment.site_files import (
    HIDDEN,
    KEYS_VALUES,
    KeyValueFile,
    cached_layers,
    load_or_build,
    rows_file,
    save,
    stacked,
)
from alignment.sites import get_module, layer_count, site_layer
from alignment.suffix import (
    KeysValues,
    KeyValueStore,
    cache_argument,
    cache_layers,
    prefix_cache,
    suffix_mask,
    suffix_support,
)

log = logging.getLogger(__name__)
# An edit of the site's output: (hidden (B, S, width), token positions (B, G) into its axis 1) -> edited hidden.
Edit = Callable[[Tensor, Tensor], Tensor]


class FrozenSite:
    """Hidden states at `site` and answer logits after editing them, for the prompts of `table`.

    Args:
        model: a causal LM, already frozen (eval mode, no parameter requires grad).
        site: module path whose output is intervened on (a decoder layer, a module inside one, or any).
        table: every prompt the trial uses.
        cache: "auto" caches the hidden states the fast path starts from when they fit
            `cache_budget_mb`; "off" recomputes them per batch.
        cache_dir: share the cache through a file here (one per resume layer and prompt table), and
            the suffix path's prefix keys and values of every prompt through another, when its size
            fits `kv_budget_mb` (`alignment/site_files.py`): of the prompts `kv_rows` (default: all;
            a sweep's driver passes those its pairs use as bases).
        suffix: run the layers above the site only on the tokens from the earliest edited one on,
            with the earlier tokens' keys and values kept in a store of `kv_budget_mb` (or
            recomputed without gradient per batch past it), or read from the shared file; where
            that cannot apply (`suffix_reason` says why) every token runs.

    Attributes:
        decoder: (layer list path, index) of the decoder layer whose output the fast path
            starts from (the site itself for a layer output, the layer below for a sub-layer
            site), or None when every step runs the whole model (a site outside the layers,
            or inside layer 0).
        first_upper: the first decoder layer a step runs (None for a site outside the layers).
        inside: whether the site is a module inside the layer above `decoder` (edited by a hook
            while that layer runs) rather than `decoder`'s own output (edited directly).
        shared_keys_values: the prefix keys and values read from the sweep's file (None: the store).
    """

    def __init__(self, model: nn.Module, site: str, table: PromptTable, cache: str = "auto",
                 cache_budget_mb: float = 2048.0, cache_dir: str | Path | None = None, suffix: bool = True,
                 kv_budget_mb: float = 2048.0, kv_rows: Tensor | None = None):
        if cache not in ("auto", "off"):
            raise ValueError(f"cache must be 'auto' or 'off', got {cache!r}")
        get_module(model, site)
        self.model, self.site, self.table = model, site, table
        self.device = next(model.parameters()).device
        self.decoder, self.inside = _resume_point(model, site)
        self.resume_site = f"{self.decoder[0]}.{self.decoder[1]}" if self.decoder else site
        self.returns_tuple = output_is_tuple(model, self.resume_site, table.input_ids.to(self.device))
        self.keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        # The last position as an index tensor, not logits_to_keep=1: indexing gathers a contiguous
        # (B, 1, hidden) copy for the LM head, where the int's strided slice sends torch's linear down a
        # batched-matmul path that is several times slower on CPU (12 % of a GPT-2-small step at layer 6,
        # forward and backward; benchmarks/HISTORY.md).
        self._last_position = torch.tensor([table.seq_len - 1], device=self.device)
        self._cache: Tensor | np.ndarray | None = None
        if cache == "auto" and self.decoder is not None and self._cache_bytes() <= cache_budget_mb * 2**20:
            self._cache = self._load_or_build_cache(Path(cache_dir) if cache_dir else None)
        self.first_upper = self.decoder[1] + 1 if self.decoder else (0 if self.inside else None)
        self.suffix_reason = ("turned off (train.suffix_only = false)" if not suffix else
                              "the site is outside the decoder layers" if self.first_upper is None else
                              suffix_support(model, self.first_upper, table.seq_len))
        if self.suffix_reason is not None and suffix:
            log.info("every token runs above %s: %s", site, self.suffix_reason)
        self.store = KeyValueStore(len(table), kv_budget_mb * 2**20)
        place = site_layer(model, site)
        self._last_layer = f"{place[0]}.{layer_count(model) - 1}" if place else site
        self.shared_keys_values: KeyValueFile | None = None
        if cache_dir is not None and isinstance(self._cache, np.ndarray) and self.suffix_reason is None:
            self.shared_keys_values = self._shared_keys_values(Path(cache_dir), kv_budget_mb, kv_rows)

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def hidden(self, rows: Tensor) -> Tensor:
        """(B, T, hidden) the states the fast path starts from (decoder layer `decoder`'s output), no gradient.

        For a layer-output site these are the site's own output.
        """
        if self._cache is None:
            return self._run_until(self.resume_site, rows)
        if isinstance(self._cache, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(self._cache[rows.numpy()])).to(self.device, self.dtype)
        return self._cache[rows.to(self._cache.device)].to(self.dtype)

    def vectors(self, rows: Tensor, positions: Tensor) -> Tensor:
        """(N, hidden) the site's output at token `positions` of prompts `rows`, without gradient."""
        if self._cache is not None and not self.inside:
            if isinstance(self._cache, np.ndarray):
                picked = self._cache[rows.numpy(), positions.numpy()]
                return torch.from_numpy(np.ascontiguousarray(picked)).to(self.device, self.dtype)
            return self._cache[rows.to(self._cache.device), positions.to(self._cache.device)].to(self.dtype)
        unique, inverse = torch.unique(rows, return_inverse=True)
        return self._site_states(unique)[inverse.to(self.device), positions.to(self.device)]

    def plain_vectors(self, rows: Tensor, positions: Tensor) -> Tensor:
        """`vectors` through a full forward pass (the reference path)."""
        with torch.no_grad(), capture_output(self.model, self.site) as captured:
            self.model(**self._inputs(rows), use_cache=False)
        return captured[0][torch.arange(len(rows)), positions.to(self.device)]

    def logits(self, rows: Tensor, edit: Edit | None = None, positions: Tensor | None = None) -> Tensor:
        """(B, vocab) next-token logits at the last position of prompts `rows`, the site's output edited.

        Runs only the layers from the site up when the site is in a decoder layer above the first,
        and (the suffix path) only on the tokens from the earliest of `positions` on.

        Args:
            edit: the edit of the site's output, None for none.
            positions: (B, G) the padded token indices `edit` changes (default: the last token).
        """
        positions = self._positions(rows, positions)
        start = int(positions.min())
        if self.suffix_reason is None and start > 0:  # at the first token there is no prefix to keep
            return self._suffix_logits(rows, edit, positions, start)
        if self.decoder is None:
            return self.plain_logits(rows, edit, positions)
        states = self.hidden(rows)
        if not self.inside:
            with self._resumed_from(_edited(edit, states, positions)):
                return self._forward(self._inputs(rows))
        with self._resumed_from(states), self._editing(edit, positions):
            return self._forward(self._inputs(rows))

    def plain_logits(self, rows: Tensor, edit: Edit | None = None, positions: Tensor | None = None) -> Tensor:
        """The reference path: a full forward pass with the edit applied by a hook."""
        with self._editing(edit, self._positions(rows, positions)):
            return self._forward(self._inputs(rows))

    def _suffix_logits(self, rows: Tensor, edit: Edit | None, positions: Tensor, start: int) -> Tensor:
        """`logits` with the layers above the site run on tokens `start`.. only."""
        prefix = self._prefix_keys_values(rows, start)
        inputs = self._inputs(rows, start)
        inputs["attention_mask"] = suffix_mask(self.model, prefix[0][0], inputs["attention_mask"],
                                               self.table.seq_len - start)
        cache = prefix_cache(self.model, self.first_upper or 0, prefix)
        local = positions - start
        if self.decoder is None:
            with self._editing(edit, local):
                return self._forward(inputs, cache)
        states = self.hidden(rows)[:, start:]
        if not self.inside:
            with self._resumed_from(_edited(edit, states, local)):
                return self._forward(inputs, cache)
        with self._resumed_from(states), self._editing(edit, local):
            return self._forward(inputs, cache)

    def _prefix_keys_values(self, rows: Tensor, start: int) -> KeysValues:
        """Per layer above the site, (B, kv_heads, `start`, head_dim) keys and values of prompts `rows`."""
        if self.shared_keys_values is not None and self.shared_keys_values.holds(rows):
            return self.shared_keys_values.gather(rows, start)
        unique = torch.unique(rows.cpu())
        missing = unique[self.store.slot_of[unique] < 0]
        if not len(missing):
            return self.store.gather(rows, start)
        # Training rows come back every epoch: keep them (up to the last token, for any later split).
        # Evaluation (no gradient) costs a forward pass either way and does not take their room.
        keep = torch.is_grad_enabled() and self.store.room() != 0
        computed = self._upper_keys_values(missing, self.table.seq_len - 1 if keep else start)
        if keep:
            self.store.add(missing, computed)
        return self.store.gather(rows, start, missing, computed)

    def _upper_keys_values(self, rows: Tensor, tokens: int) -> KeysValues:
        """Keys and values of the layers above the site at the first `tokens` tokens of prompts `rows`, no gradient."""
        inputs = {name: value[:, :tokens] for name, value in self._inputs(rows).items()}
        cache = prefix_cache(self.model, 0, [])
        resumed = self._resumed_from(self.hidden(rows)[:, :tokens]) if self.decoder else nullcontext()
        with torch.no_grad(), resumed, capture_output(self.model, self._last_layer, stop=True):
            run_until_stopped(lambda: self._forward(inputs, cache))  # stops after the last layer: no head
        return cache_layers(cache, self.first_upper or 0)

    def upper_pass(self, rows: Tensor, outputs: Sequence[int], keys_values: bool) -> tuple[list[Tensor], KeysValues]:
        """One pass of prompts `rows` without gradient, every token, from the fast path's start (`decoder`'s cached
        output): the outputs (B, T, width) of the decoder layers `outputs` (above `decoder`) and, with `keys_values`,
        the keys and values (B, kv_heads, T, head_dim) of every layer above the site; without, the pass stops at
        the last of `outputs` and there are none."""
        assert self.decoder is not None and self.first_upper is not None
        layer_list = self.decoder[0]
        cache = prefix_cache(self.model, 0, []) if keys_values else None
        last = self._last_layer if keys_values else f"{layer_list}.{max(outputs)}"
        with ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(self._resumed_from(self.hidden(rows)))
            captured = [stack.enter_context(capture_output(self.model, f"{layer_list}.{d}")) for d in outputs]
            stack.enter_context(capture_output(self.model, last, stop=True))
            run_until_stopped(lambda: self._forward(self._inputs(rows), cache))
        return [c[0] for c in captured], cache_layers(cache, self.first_upper) if cache is not None else []

    def _editing(self, edit: Edit | None, positions: Tensor) -> AbstractContextManager[None]:
        """Within the block, the site's output is edited at `positions` (nothing when `edit` is None)."""
        if edit is None:
            return nullcontext()
        return edit_output(self.model, self.site, lambda hidden: edit(hidden, positions))

    def _positions(self, rows: Tensor, positions: Tensor | None) -> Tensor:
        if positions is None:
            return torch.full((len(rows), 1), self.table.seq_len - 1, dtype=torch.long)
        return positions.cpu()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _inputs(self, rows: Tensor, start: int = 0) -> dict[str, Tensor]:
        """Model inputs of prompts `rows` from token `start` on (the attention mask always covers every token)."""
        rows = rows.cpu()
        return {"input_ids": self.table.input_ids[rows, start:].to(self.device),
                "attention_mask": self.table.attention_mask[rows].to(self.device),
                "position_ids": self.table.position_ids[rows, start:].to(self.device)}

    def _forward(self, inputs: dict[str, Any], cache: DynamicCache | None = None) -> Tensor:
        """(B, vocab) logits at the last of `inputs`' tokens; with `cache`, after the keys and values in it."""
        extra: dict[str, Any] = {} if cache is None else {cache_argument(self.model) or "cache": cache}
        if self.keep_last:
            last = inputs["input_ids"].shape[1] - 1
            extra["logits_to_keep"] = (self._last_position if last == self.table.seq_len - 1 else
                                       torch.tensor([last], device=self.device))
        output = self.model(**inputs, use_cache=cache is not None, **extra)
        return output.logits[:, -1].float()

    def _resumed_from(self, states: Tensor) -> AbstractContextManager[None]:
        """Within the block, a forward pass skips the layers up to `decoder`, which outputs `states`."""
        if self.decoder is None:
            raise RuntimeError(f"site {self.site!r} has no decoder layer to resume from")
        layer_list, index = self.decoder
        return skip_layers(self.model, layer_list, index, states, self.returns_tuple)

    def _run_until(self, path: str, rows: Tensor) -> Tensor:
        """(B, T, width) the output of module `path` for prompts `rows`: a forward pass stopped there."""
        with torch.no_grad(), capture_output(self.model, path, stop=True) as captured:
            run_until_stopped(lambda: self.model(**self._inputs(rows), use_cache=False))
        return captured[0]

    def _site_states(self, rows: Tensor) -> Tensor:
        """(B, T, width) the site's output for prompts `rows`, from the cache below it when there is one."""
        if self._cache is None or not self.inside:
            return self._run_until(self.site, rows)
        with self._resumed_from(self.hidden(rows)):
            return self._run_until(self.site, rows)

    def hidden_size(self) -> int:
        """The width of the site's output (probed: a site need not be the residual stream)."""
        return int(self._run_until(self.site, torch.tensor([0])).shape[-1])

    def _cache_bytes(self) -> int:
        width = int(self._run_until(self.resume_site, torch.tensor([0])).shape[-1])
        return len(self.table) * self.table.seq_len * width * 4

    def _build_cache(self, batch_size: int = 256, below: tuple[int, np.ndarray] | None = None) -> Tensor:
        """(U, T, hidden) the resume site's output for every prompt, as float32 on the CPU. With `below`
        (a lower decoder layer and its cache), only the layers above it run."""
        parts = []
        for start in range(0, len(self.table), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(self.table)))
            resumed: AbstractContextManager[None] = nullcontext()
            if below is not None and self.decoder is not None:
                states = torch.from_numpy(np.ascontiguousarray(below[1][rows.numpy()])).to(self.device, self.dtype)
                resumed = skip_layers(self.model, self.decoder[0], below[0], states, self.returns_tuple)
            with resumed:
                parts.append(self._run_until(self.resume_site, rows).float().cpu())
        return torch.cat(parts)

    def _load_or_build_cache(self, cache_dir: Path | None) -> Tensor | np.ndarray:
        if cache_dir is None:
            return self._build_cache().to(self.device)
        assert self.decoder is not None  # only a site in the decoder layers is cached
        prefix, layer = self._file_prefix(), self.decoder[1]
        path = self.file_path(cache_dir, layer, HIDDEN)

        def build(temporary: Path) -> None:
            lower = [d for d in cached_layers(cache_dir, prefix, HIDDEN) if d < layer]
            below = None
            if lower:
                below = max(lower), np.load(self.file_path(cache_dir, max(lower), HIDDEN), mmap_mode="r")
            log.info("caching hidden states of %d prompts at %s into %s%s", len(self.table), self.resume_site,
                     path, f", from layer {below[0]}'s" if below else "")
            save(temporary, self._build_cache(below=below).numpy())

        return load_or_build(path, build)

    def _shared_keys_values(self, cache_dir: Path, budget_mb: float, rows: Tensor | None) -> KeyValueFile | None:
        """The prefix keys and values of `rows` (default: every prompt) from a file of the sweep (site_files.py);
        None past the budget or when the layers' keys and values differ in shape."""
        assert self.decoder is not None and self.first_upper is not None
        prefix, layer = self._file_prefix(), self.decoder[1]
        lower = [d for d in cached_layers(cache_dir, prefix, KEYS_VALUES) if d <= layer]
        if lower:  # a file at or below the site holds every layer above it
            path = self.file_path(cache_dir, max(lower), KEYS_VALUES)
            return KeyValueFile(np.load(path, mmap_mode="r"), np.load(rows_file(path)), len(self.table),
                                layer - max(lower), self.device, self.dtype)
        stored = torch.arange(len(self.table)) if rows is None else torch.unique(rows.cpu())
        tokens = self.table.seq_len - 1
        one = self._upper_keys_values(stored[:1], tokens)
        if len({pair[0].shape for pair in one}) != 1:
            return None
        size = len(stored) * sum(t.numel() for pair in one for t in pair) * 4
        if size > budget_mb * 2**20:
            return None
        path = self.file_path(cache_dir, layer, KEYS_VALUES)

        def build(temporary: Path, batch_size: int = 256) -> None:
            log.info("caching keys and values of %d prompts above %s into %s (%.0f MB)", len(stored),
                     self.resume_site, path, size / 2**20)
            array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32,
                                              shape=(len(stored), *stacked(one).shape[1:]))
            for start in range(0, len(stored), batch_size):
                batch = stored[start:start + batch_size]
                array[start:start + len(batch)] = stacked(self._upper_keys_values(batch, tokens)).float().cpu().numpy()
            array.flush()
            save(rows_file(path), stored.numpy())  # before the file itself appears

        array = load_or_build(path, build)
        return KeyValueFile(array, np.load(rows_file(path)), len(self.table), 0, self.device, self.dtype)

    def file_path(self, cache_dir: Path, layer: int, kind: str) -> Path:
        """The shared file of `kind` (site_files.HIDDEN or KEYS_VALUES) at decoder `layer` of this model and table."""
        return cache_dir / f"{self._file_prefix()}{layer}{kind}"

    def _file_prefix(self) -> str:
        assert self.decoder is not None
        return f"{self._fingerprint()}-{self.decoder[0]}."

    def _fingerprint(self) -> str:
        """The model and the prompt table; a cache's file adds its decoder layer (a layer's cache serves the
        sub-layers of the layer above, and a higher layer's cache is built from it)."""
        digest = hashlib.sha1()
        config = getattr(self.model, "config", None)
        digest.update((config.to_json_string() if config is not None else type(self.model).__name__).encode())
        first = next(self.model.parameters())
        digest.update(first.detach().float().flatten()[:64].cpu().numpy().tobytes())
        digest.update("\x00".join(self.table.texts).encode())
        return digest.hexdigest()[:20]


def _edited(edit: Edit | None, hidden: Tensor, positions: Tensor) -> Tensor:
    return hidden if edit is None else edit(hidden, positions)


def _resume_point(model: nn.Module, site: str) -> tuple[tuple[str, int] | None, bool]:
    """(the decoder layer whose output the fast path starts from, whether the site is inside the next one)."""
    place = site_layer(model, site)
    if place is None:
        return None, False
    layer_list, index, inside = place
    if not inside:
        return (layer_list, index), False
    return ((layer_list, index - 1) if index > 0 else None), True
