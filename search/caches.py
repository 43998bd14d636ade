"""The sweep's shared files, built by the driver before any trial: once, lowest layer first, every core.

Every trial at a decoder layer maps the same hidden states and prefix keys and values
(`alignment/site_files.py`). Left to the trials, the first at each layer builds its files on its
one core, and the trials started beside it wait for them or build another layer's from the
embeddings: on the SmolLM2-135M IOI grid that was 63 % of the trials' seconds
(benchmarks/README.md). The driver of a local sweep builds them instead, before Ray starts: the
lowest layer's from the embeddings, each higher layer's from the one below, the keys and values
once (those of the lowest layer serve every layer above it), with torch using every core.

The trials then map what is there and build what is not, as before. So a sweep on a cluster
(whose driver may have no accelerator), a sharded one, one whose model the driver should not
load (`search.estimate.why_not_loaded`) or one with `train.cache = "off"` leaves the build to its
trials.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from alignment.batches import build_trial_data
from alignment.frozen import FrozenSite
from alignment.models import LoadedModel
from alignment.prompts import PromptTable
from alignment.sites import component_site, site_layer
from search.config import SweepConfig
from search.folder import SweepFolder, TrialSpec
from search.prepare import load_prompts, load_rows

log = logging.getLogger(__name__)


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
    started = time.perf_counter()
    with _every_core():
        for site in sites:
            FrozenSite(loaded.model, site, table, train.cache, train.cache_budget_mb, folder.cache_dir,
                       suffix=train.suffix_only, kv_budget_mb=train.kv_budget_mb, kv_rows=bases)
    log.info("shared hidden states and keys and values of %d prompts at %d sites in %.1f s", len(table),
             len(sites), time.perf_counter() - started)
    return len(sites)


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
