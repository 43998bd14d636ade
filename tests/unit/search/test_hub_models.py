"""Models and shared interventions by Hugging Face Hub id, offline, from a Hugging Face cache.

The cache is built here in the layout huggingface_hub keeps (`hub/models--ORG--NAME/snapshots/
COMMIT/`, `refs/BRANCH`) in a temporary HF_HOME, and every command runs with HF_HUB_OFFLINE=1 in
a process of its own (huggingface_hub reads both when it is imported).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.unit.search.cli_run import PLANTED

ROOT = Path(__file__).resolve().parents[3]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(home: Path, repo: str, folder: Path, branches: tuple[str, ...] = ("main",)) -> None:
    """Put `folder`'s files into the Hugging Face cache under `home` as `repo` at COMMIT."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / COMMIT)
    (root / "refs").mkdir()
    for branch in branches:
        (root / "refs" / branch).write_text(COMMIT)


def run_offline(home: Path, *commands: list[str]) -> list[dict]:
    """Run `align-search COMMAND` for each command in one offline process; each one's exit code, out and err."""
    script = ("import contextlib, io, json, sys\nfrom search.cli import main\nresults = []\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    out, err = io.StringIO(), io.StringIO()\n"
              "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
              "        try:\n            code = main(argv)\n        except SystemExit as exit_:\n"
              "            code = exit_.code\n"
              "    results.append({'code': code, 'out': out.getvalue(), 'err': err.getvalue()})\n"
              "print(json.dumps(results))\n")
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-c", script, json.dumps([[str(a) for a in c] for c in commands])],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def errors(result: dict) -> list[str]:
    return [line for line in result["err"].splitlines() if line.startswith("align-search: error:")]


def test_align_steer_and_a_shared_intervention_by_hub_id_offline(tiny_planted, tmp_path):
    home = tmp_path / "hf"
    cache_repo(home, "org/tiny-planted", tiny_planted, branches=("main", "v1"))
    run, shared = tmp_path / "run", tmp_path / "shared"
    align = ["align", "--model-path", "org/tiny-planted", "--task", PLANTED, "--layer", "1", "--max-steps", "2",
             "--n-training-examples", "40", "--n-eval-examples", "20", "--n-test-examples", "20", "--out", run]
    steer = ["steer", run, "--prompt", "cat dog cow red =", "--value", "in_set=true"]
    results = run_offline(home, align, steer, ["share", run, "--out", shared],
                          ["sites", "--model-path", "org/tiny-planted@v1"],
                          ["sites", "--model-path", "org/not-cached"],
                          ["sites", "--model-path", "org/tiny-planted@v2"])
    assert [r["code"] for r in results[:4]] == [0, 0, 0, 0], [r["err"][-1500:] for r in results]
    assert json.loads((run / "config.json").read_text())["model_path"] == "org/tiny-planted"
    assert json.loads((run / "summary.json").read_text())["model"]["name"] == "org/tiny-planted"
    answers = json.loads(results[1]["out"])["answers"]
    assert answers[0]["prompt"] == "cat dog cow red ="
    assert "2 decoder layers" in results[3]["out"]
    for result in results[4:]:
        assert result["code"] == 2 and len(errors(result)) == 1
    assert "model 'org/not-cached' must be a local path, or a Hub id in the Hugging Face cache when the Hub " \
           "cannot be reached (HF_HUB_OFFLINE=1 or no network), got neither" in errors(results[4])[0]
    assert "model 'org/tiny-planted@v2' must be a local path, or a Hub id in the Hugging Face cache" in \
           errors(results[5])[0]

    cache_repo(home, "org/shared-intervention", shared)
    hf = run_offline(home, ["steer", "hf://org/shared-intervention", "--model-path", "org/tiny-planted",
                            "--prompt", "cat dog cow red =", "--value", "in_set=true"],
                     ["steer", "hf://org/missing", "--model-path", "org/tiny-planted", "--prompt", "x",
                      "--value", "in_set=true"])
    assert hf[0]["code"] == 0, hf[0]["err"][-1500:]
    assert json.loads(hf[0]["out"])["answers"] == answers  # the same intervention, fetched by id
    assert hf[1]["code"] == 2
    assert "shared intervention 'org/missing' must be a local path, or a Hub id in the Hugging Face cache" in \
           errors(hf[1])[0]
