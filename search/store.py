"""The sweep folder's own MLflow store: where it is, how it moves with the folder, how the UI opens on it.

The default store is `mlflow.db` in the sweep folder. It is recorded as that relative name
(state.json, each trial's marker), never as an absolute path, and `relocate` moves the store's
artifact paths along when the folder was moved or copied, so a sweep folder opens, reports and
resumes wherever it is.

Each sweep's experiment carries a saved view of the MLflow UI (`VIEW_KEY`, the UI's
`viewStateShareKey`, kept as the experiment tag `mlflow.sharedViewState.<key>` as MLflow's own
"share view" does): the sweep's trials, best test IIA first, with test IIA, dev IIA, task
accuracy, the hypothesis' params and the status as columns. `align-search ui DIR` opens on it.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from search.folder import SweepFolder

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

LOCAL_STORE = "mlflow.db"  # the default store, as recorded: relative to the sweep folder
VIEW_KEY = "align-search"  # the UI's viewStateShareKey of a sweep's view (an experiment tag)
VIEW_TAG = "mlflow.sharedViewState."
VIEW_COLUMNS = ("metrics.`test_iia`", "metrics.`best_dev_iia`", "metrics.`dev_iia`", "metrics.`prealign_accuracy`",
                "params.`causal_model`", "params.`variables`", "params.`layer`", "params.`component`",
                "params.`position_label`", "params.`intervention`", "params.`seed`", "params.`role`", "tags.`status`")


def default_uri(folder: SweepFolder) -> str:
    return f"sqlite:///{folder.path.resolve() / LOCAL_STORE}"


def stored_uri(folder: SweepFolder, uri: str) -> str:
    """`uri` as a sweep folder records it: the folder's own store as `mlflow.db`, any other as it is."""
    return LOCAL_STORE if uri == default_uri(folder) else uri


def uri_of(folder: SweepFolder, stored: str | None) -> str:
    """The tracking URI a recorded one means, from where the folder is now."""
    return default_uri(folder) if stored in (None, LOCAL_STORE) else str(stored)


def relocate(folder: SweepFolder) -> None:
    """Point the folder's own store at its own artifacts after the folder was moved or copied.

    MLflow keeps absolute artifact locations (`file:///old/place/mlartifacts/...`) in the store;
    they are rewritten to this folder's `mlartifacts/`. A store that is where it was is left alone.
    """
    import sqlite3

    database = folder.path / LOCAL_STORE
    if not database.is_file():
        return
    here = (folder.path.resolve() / "mlartifacts").as_uri()
    moved: list[str] = []
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return
        for (location,) in connection.execute("SELECT DISTINCT artifact_location FROM experiments").fetchall():
            if location and location.endswith("/mlartifacts") and location.startswith("file:") and location != here:
                connection.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?",
                                   (here, location))
                if "runs" in tables:
                    moved += [row[0] for row in connection.execute(
                        "SELECT run_uuid FROM runs WHERE artifact_uri LIKE ? || '%'", (location,))]
                    connection.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                                       "WHERE artifact_uri LIKE ? || '%'", (here, len(location) + 1, location))
    _forget_artifact_places(moved)


def _forget_artifact_places(run_ids: list[str]) -> None:
    """MLflow remembers each run's artifact place for the life of the process; make it look again."""
    if not run_ids:
        return
    from mlflow.tracking._tracking_service import utils  # its cache has no public API

    cache = getattr(utils, "_artifact_repos_cache", {})
    for run_id in run_ids:
        cache.pop(run_id, None)


def set_view(client: MlflowClient, experiment_id: str, parent_run_id: str | None) -> None:
    """Save the sweep's view of the MLflow UI on its experiment (see the module docstring)."""
    view: dict[str, Any] = {"selectedColumns": list(VIEW_COLUMNS), "orderByKey": "metrics.`test_iia`",
                            "orderByAsc": False, "runsHiddenMode": "SHOW_ALL"}
    if parent_run_id:  # this sweep's trials only (a server's experiment may hold other sweeps)
        view["searchFilter"] = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    client.set_experiment_tag(experiment_id, VIEW_TAG + VIEW_KEY, json.dumps(view))


def view_url(base: str, experiment_id: str | None) -> str:
    """The UI's address of a sweep's runs, opened on its saved view when it has one."""
    if experiment_id is None:
        return f"{base}/#/experiments/0/runs"
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
