"""Every file of this repository named in a docstring, a comment or a document exists (no dead references)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("alignment", "causal_models", "cluster", "search", "tests", "docs", "benchmarks")
REFERENCE = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP) + r")/(?:[\w.-]+/)*[\w.-]+\.(?:py|md|toml|yaml))")


def test_every_named_file_exists():
    listed = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.toml"], capture_output=True, text=True, cwd=ROOT,
                            check=True).stdout.split()
    dead = {f"{name}: {ref}" for name in listed for ref in REFERENCE.findall((ROOT / name).read_text())
            if not (ROOT / ref).exists()}
    assert not dead, sorted(dead)
