"""The sweep's shared files, built by the driver before any trial: once, lowest layer first, every core.

Every trial at a decoder layer maps the same hidden states and prefix keys and values
(`alignment/site_files.py`). Left to the trials, the first at each layer builds its files on its
one core, and the trials started beside it wait for them or build another layer's from the
embeddings: on the SmolLM2-135M IOI grid the trials spent 104-157 of their 300-357 slot-seconds on that
(benchmarks/HISTORY.md). The driver of a local sweep builds them instead, while Ray starts beside it: the
lowest layer's from the embeddings, each higher layer's from the one below, the keys and values
once (those of the lowest layer serve every layer above it), with torch using every core.

The trials then map what is there and build what is not, as before. So a sweep on a cluster
(whose driver may have no accelerator), a sharded one, one whose model the driver should not
load (`search.estimate.why_not_loaded`) or one with `train.cache = "off"` leaves the build to its
trials.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from alignment.batches import build_trial_data
from alignment.frozen import FrozenSite
from alignment.models import LoadedModel
from alignment.prompts import PromptTable
from alignment.site_files import HIDDEN, KEYS_VALUES, rows_file, save, stacked
from alignment.sites import component_site, site_layer
from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec
from search.prepare import load_prompts, load_rows

log = logging.getLogger(__name__)
BATCH = 256  # prompts per pass


def why_not_built(config: SweepConfig) -> str | None:
    """Why the driver leaves the shared files to the trials; None when it builds them."""
    if config.ray_address:
        return "the sweep runs on a cluster"
    if config.hypotheses.shard > 1:
        return "the trials are sharded"
    if config.train.cache != "auto":
        return "train.cache is off"
    if config.resources.gpu > 0 and not torch.cuda.is_available():
        return "the trials run on a GPU the driver does not see"
    return None


def sweep_table(folder: SweepFolder, loaded: LoadedModel) -> PromptTable:
    """The one prompt table every trial of the sweep builds, built the trials' way (`TrialInputs.table_prompts`):
    the same table, so the same files."""
    return build_trial_data(loaded.tokenizer, {}, [], [], load_prompts(folder.prompts_file)).table


def base_rows(folder: SweepFolder, table: PromptTable) -> torch.Tensor:
    """The table rows of every prompt that some pair of the sweep uses as its base (the others are only sources,
    whose keys and values no step reads)."""
    row_of = {text: row for row, text in enumerate(table.texts)}
    bases = {row_of[pair["base_prompt"]] for directory in folder.data_directories()
             for split in load_rows(directory).values() for pair in split}
    return torch.tensor(sorted(bases), dtype=torch.long)


def build_shared_files(config: SweepConfig, folder: SweepFolder, specs: list[TrialSpec], loaded: LoadedModel) -> int:
    """Build the shared files of every site of `specs` into the sweep's cache folder; the number of sites."""
    table = sweep_table(folder, loaded)
    bases = base_rows(folder, table)
    sites = sorted({component_site(loaded.model, s.hypothesis.layer, s.hypothesis.component) for s in specs},
                   key=lambda site: _depth_key(loaded.model, site))
    train = config.train

    def frozen(site: str, kv_budget_mb: float) -> FrozenSite:
        return FrozenSite(loaded.model, site, table, train.cache, train.cache_budget_mb, folder.cache_dir,
                          suffix=train.suffix_only, kv_budget_mb=kv_budget_mb, kv_rows=bases)

    started = time.perf_counter()
    with _every_core():
        depth = {site: _depth_key(loaded.model, site)[0] for site in sites}  # sites are in this order
        decoders = sorted({d for d in depth.values() if d >= 0})
        if len(decoders) > 1:  # the lowest layer's hidden states alone (a budget of 0 holds no keys and values)
            lowest = frozen(next(site for site in sites if depth[site] == decoders[0]), 0.0)
            build_above(lowest, decoders[1:], bases, folder.cache_dir, train.kv_budget_mb)
        for site in sites:  # every site's files, mapped where the pass above built them
            frozen(site, train.kv_budget_mb)
    log.info("shared hidden states and keys and values of %d prompts at %d sites in %.1f s", len(table),
             len(sites), time.perf_counter() - started)
    return len(sites)


def build_above(lowest: FrozenSite, higher: list[int], bases: Tensor, cache_dir: Path, budget_mb: float) -> bool:
    """The files above the lowest site in one pass per prompt: its keys and values and the hidden states of the
    decoder layers `higher`; False (nothing built) where that does not apply.

    Built site by site, the layers between the lowest and the highest site ran twice for every base prompt: up
    the ladder of hidden states, then again for the keys and values above the lowest site (13 % of the
    SmolLM2-135M IOI sweep's caches phase). Here the bases run once through every layer above the site, giving
    their keys and values and their outputs at `higher`, and the other prompts once up to the highest of
    `higher`. The files are those the trials would build (site_files.py), each appearing whole.
    """
    assert lowest.decoder is not None
    layer = lowest.decoder[1]
    kv_path = lowest.file_path(cache_dir, layer, KEYS_VALUES)
    paths = {d: lowest.file_path(cache_dir, d, HIDDEN) for d in higher}
    if (lowest.suffix_reason is not None or not lowest.file_path(cache_dir, layer, HIDDEN).exists()
            or kv_path.exists() or any(path.exists() for path in paths.values()) or not len(bases)):
        return False
    outputs, one = lowest.upper_pass(bases[:1], higher, keys_values=True)
    tokens = lowest.table.seq_len
    if len({keys.shape for keys, _ in one}) != 1:
        return False
    kv_shape = (len(bases), *stacked(one).shape[1:-2], tokens - 1, one[0][0].shape[-1])
    if math.prod(kv_shape) * 4 > budget_mb * 2**20:
        return False
    log.info("caching keys and values of %d prompts above %s and hidden states at layers %s, in one pass",
             len(bases), lowest.resume_site, higher)
    temporary = {path: path.with_name(f"{path.name}.{os.getpid()}.tmp") for path in [kv_path, *paths.values()]}
    try:
        kv = np.lib.format.open_memmap(temporary[kv_path], mode="w+", dtype=np.float32, shape=kv_shape)
        hidden = {d: np.lib.format.open_memmap(temporary[paths[d]], mode="w+", dtype=np.float32,
                                               shape=(len(lowest.table), tokens, outputs[0].shape[-1]))
                  for d in higher}
        others = torch.ones(len(lowest.table), dtype=torch.bool)
        others[bases] = False
        for rows, keys_values in ((bases, True), (torch.arange(len(lowest.table))[others], False)):
            for start in range(0, len(rows), BATCH):
                batch = rows[start:start + BATCH]
                outputs, above = lowest.upper_pass(batch, higher, keys_values)
                if keys_values:
                    kv[start:start + len(batch)] = stacked(above)[..., :tokens - 1, :].float().cpu().numpy()
                for d, output in zip(higher, outputs):
                    hidden[d][batch.numpy()] = output.float().cpu().numpy()
        for array in (kv, *hidden.values()):
            array.flush()
        save(rows_file(kv_path), bases.numpy())  # before the file itself appears
        for path, written in temporary.items():
            os.replace(written, path)
    finally:
        for written in temporary.values():
            written.unlink(missing_ok=True)
    return True


def _depth_key(model: torch.nn.Module, site: str) -> tuple[int, str]:
    """The decoder layer a site's files are built at (a sub-layer's: the layer below), then its path."""
    place = site_layer(model, site)
    return (place[1] - int(place[2]) if place else -1), site


@contextmanager
def _every_core() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
