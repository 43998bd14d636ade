"""Fixtures for the slow tests: a planted-task model on disk, sweep configs, processes and servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from alignment.taskmodels import TaskModelConfig, train_task_model
from tests.helpers import PortTaken, kill_session, start_on_free_port
from tests.planted_task import planted_task

ROOT = Path(__file__).resolve().parents[2]
PLANTED_FILE = ROOT / "tests" / "planted_task.py"


@pytest.fixture(scope="session")
def planted_model(tmp_path_factory) -> Path:
    """A tiny GPT-2 that solves the planted task, saved as a Hugging Face folder."""
    out = tmp_path_factory.mktemp("planted_model")
    result = train_task_model(planted_task(), TaskModelConfig(layers=2, hidden=32, heads=2, steps=150, batch_size=64,
                                                              lr=1e-2, warmup=20, eval_examples=500, threads=1),
                              out=out, progress=False)
    assert result.accuracy["plain"] == 1.0
    return out


def planted_sweep_args(model: Path, out: Path, *extra: str) -> list[str]:
    """CLI arguments of a small sweep over the planted task."""
    return ["sweep", "--out", str(out),
            "--set", f'model_path="{model}"', "--set", f'task="{PLANTED_FILE}:PLANTED"',
            "--set", 'hypotheses.causal_models=["planted", "key_low"]',
            "--set", 'hypotheses.positions=["filler", "last"]', "--set", 'hypotheses.layers="all"',
            "--set", 'intervention.kind="das"', "--set", 'hypotheses.interventions=["das"]',
            "--set", "intervention.subspace_dim=1",
            "--set", "data.n_train=300", "--set", "data.n_dev=100", "--set", "data.n_test=100",
            "--set", "train.max_steps=60", "--set", "train.eval_every=10", "--set", "train.batch_size=32",
            "--set", "train.lr=0.01", "--set", "resources.concurrency=2", *extra]


def kill_group(pid: int) -> None:
    """Kill every process that `pid` (started in a session of its own) and its Ray started, by PID; fail if
    any is left (Ray's workers leave the process group, not the session)."""
    kill_session(pid)


def cli_process(args: list[str], log: Path | None = None) -> subprocess.Popen:
    """`align-search ARGS` in a process group of its own (its Ray processes join it), this checkout first.

    Its output goes to `log` (a file, never a pipe nobody reads while it runs: a full pipe blocks it).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", "import sys; from search.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    with open(log or os.devnull, "w") as out:
        return subprocess.Popen(command, start_new_session=True, cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for(condition, seconds: float, what: str, log: Path | None = None) -> None:
    """Poll `condition` until it holds; fail after `seconds`, showing the end of `log`."""
    deadline = time.time() + seconds
    while not condition():
        tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
        assert time.time() < deadline, f"{what} did not happen within {seconds} s\n{tail}"
        time.sleep(0.3)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a SQLite store, in a session of its own (killed with it).

    The first start takes a free port (another if some process binds it first); a restart keeps
    the port, so the URI a sweep logs to comes back.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        if self.port is None:
            return start_on_free_port(self._start_on)
        return self._start_on(self.port)

    def _start_on(self, port: int) -> MlflowServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port, log_path = port, self.directory / "server.log"
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
                   "--artifacts-destination", str(self.directory / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        before = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "a") as log:
            self.process = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.directory, env=env)
        # Bound or not is read from its own log: a /health answer on the port may come from another server.
        wait_for(lambda: self._bound(log_path, before) is not None, 180, f"mlflow server binding port {port}")
        if not self._bound(log_path, before):
            self.stop()
            raise PortTaken(port)
        wait_for(self.healthy, 180, f"mlflow server on port {port} answering")
        return self

    def _bound(self, log_path: Path, offset: int) -> bool | None:
        """True once it listens, False if its port was taken, None while starting."""
        with open(log_path) as log:
            log.seek(offset)
            text = log.read()
        if "address already in use" in text:
            return False
        if f"running on http://127.0.0.1:{self.port}" in text:
            return True
        assert self.process is not None and self.process.poll() is None, f"mlflow server exited: {text[-2000:]}"
        return None

    def healthy(self) -> bool:
        assert self.process is not None and self.process.poll() is None, (
            f"mlflow server exited: {(self.directory / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            kill_group(self.process.pid)
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow-server")
    yield server
    server.stop()
