"""search/: the sweep (hypotheses as Ray Tune trials, ASHA, MLflow, reports) and the CLI.

From Python (names load on first use, so `import search` imports neither torch nor Ray):

    from search import load_config, run_sweep, new_folder
    config = load_config(None, ["train.max_steps=100"])     # the embedded sweep, or a TOML file
    result = run_sweep(config, new_folder(config))          # result.report["verdict"]: a SweepVerdict

- `SweepConfig` / `load_config(path, overrides)`: the sweep, validated (`--set` syntax for overrides).
- `check_sweep(config)`, `new_folder(config)`, `run_sweep(config, folder)`: what `align-search sweep` does.
- `SweepFolder(path)`: a sweep folder's files (config, trials, each trial's result: `alignment.TrialResult`).
- `write_report(folder)`: results.csv, heatmaps and the verdict (`search.verdict.SweepVerdict`: a `Verdict`
  per causal model; `to_dict()` is report.json's "verdict").

Reading order: config -> prepare (grid, data) -> sweep (Ray Tune) -> trainable (one trial) ->
controls -> report -> verdict; folder, store and tracking (files and MLflow); cli and the *_command modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SweepConfig": "search.config", "load_config": "search.config", "SweepFolder": "search.folder",
    "run_sweep": "search.sweep", "check_sweep": "search.sweep", "new_folder": "search.sweep",
    "SweepResult": "search.sweep", "write_report": "search.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
