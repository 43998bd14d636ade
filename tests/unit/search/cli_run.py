"""Running the CLI in-process in tests, and the argument lists the bad-input tests start from."""

from __future__ import annotations

import re
from pathlib import Path

from search.cli import main

TESTS = Path(__file__).resolve().parents[2]
PLANTED = f"{TESTS / 'planted_task.py'}:PLANTED"
ODD = f"{TESTS / 'odd_position_task.py'}:ODD"
PROGRESS = re.compile(r"\d+/\d+ \[[^\]]*(/s|s/it)\]$")  # a progress bar (loading weights, saving data)


def user_error(capsys, argv: list[str]) -> str:
    """Run `align-search ARGV`: it must exit 2 with exactly one line on stderr; return that line."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse refuses a flag's value itself
        code = exit_.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert code == 2, f"exit {code}; stdout {captured.out[-500:]!r}; stderr {captured.err[-2000:]!r}"
    assert len(lines) == 1 and lines[0].startswith("align-search: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def sweep_args(model: Path | str, out: Path, *sets: str) -> list[str]:
    """A one-trial planted sweep; each of `sets` is a `--set` override."""
    args = ["sweep", "--out", str(out), "--set", f'model_path="{model}"', "--set", f'task="{PLANTED}"',
            "--set", 'hypotheses.causal_models=["planted"]', "--set", 'hypotheses.positions=["last"]',
            "--set", "controls.top_k=0"]
    for item in sets:
        args += ["--set", item]
    return args


def align_args(model: Path | str, out: Path, *extra: str, task: str = PLANTED) -> list[str]:
    """A two-step planted alignment."""
    return ["align", "--model-path", str(model), "--task", task, "--layer", "1", "--position", "last",
            "--max-steps", "2", "--n-training-examples", "40", "--n-eval-examples", "20", "--n-test-examples", "20",
            "--valid-steps", "1", "--out", str(out), *extra]
