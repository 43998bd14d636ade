"""The MLflow UI over a sweep, in a real (headless) browser, and the UI command's local-only binding."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
import tempfile
import urllib.parse
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


def compare_table(dom: str) -> dict[str, dict[str, str]]:
    """The compare page's metrics as {run id: {metric: shown value}} (its grid is drawn with absolute divs)."""
    header = dom[dom.index(">Run ID:<"):]
    run_ids = re.findall(r'href="#/experiments/\d+/runs/([0-9a-f]{32})"', header[:header.index("</tr>")])
    section = dom[dom.index(">Metrics<"):dom.index(">Artifacts<")]
    cells = [(int(left), int(top), int(width), inner) for left, top, width, inner in re.findall(
        r'<div[^>]*style="[^"]*left: (\d+)px; position: absolute; top: (\d+)px; width: (\d+)px;[^"]*"[^>]*>(.*?)</div>',
        section)]
    names = {top: _text(inner) for _, top, _, inner in cells if 'title="Plot chart"' in inner}
    table: dict[str, dict[str, str]] = {run: {} for run in run_ids}
    for left, top, width, inner in cells:
        if 'title="Plot chart"' not in inner and top in names:
            table[run_ids[left // width]][names[top]] = _text(inner)
    return table


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    fragment = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", fragment, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@pytest.mark.skipif(BROWSER is None, reason="Chromium is not installed (apt-get install chromium); "
                                            "the MLflow UI browser test needs a real browser")
def test_mlflow_ui_shows_the_sweep_and_its_trials_with_their_iia(planted_model, tmp_path, mlflow_server):
    mlflow_server.start()
    folder = tmp_path / "ui-sweep"
    assert main(planted_sweep_args(planted_model, folder, "--scheduler", "fifo", "--tracking-uri", mlflow_server.uri,
                                   "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.layers="1"',
                                   "--set", "controls.top_k=0")) == 0
    state = json.loads((folder / "state.json").read_text())
    experiment, parent = state["experiment_id"], state["parent_run_id"]
    rows = {r["key"]: r for r in csv.DictReader((folder / "results.csv").read_text().splitlines())}
    assert len(rows) == 2

    runs_page = chromium(f"{mlflow_server.uri}/#/experiments/{experiment}/runs", "--dump-dom")
    text = _text(runs_page)
    assert "Training runs" in text and folder.name in text and "3 matching runs" in text

    from mlflow.tracking import MlflowClient
    children = {r.info.run_name: r.info.run_id for r in MlflowClient(mlflow_server.uri).search_runs([experiment])
                if r.data.tags.get("mlflow.parentRunId") == parent}
    assert sorted(children) == sorted(rows)
    query = urllib.parse.urlencode({"runs": json.dumps([parent, *children.values()]),
                                    "experiments": json.dumps([experiment])})
    compare = f"{mlflow_server.uri}/#/compare-runs?{query}"
    dom = chromium(compare, "--dump-dom")
    assert "Comparing 3 Runs from 1 Experiment" in _text(dom)
    shown = compare_table(dom)
    assert set(shown) == {parent, *children.values()}
    for key, run_id in children.items():
        assert float(shown[run_id]["test_iia"]) == pytest.approx(float(rows[key]["test_iia"]), abs=1e-3), key
    best = max(float(r["test_iia"]) for r in rows.values())
    assert float(shown[parent]["best_iia.planted"]) == pytest.approx(best, abs=1e-3)

    screenshot = tmp_path / "compare-runs.png"
    chromium(compare, f"--screenshot={screenshot}", size="1600,1000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


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
        kill_group(ui.pid)
        ui.wait(timeout=30)


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
