"""Files the trials of a sweep share: the frozen model's numbers at a decoder layer, computed once.

Every trial of a sweep at decoder layer d (and at the sub-layers of layer d + 1) would compute
the same numbers from the frozen model over the same prompt table. The first trial to need a
file builds it in the sweep's cache folder, under a lock; the others wait, then map it into
memory read-only, so the processes of a machine share its pages. Two kinds, both float32 (exact
for float32, float16 and bfloat16 models):

- `{fingerprint}-{layers}.{d}.npy` (prompts, tokens, width): decoder layer d's output for every
  prompt. Built from the highest layer below d already cached (only the layers between run).
- `{fingerprint}-{layers}.{d}.kv` (stored prompts, layers above d, 2, kv_heads, tokens - 1,
  head_dim): the keys and values of every layer above d at every token but the last, as the
  unedited model computes them, for the prompts listed in `{d}.kv.rows` (those a sweep uses
  as bases; sources need none). An edit at token P changes nothing before P in any layer, so these
  are the prefix every suffix step and evaluation at d attends to, and a file at a lower layer
  serves too (its upper layers are sliced): one per sweep, as a rule, however many layers it
  sweeps. A base prompt not stored gets its prefix computed per batch, as without a file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from alignment.suffix import KeysValues

HIDDEN = ".npy"
KEYS_VALUES = ".kv"


def load_or_build(path: Path, build: Callable[[Path], None]) -> np.ndarray:
    """`path` mapped read-only; built first by `build(temporary path)` if it is missing.

    One process builds (under an exclusive lock beside the file), the others wait and map it; a
    build that fails leaves no file, so the next trial builds again.
    """
    if path.exists():  # it appears whole (os.replace), so a built file is mapped without the lock
        return np.load(path, mmap_mode="r")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                try:
                    build(temporary)
                    os.replace(temporary, path)
                finally:
                    temporary.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return np.load(path, mmap_mode="r")


def save(path: Path, array: np.ndarray) -> None:
    """`array` as a .npy file at exactly `path` (np.save would append .npy to a temporary name)."""
    with open(path, "wb") as file:
        np.save(file, array)


def cached_layers(cache_dir: Path, prefix: str, kind: str) -> list[int]:
    """The decoder layers with a file of `kind` (HIDDEN or KEYS_VALUES) under `prefix` in `cache_dir`."""
    names = (path.name[len(prefix):-len(kind)] for path in cache_dir.glob(f"{prefix}*{kind}"))
    return sorted(int(name) for name in names if name.isdigit())


def stacked(keys_values: KeysValues) -> Tensor:
    """(B, layers, 2, kv_heads, tokens, head_dim) from per-layer (keys, values) pairs of equal shape."""
    return torch.stack([torch.stack(pair, 1) for pair in keys_values], 1)


class KeyValueFile:
    """Prefix keys and values for the suffix path, read from a `.kv` file (see the module docstring).

    On the CPU, each batch gathers its rows from the mapped file (the page cache holds it once for
    every trial of the machine). On an accelerator the site's layers are copied to it once, in the
    model's dtype, so that a step copies nothing from the host.

    Args:
        array: the mapped file, (stored prompts, layers, 2, kv_heads, tokens - 1, head_dim).
        rows: (stored prompts,) the prompt table's row of each stored prompt.
        n_rows: the prompt table's size.
        skip: leading layers of the file below the site's first upper layer (a file built at a lower layer).
        resident: copy the site's layers to `device` once (default: when it is not the CPU).
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray, n_rows: int, skip: int, device: torch.device,
                 dtype: torch.dtype, resident: bool | None = None):
        self.array, self.skip, self.device, self.dtype = array, skip, device, dtype
        self.slot_of = torch.full((n_rows,), -1, dtype=torch.long)
        self.slot_of[torch.from_numpy(np.asarray(rows, dtype=np.int64))] = torch.arange(len(rows))
        self.resident: Tensor | None = None
        if resident if resident is not None else torch.device(device).type != "cpu":
            self.resident = torch.from_numpy(np.ascontiguousarray(array[:, skip:])).to(device, dtype)

    def holds(self, rows: Tensor) -> bool:
        return bool((self.slot_of[rows.cpu()] >= 0).all())

    def gather(self, rows: Tensor, tokens: int) -> KeysValues:
        """Per layer from the site's first upper one, (B, kv_heads, `tokens`, head_dim) keys and values of `rows`
        (every one of them stored: `holds`)."""
        slots = self.slot_of[rows.cpu()]
        if self.resident is not None:
            both = self.resident[slots.to(self.resident.device), :, :, :, :tokens]
        else:
            block = self.array[slots.numpy(), self.skip:, :, :, :tokens]
            both = torch.from_numpy(np.ascontiguousarray(block)).to(self.device, self.dtype)
        return [(both[:, layer, 0], both[:, layer, 1]) for layer in range(both.shape[1])]


def rows_file(path: Path) -> Path:
    """Beside a `.kv` file: the prompt table's rows it stores, in its order (written before it)."""
    return path.with_name(f"{path.name}.rows")
