"""Faults injected for real into small sweeps: a killed trial worker, a trial that always fails, an MLflow
server that dies mid-sweep, a diverging trial, a full disk. The sweep goes on and loses nothing."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from alignment.results import TrialResult
from search.cli import main
from tests.helpers import tmpfs
from tests.integration.conftest import ROOT, cli_process, kill_group, planted_sweep_args, wait_for

pytestmark = pytest.mark.slow


def rows_of(folder: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader((folder / "results.csv").read_text().splitlines()))
    assert len({r["key"] for r in rows}) == len(rows), "a trial has two rows"
    return {r["key"]: r for r in rows}


def children_of(folder: Path, uri: str | None = None) -> dict[str, object]:
    """The sweep's child runs by name; fails if a trial has two."""
    state = json.loads((folder / "state.json").read_text())
    client = MlflowClient(uri or f"sqlite:///{folder.resolve() / 'mlflow.db'}")
    runs = client.search_runs([state["experiment_id"]], max_results=1000)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == state["parent_run_id"]]
    names = [r.info.run_name for r in children]
    assert len(names) == len(set(names)), f"duplicate child runs: {sorted(names)}"
    return {r.info.run_name: r for r in children}


def attempts_of(trial: Path) -> list[dict]:
    path = trial / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def checkpoint_step(trial: Path) -> int:
    latest = trial / "checkpoint" / "latest"
    return int(latest.read_text().strip().removeprefix("step-")) if latest.is_file() else 0


def test_killed_worker_resumes_from_its_checkpoint_and_a_failing_trial_is_recorded_once(planted_model, tmp_path):
    """kill -9 of the process running a trial: Tune retries it (resources.max_failures) and it continues from
    its checkpoint. A trial that fails on every attempt is recorded failed with its error; the sweep exits 0.
    Once the user fixes the cause, --resume runs the failed trial again, into the same MLflow run."""
    task_file = tmp_path / "my_task.py"  # the user's task module, faulty on the workers
    task_file.write_text((ROOT / "tests" / "faulty_task.py").read_text())
    folder = tmp_path / "sweep"
    args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo", "--set", f'task="{task_file}:FAULTY"',
                              "--set", 'hypotheses.layers="1"', "--set", 'hypotheses.positions=["last"]',
                              "--set", "train.max_steps=400", "--set", "controls.top_k=0",
                              "--set", "resources.max_failures=1")
    healthy = folder / "trials" / "planted.in_set@L1.last.das#s0"
    failing_key = "key_low@L1:last:das#s0"
    log = tmp_path / "driver.log"
    driver = cli_process(args, log)
    try:
        wait_for(lambda: checkpoint_step(healthy) >= 20, 300, "a checkpoint of the planted trial at step >= 20", log)
        first = attempts_of(healthy)
        assert len(first) == 1 and not (healthy / "summary.json").exists(), "the trial ended before the kill"
        killed_at = checkpoint_step(healthy)
        os.kill(int(first[0]["pid"]), signal.SIGKILL)
        driver.wait(timeout=400)
    finally:
        kill_group(driver.pid)
    assert driver.returncode == 0, log.read_text()[-3000:]

    attempts = attempts_of(healthy)
    assert len(attempts) == 2 and attempts[1]["pid"] != attempts[0]["pid"]
    assert attempts[1]["resumed_from_step"] >= killed_at > 0
    evaluated = [row["step"] for row in map(json.loads, (healthy / "metrics.jsonl").read_text().splitlines())
                 if "dev_iia" in row]
    assert evaluated == list(range(10, 401, 10)), "an evaluation is missing or written twice"
    summary = TrialResult.read(healthy / "summary.json")
    assert summary.steps == 400 and summary.test_iia >= 0.95

    rows = rows_of(folder)
    assert set(rows) == {"planted:in_set@L1:last:das#s0", failing_key}
    assert rows["planted:in_set@L1:last:das#s0"]["status"] == "finished"
    assert rows["planted:in_set@L1:last:das#s0"]["attempts"] == "2"
    failed = rows[failing_key]
    assert failed["status"] == "failed" and failed["attempts"] == "2"  # the first try and max_failures=1 retry
    assert "causal model of task 'planted' must be one of ['planted'], got 'key_low'" in failed["error"]
    report = json.loads((folder / "report.json").read_text())
    assert [f["key"] for f in report["failed"]] == [failing_key]
    assert failing_key in (folder / "report.md").read_text()

    children = children_of(folder)
    assert set(children) == set(rows)
    run = children[failing_key]
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert "got 'key_low'" in run.data.tags["error"]
    resumed = children["planted:in_set@L1:last:das#s0"]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["attempts"] == "2"
    history = MlflowClient(f"sqlite:///{folder.resolve() / 'mlflow.db'}").get_metric_history(resumed.info.run_id,
                                                                                              "dev_iia")
    assert sorted(m.step for m in history) == list(range(10, 401, 10)), "dev IIA logged twice for some step"

    task_file.write_text("from tests.planted_task import planted_task as FAULTY\n")  # the fix
    assert main(["sweep", "--resume", str(folder)]) == 0
    rows = rows_of(folder)
    assert rows[failing_key]["status"] == "finished" and rows[failing_key]["attempts"] == "3"
    assert len(attempts_of(healthy)) == 2  # the finished trial did not run again
    again = children_of(folder)
    assert set(again) == set(rows) and again[failing_key].info.run_id == run.info.run_id
    assert again[failing_key].info.status == "FINISHED" and again[failing_key].data.tags["status"] == "finished"
    assert "error" not in again[failing_key].data.tags


def uploaded(trial: Path) -> bool:
    marker = trial / "mlflow.json"
    return marker.is_file() and json.loads(marker.read_text()).get("uploaded") is True


def test_tracking_server_down_mid_sweep_then_sync_uploads_each_trial_once(planted_model, tmp_path, mlflow_server):
    """The server dies after the first upload: trials keep training, the sweep exits 0 and says so; once the
    server is back on the same store, `sync` uploads the rest, with exactly one child run per trial."""
    mlflow_server.start()
    folder = tmp_path / "sweep"
    args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo", "--tracking-uri", mlflow_server.uri,
                              "--set", 'hypotheses.causal_models=["planted"]', "--set", "controls.top_k=0",
                              "--set", "train.max_steps=150")
    log = tmp_path / "driver.log"
    driver = cli_process(args, log)
    try:
        wait_for(lambda: any(uploaded(t) for t in folder.glob("trials/*")), 300, "the first trial uploaded", log)
        mlflow_server.stop()
        driver.wait(timeout=400)
    finally:
        kill_group(driver.pid)
    output = log.read_text()
    assert driver.returncode == 0, output[-3000:]
    assert f"MLflow at {mlflow_server.uri} stopped answering" in output and f"align-search sync {folder}" in output
    rows = rows_of(folder)
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows.values())
    trials = sorted(folder.glob("trials/*"))
    assert all((t / "summary.json").is_file() for t in trials)
    missing = [t for t in trials if not uploaded(t)]
    assert 1 <= len(missing) < 4, "the outage should have left some trials, not all, to upload"

    mlflow_server.start()  # the same SQLite store, the same port
    assert main(["sync", str(folder)]) == 0
    assert all(uploaded(t) for t in trials)
    children = children_of(folder, mlflow_server.uri)
    assert sorted(children) == sorted(rows)
    client = MlflowClient(mlflow_server.uri)
    for key, run in children.items():
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
        assert abs(run.data.metrics["test_iia"] - float(rows[key]["test_iia"])) < 1e-9
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "dev_iia")]
        assert sorted(steps) == list(range(10, 151, 10)), f"{key}: dev IIA missing or logged twice"
    state = json.loads((folder / "state.json").read_text())
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"
    assert main(["sync", str(folder)]) == 0  # a second sync changes nothing
    assert sorted(children_of(folder, mlflow_server.uri)) == sorted(rows)


@pytest.fixture(scope="module")
def diverged_sweep(planted_model, tmp_path_factory) -> Path:
    """Boundless DAS with the matrix_exp rotation and an absurd learning rate (its loss turns NaN) beside
    full-swap trials (nothing to train), run one after the other in the same worker."""
    folder = tmp_path_factory.mktemp("diverged") / "sweep"
    args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo",
                              "--set", 'hypotheses.causal_models=["planted"]',
                              "--set", 'hypotheses.layers="1"', "--set", 'hypotheses.positions=["last"]',
                              "--set", 'hypotheses.interventions=["boundless", "full_swap"]',
                              "--set", 'intervention.rotation_map="matrix_exp"', "--set", "train.lr=1e8",
                              "--set", "controls.top_k=0", "--set", "resources.concurrency=1")
    assert main(args) == 0
    return folder


def test_a_diverging_trial_is_reported_and_does_not_poison_the_others(diverged_sweep):
    rows = rows_of(diverged_sweep)
    diverged, swap = "planted:in_set@L1:last:boundless#s0", "planted:in_set@L1:last:full_swap#s0"
    assert set(rows) == {diverged, swap}
    assert rows[diverged]["status"] == "diverged" and "loss became nan" in rows[diverged]["error"]
    assert rows[swap]["status"] == "finished" and float(rows[swap]["test_iia"]) == 1.0
    pids = {json.loads((diverged_sweep / "trials" / name / "attempts.jsonl").read_text())["pid"]
            for name in ("planted.in_set@L1.last.boundless#s0", "planted.in_set@L1.last.full_swap#s0")}
    assert len(pids) == 1, "the full swap should have run in the worker the diverged trial ran in"
    report = json.loads((diverged_sweep / "report.json").read_text())
    assert [d["key"] for d in report["diverged"]] == [diverged]
    assert f"`{diverged}` | diverged | loss became nan" in (diverged_sweep / "report.md").read_text()
    children = children_of(diverged_sweep)
    assert {k: children[k].data.tags["status"] for k in rows} == {k: r["status"] for k, r in rows.items()}


def test_a_full_disk_while_rewriting_the_report_leaves_the_old_one_intact(diverged_sweep):
    """RLIMIT_FSIZE makes writes past 300 bytes fail with EFBIG, as a full disk fails with ENOSPC."""
    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))

    outputs = ["results.csv", "report.json", "report.md", *(p.name for p in diverged_sweep.glob("heatmap_*.png"))]
    before = {name: (diverged_sweep / name).read_bytes() for name in outputs}
    listing = sorted(p.name for p in diverged_sweep.iterdir())
    command = [sys.executable, "-c", "import sys; from search.cli import main; sys.exit(main(sys.argv[1:]))",
               "report", str(diverged_sweep)]
    done = subprocess.run(command, preexec_fn=small_files, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip() == (f"align-search: error: '{diverged_sweep / 'results.csv'}' must be writable, got "
                                   f"EFBIG (the file would pass the size limit). Free some space or choose another "
                                   f"output folder; files written before are left as they were")
    assert {name: (diverged_sweep / name).read_bytes() for name in outputs} == before
    assert sorted(p.name for p in diverged_sweep.iterdir()) == listing  # no temporary file left behind
    assert main(["report", str(diverged_sweep)]) == 0  # with room again, the same report
    assert (diverged_sweep / "results.csv").read_bytes() == before["results.csv"]


@contextlib.contextmanager
def small_disk(parent: Path, megabytes: int = 48):
    """A tmpfs of `megabytes` at parent/disk: a disk this test may fill or make read-only (needs root)."""
    with tmpfs(parent / "disk", f"size={megabytes}m", "cannot mount a tmpfs to fill (root only)", lazy=True) as disk:
        yield disk


def fill(disk: Path) -> None:
    """Write zeros to disk/filler until the disk is full."""
    with open(disk / "filler", "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(bytes(2**20))
            out.flush()


def make_read_only(disk: Path) -> None:
    """Remount the disk read-only; a remount waits for files open for writing to close (EBUSY)."""
    wait_for(lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0,
             120, f"{disk} remounted read-only")


@pytest.mark.parametrize("fault, code", [("full", "ENOSPC (the disk is full)"),
                                         ("read-only", "EROFS (the file system is read-only)")])
def test_a_disk_that_fails_during_a_sweep_ends_it_in_one_line_and_resume_finishes_it(planted_model, tmp_path,
                                                                                        fault, code):
    """The disk under the sweep folder fills (or turns read-only) after the first trial: the sweep stops with
    the CLI's one line naming the file; with room again, --resume runs every trial to the end, once."""
    with small_disk(tmp_path) as disk:
        folder = disk / "sweep"
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"  # beside the disk: SQLite's open file blocks a remount
        args = planted_sweep_args(planted_model, folder, "--scheduler", "fifo", "--tracking-uri", tracking,
                                  "--set", 'hypotheses.causal_models=["planted"]', "--set", "train.max_steps=200",
                                  "--set", "controls.top_k=0", "--set", "resources.concurrency=1")
        log = tmp_path / "driver.log"
        driver = cli_process(args, log)
        try:
            wait_for(lambda: any(folder.glob("trials/*/summary.json")), 300, "a finished trial", log)
            fill(disk) if fault == "full" else make_read_only(disk)
            driver.wait(timeout=300)
        finally:
            kill_group(driver.pid)
        output = log.read_text()
        errors = [line for line in output.splitlines() if line.startswith("align-search: ")]
        assert driver.returncode == 2 and len(errors) == 1, output[-3000:]
        assert f"must be writable, got {code}. Free some space or choose another output folder" in errors[0]
        assert str(folder) in errors[0]

        if fault == "full":
            (disk / "filler").unlink()
        else:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert main(["sweep", "--resume", str(folder), "--tracking-uri", tracking]) == 0
        rows = rows_of(folder)
        assert len(rows) == 4 and all(row["status"] == "finished" for row in rows.values()), rows
        assert set(children_of(folder, tracking)) == set(rows)


@pytest.fixture(scope="module")
def overflowing_model(planted_model, tmp_path_factory) -> Path:
    """The planted model with a constant final layer norm: an unused token's logit 3e38 and the answers' -1e38,
    each finite in fp32, so every cross-entropy (their difference) overflows to +inf, and none is NaN (an
    infinite logit would make log-softmax NaN)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("overflowing")
    shutil.copytree(planted_model, out, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(planted_model)
    tokenizer = AutoTokenizer.from_pretrained(planted_model)
    answers = tokenizer.convert_tokens_to_ids(["yes", "no"])
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1e20
        model.transformer.wte.weight[tokenizer.unk_token_id, 0] = 3e18
        model.transformer.wte.weight[answers, 0] = -1e18
    model.save_pretrained(out)
    return out


def test_an_infinite_loss_is_reported_as_diverged(overflowing_model, tmp_path, capsys):
    folder = tmp_path / "sweep"
    assert main(planted_sweep_args(overflowing_model, folder, "--scheduler", "fifo", "--set", "controls.top_k=0",
                                   "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.layers="1"',
                                   "--set", 'hypotheses.positions=["last"]')) == 0
    # the plan line's probe trial diverges too: it says so and the sweep goes on to report the trial itself
    assert "time not estimated (the probe's trial failed: TrialDiverged: loss became inf" in capsys.readouterr().out
    row, = rows_of(folder).values()
    assert row["status"] == "diverged" and "loss became inf at step 1" in row["error"], row
    report = json.loads((folder / "report.json").read_text())
    assert [d["key"] for d in report["diverged"]] == [row["key"]]
