"""`align-search ui DIR`: the MLflow UI over a sweep's own store, opened on the sweep's runs.

It serves the sweep folder's store (`mlflow.db`, wherever the folder now is) with `mlflow
server` on 127.0.0.1, and prints the address of the sweep's saved view: its trials, best
test IIA first, IIA columns shown (search/store.py). A port another process holds is refused
before anything starts. The server runs in its own process group and is stopped with it,
whatever stops `align-search ui` (Ctrl-C, SIGTERM, SIGHUP): no server is left on the port. A
`kill -9` of the command runs no cleanup, so a small watchdog process stops the group then: it
holds the read end of a pipe whose write end only the command holds, and the kernel closes
that end however the command dies.
A sweep logged to a tracking server needs no local one: the command prints where its view is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from causal_models.errors import UserError
from search.flags import PORT

STARTUP_SECONDS = 180  # mlflow server's first start migrates a new store: tens of seconds on a busy machine
GRACE_SECONDS = 10.0  # after SIGTERM, how long the server's group has to exit before SIGKILL
# Run as `python -c WATCHDOG GROUP`: at end of input (the command is gone, however it went), stop process group
# GROUP as _stop_group does. It ignores the signals a terminal or `kill` sends the command.
WATCHDOG = f"""# align-search ui watchdog
import os, signal, sys, time
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
group = int(sys.argv[1])
sys.stdin.buffer.read()
for sig, grace in ((signal.SIGTERM, {GRACE_SECONDS}), (signal.SIGKILL, 5.0)):
    deadline = time.monotonic() + grace
    try:
        os.killpg(group, sig)
        while time.monotonic() < deadline:
            os.killpg(group, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        break
"""


class UiError(UserError, RuntimeError):
    """The UI cannot start: its port is taken, or the server exited."""


def register(sub: Any) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI over a sweep's store (on 127.0.0.1)")
    p.add_argument("folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=5000)
    p.set_defaults(handler=ui)


def ui(args: argparse.Namespace, announce: Callable[[str], None]) -> str:
    from search.folder import SweepFolder
    from search.store import LOCAL_STORE, relocate, uri_of, view_url

    folder = SweepFolder(args.folder)
    folder.read_config()
    state = folder.read_state()
    stored = state.get("tracking_uri") or LOCAL_STORE
    if stored != LOCAL_STORE and "://" in stored and not stored.startswith("sqlite:"):
        _save_view(stored, state)
        return f"MLflow UI: {view_url(stored.rstrip('/'), state.get('experiment_id'))}"
    _check_port_free(args.host, args.port)
    if stored == LOCAL_STORE:
        relocate(folder)
    uri = uri_of(folder, stored)
    _save_view(uri, state)
    command = [*_mlflow(), "server", "--host", args.host, "--port", str(args.port), "--workers", "1",
               "--backend-store-uri", uri]
    with _stopped_by_signals(), contextlib.suppress(KeyboardInterrupt), _server(command, args.host, args.port):
        announce(f"MLflow UI: {view_url(f'http://{args.host}:{args.port}', state.get('experiment_id'))} "
                 f"(Ctrl-C to stop)")
        while True:
            time.sleep(3600)
    return "MLflow UI stopped"


def _save_view(uri: str, state: dict[str, Any]) -> None:
    """The sweep's view on its experiment (sweeps made before views existed get it here)."""
    if state.get("experiment_id") is None:
        return
    from search.store import set_view
    from search.tracking import client_for

    set_view(client_for(uri), str(state["experiment_id"]), state.get("parent_run_id"))


def _mlflow() -> list[str]:
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UiError(f"--port must be free on {host}, got {port}, which another process holds "
                          f"({error.strerror}). Choose another --port") from None


@contextlib.contextmanager
def _server(command: list[str], host: str, port: int) -> Iterator[None]:
    """`mlflow server` in a process group of its own, answering, until the block ends; then the group is gone
    (also when this process is killed outright: the watchdog stops it)."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        watchdog = _watchdog(process.pid)
        try:
            _wait_until_answering(process, host, port, log)
            yield
        finally:
            try:
                _stop_group(process)
            finally:
                _dismiss(watchdog)


def _watchdog(group: int) -> subprocess.Popen:
    """A process, in a session of its own, that stops process group `group` once this process is gone."""
    try:
        return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(group)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        _stop_group_of(group)
        raise


def _dismiss(watchdog: subprocess.Popen) -> None:
    """End the watchdog: closing its input is what it waits for (the group is already gone)."""
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=GRACE_SECONDS + 10)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _wait_until_answering(process: subprocess.Popen, host: str, port: int, log: Any) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    address = f"[{host}]" if ":" in host else host
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.strip()]
            raise UiError(f"the MLflow server must start, got exit status {process.returncode}: "
                          f"{lines[-1][:300] if lines else 'no output'}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{address}:{port}/health",
                                                                   timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise UiError(f"the MLflow server must answer on {host}:{port} within {STARTUP_SECONDS} s, got no answer")


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGHUP stop the command as Ctrl-C does (KeyboardInterrupt): cleanup runs."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (mlflow, uvicorn, its workers), then SIGKILL if it lingers."""
    _stop_group_of(process.pid, process.poll)


def _stop_group_of(group: int, reap: Callable[[], Any] = lambda: None) -> None:
    for sig, grace in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        if _group_gone(group, grace, reap):
            return


def _group_gone(group: int, seconds: float, reap: Callable[[], Any]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reap()  # our own child stays a zombie, and its group alive, until it is reaped
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
