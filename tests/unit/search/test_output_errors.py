"""Where results go: an output folder in the way, read-only or full, and an MLflow server that does not answer."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from search.cli import main
from search.config import default_config
from search.folder import SweepFolder
from tests.helpers import free_port, tmpfs
from tests.unit.search.cli_run import align_args, sweep_args, user_error

ROOT = Path(__file__).resolve().parents[3]


def test_out_that_is_a_file(tiny_planted, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert "sweep folder must be a directory, got" in user_error(capsys, sweep_args(tiny_planted, target))
    assert target.read_text() == "not a folder"
    line = user_error(capsys, sweep_args(tiny_planted, target / "sweep"))
    assert "must be writable, got Not a directory" in line
    assert "--out must be a folder, got" in user_error(capsys, align_args(tiny_planted, target))
    assert "--out must be a folder, got" in user_error(capsys, ["data", "price_tagging", "--out", target])
    assert target.read_text() == "not a folder"


@contextlib.contextmanager
def read_only_directory(parent: Path):
    """A directory this process cannot write: chmod for a normal user, a read-only tmpfs for root."""
    directory = parent / "read-only"
    if os.geteuid() != 0:
        directory.mkdir()
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    with tmpfs(directory, "ro,size=64k", "running as root, and cannot mount a read-only tmpfs to test with"):
        yield directory


def test_out_under_a_read_only_directory(tiny_planted, tmp_path, capsys):
    with read_only_directory(tmp_path) as directory:
        line = user_error(capsys, sweep_args(tiny_planted, directory / "sweep"))
        assert f"sweep folder '{directory / 'sweep'}' must be writable, got" in line
        assert "Choose another --out" in line
        assert "must be writable" in user_error(capsys, align_args(tiny_planted, directory / "run"))


def with_small_files(argv: list, limit: int = 600) -> list[str]:
    """Run `align-search ARGV` where every write past `limit` bytes fails with EFBIG, as a full disk fails with
    ENOSPC (RLIMIT_FSIZE); it must exit 2 with one error line and no traceback. Return its error lines."""
    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-c", "import sys; from search.cli import main; sys.exit(main(sys.argv[1:]))",
               *map(str, argv)]
    done = subprocess.run(command, preexec_fn=small_files, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    errors = [line for line in done.stderr.splitlines() if line.startswith("align-search")]
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-3000:]
    return errors


def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(tiny_planted, tmp_path):
    out = tmp_path / "run"
    errors = with_small_files(align_args(tiny_planted, out))
    assert errors == [f"align-search: error: '{out / 'config.json'}' must be writable, got EFBIG (the file would "
                      f"pass the size limit). Free some space or choose another output folder; files written "
                      f"before are left as they were"]
    assert not out.exists()  # no truncated config.json, no temporary left: the folder it made is gone


def test_19_101_63_a_full_disk_leaves_no_half_made_output_and_names_the_output(tiny_planted, tmp_path):
    out = tmp_path / "pairs"
    [line] = with_small_files(["data", "price_tagging", "--n", "200", "--out", out])
    assert line.startswith(f"align-search: error: '{out}") and "must be writable, got EFBIG" in line
    run = tmp_path / "run"
    assert main([str(a) for a in align_args(tiny_planted, run)]) == 0
    shared = tmp_path / "shared"
    [line] = with_small_files(["share", run, "--out", shared])
    assert f"'{shared}" in line and "must be writable, got EFBIG" in line and f"'{run}" not in line
    sweep = tmp_path / "sweep"
    [line] = with_small_files(sweep_args(tiny_planted, sweep), limit=1)
    assert f"sweep folder '{sweep}' must be writable, got File too large" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no output, no hidden folder, no .write-test


def test_unreachable_tracking_server_fails_before_any_work(tiny_planted, tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = tmp_path / "sweep"
    line = user_error(capsys, [*sweep_args(tiny_planted, out), "--tracking-uri", uri])
    assert line.startswith(f"align-search: error: MLflow tracking server {uri} must be reachable, got: ")
    assert line.endswith("Start it, or drop --tracking-uri to log into the sweep folder")
    assert not out.exists()
    folder = SweepFolder(tmp_path / "finished")
    folder.path.mkdir()
    folder.write_config(default_config())
    assert f"MLflow tracking server {uri} must be reachable" in user_error(
        capsys, ["sync", folder.path, "--tracking-uri", uri])
