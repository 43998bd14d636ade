"""The MLflow UI over a sweep, in a real (headless) browser, and the UI command's local-only binding."""

from __future__ import annotations

import contextlib
import csv
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from search.cli import main
from search.config import default_config
from search.folder import SweepFolder
from tests.helpers import free_port
from tests.integration.conftest import cli_process, kill_group, planted_sweep_args, wait_for

pytestmark = pytest.mark.slow
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium(url: str, *action: str, size: str = "2400,1400") -> str:
    """Load `url` in headless Chromium (fresh profile, no network but localhost) and return its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--hide-scrollbars", f"--window-size={size}", "--virtual-time-budget=20000"]
        done = subprocess.run([str(BROWSER), *flags, *action, url], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    fragment = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", fragment, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def runs_table(dom: str) -> dict[str, dict[str, str]]:
    """The runs page's grid as {run id: {column id: shown text}}, rows in the order shown.

    The grid draws each row in up to three containers (pinned left, centre, pinned right), each a
    div with the run's `row-id`; their cells are merged here.
    """
    table: dict[str, dict[str, str]] = {}
    for piece in re.split(r'(?=<div[^>]*\brow-id=")', dom):
        row = re.match(r'<div[^>]*\brow-id="([0-9a-f]{32})"', piece)
        if row is None:
            continue
        cells = table.setdefault(row.group(1), {})
        for column, inner in re.findall(r'role="gridcell"[^>]*col-id="([^"]+)"[^>]*>(.*?)</div>', piece, re.S):
            cells[column] = _text(inner)
    return table


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (apt-get install chromium); "
                                            "the MLflow UI browser test needs a real browser")
def test_align_search_ui_opens_on_the_sweeps_runs_with_their_iia(planted_model, tmp_path):
    folder = tmp_path / "ui-sweep"
    assert main(planted_sweep_args(planted_model, folder, "--scheduler", "fifo",
                                   "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.layers="1"',
                                   "--set", "controls.top_k=0")) == 0
    rows = {r["key"]: r for r in csv.DictReader((folder / "results.csv").read_text().splitlines())}
    assert len(rows) == 2
    port, log = free_port(), tmp_path / "ui.log"
    ui = cli_process(["ui", str(folder), "--port", str(port)], log)  # the sweep's own store, as a user opens it
    try:
        wait_for(lambda: "MLflow UI: " in log.read_text(), 240, "the UI's announcement", log)
        line = next(line for line in log.read_text().splitlines() if line.startswith("MLflow UI: "))
        url = line.removeprefix("MLflow UI: ").split()[0]
        assert url.endswith("/runs?viewStateShareKey=align-search"), url
        dom = chromium(url, "--dump-dom")
        text = _text(dom)
        assert "Sort: test_iia" in text and "2 matching runs" in text  # the sweep's trials only, best first
        shown = runs_table(dom)
        from mlflow.tracking import MlflowClient
        state = json.loads((folder / "state.json").read_text())
        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        children = {r.data.tags["trial_key"]: r.info.run_id for r in client.search_runs([state["experiment_id"]])
                    if r.data.tags.get("mlflow.parentRunId") == state["parent_run_id"]}
        assert list(shown) == sorted(children.values(), key=lambda run: -float(rows[_key(children, run)]["test_iia"]))
        for key, run_id in children.items():
            for column in ("test_iia", "best_dev_iia", "prealign_accuracy"):
                assert float(shown[run_id][f"metrics.`{column}`"]) == pytest.approx(float(rows[key][column]),
                                                                                    abs=1e-3), (key, column)
            assert shown[run_id]["params.`layer`"] == rows[key]["layer"]
            assert shown[run_id]["params.`component`"] == rows[key]["component"] == "block"
        screenshot = tmp_path / "runs.png"
        chromium(url, f"--screenshot={screenshot}", size="1600,1000")
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    finally:
        stop_ui(ui)


def stop_ui(ui: subprocess.Popen) -> None:
    """Stop `align-search ui` as a user does (it then stops its server), and only then kill what is left."""
    if ui.poll() is None:
        ui.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            ui.wait(timeout=60)
    kill_group(ui.pid)
    ui.wait(timeout=30)


def _key(children: dict[str, str], run_id: str) -> str:
    return next(key for key, run in children.items() if run == run_id)


@contextlib.contextmanager
def serving_ui(tmp_path: Path):
    """(the `align-search ui` process, its port, its log, the server's process group) of a UI over an empty
    sweep, once it listens; stopped as a user stops it afterwards, and its server's group killed if left."""
    folder = SweepFolder(tmp_path / "sweep")
    folder.path.mkdir()
    folder.write_config(default_config())
    port, log = free_port(), tmp_path / "ui.log"
    ui = cli_process(["ui", str(folder.path), "--port", str(port)], log)
    group = None
    try:
        wait_for(lambda: listening(port), 240, f"the UI listening on port {port}", log)
        servers = [pid for pid in _pids() if f"--port {port}" in _cmdline(pid) and pid != ui.pid]
        assert servers, "the mlflow server process was not found"
        group = os.getpgid(servers[0])
        yield ui, port, log, group
    finally:
        stop_ui(ui)
        if group is not None:  # a session of its own: once the ui is killed, nothing of the ui's reaches it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def test_killing_align_search_ui_leaves_no_server_behind(tmp_path):
    with serving_ui(tmp_path) as (ui, port, log, group):
        members = [pid for pid in _pids() if _group_of(pid) == group]  # mlflow, uvicorn and its workers
        ui.send_signal(signal.SIGTERM)  # the command itself, as `kill PID` does: not its process group
        assert ui.wait(timeout=60) == 0, log.read_text()[-2000:]
        wait_for(lambda: not listening(port) and not any(_alive(pid) for pid in members), 30,
                 "the MLflow server gone from the port", log)
        assert "MLflow UI stopped" in log.read_text()


def test_kill_9_of_align_search_ui_leaves_no_server_behind(tmp_path):
    """SIGKILL runs no cleanup in the command: its watchdog stops the server's whole process group, then exits."""
    with serving_ui(tmp_path) as (ui, port, log, group):
        members = [pid for pid in _pids() if _group_of(pid) == group]
        watchdogs = [pid for pid in _pids() if "align-search ui watchdog" in _cmdline(pid)
                     and _cmdline(pid).split()[-1] == str(group)]
        assert len(watchdogs) == 1, "the UI's watchdog was not found"
        ui.send_signal(signal.SIGKILL)  # the command alone, which can clean nothing up
        assert ui.wait(timeout=60) == -signal.SIGKILL
        wait_for(lambda: not listening(port) and not any(_alive(pid) for pid in members + watchdogs), 60,
                 "the MLflow server's group and the watchdog gone", log)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_ui_serves_on_localhost_only(tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    folder.path.mkdir()
    folder.write_config(default_config())
    port = free_port()
    log = tmp_path / "ui.log"
    ui = cli_process(["ui", str(folder.path), "--port", str(port)], log)
    try:
        wait_for(lambda: "MLflow UI: " in log.read_text(), 120, "the UI's announcement", log)
        announced = next(line for line in log.read_text().splitlines() if line.startswith("MLflow UI: "))
        assert announced == f"MLflow UI: http://127.0.0.1:{port}/#/experiments/0/runs (Ctrl-C to stop)"
        wait_for(lambda: listening(port), 180, f"the UI listening on port {port}")
        assert listening(port) == {"127.0.0.1"}
    finally:
        stop_ui(ui)


def listening(port: int) -> set[str]:
    """Addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:
        return ".".join(str(int(hex_address[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hex_address) == {"0"} else hex_address
