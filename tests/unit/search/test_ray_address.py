"""`--address`: a malformed address or one where nothing listens fails in one line, before the sweep folder
exists and before Ray starts. (A HOST:PORT address of a real cluster: tests/integration/cluster/.)"""

from __future__ import annotations

import pytest

from tests.helpers import free_port
from tests.unit.search.cli_run import sweep_args, user_error


@pytest.mark.parametrize("address", ["ray://head", "ray://127.0.0.1", "ray://127.0.0.1:70000", "http://127.0.0.1:1"])
def test_a_malformed_address_is_refused_before_the_sweep_folder_exists(tiny_planted, tmp_path, capsys, address):
    out = tmp_path / "sweep"
    line = user_error(capsys, [*sweep_args(tiny_planted, out), "--address", address])
    assert line.endswith(f"must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got {address!r}")
    assert not out.exists()


@pytest.mark.parametrize("scheme", ["ray://", ""])
def test_nothing_listening_is_refused_before_the_sweep_folder_exists(tiny_planted, tmp_path, capsys, scheme):
    out, address = tmp_path / "sweep", f"{scheme}127.0.0.1:{free_port()}"
    for extra in ([], ["--plan"]):
        line = user_error(capsys, [*sweep_args(tiny_planted, out), "--address", address, *extra])
        assert f"nothing answers at {address!r}" in line and "Ray Client port 10001" in line
        assert not out.exists()
    assert f"nothing answers at {address!r}" in user_error(capsys, ["cluster", "status", "--address", address])
