"""The front door: the README's Python block runs as written, the packages name what a notebook needs,
and the command line starts without torch."""

import re
import subprocess
import sys
from pathlib import Path

from alignment import TrialResult

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_python_block_runs_as_written(tmp_path, monkeypatch):
    code = re.search(r"## From Python\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    # It names the shipped model by its path in the repository; run it from a folder that has that path.
    (tmp_path / "alignment").mkdir()
    (tmp_path / "alignment" / "task_models").symlink_to(ROOT / "alignment" / "task_models")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    summary, saved = namespace["summary"], namespace["saved"]
    assert summary.prealign_accuracy > 0.9 and 0.0 <= summary.test_iia <= 1.0
    assert saved.description.variables == ("left_boundary",)
    assert TrialResult.read(tmp_path / "runs" / "left_boundary-L0" / "summary.json") == summary


def test_the_packages_name_what_a_notebook_needs():
    import alignment
    import search

    for name in ("TrialConfig", "InterventionConfig", "TrainConfig", "DataConfig", "run_trial", "load_model",
                 "build_intervention", "save_intervention", "load_intervention", "build_interchange", "TrialResult"):
        assert callable(getattr(alignment, name)), name
    for name in ("SweepConfig", "load_config", "run_sweep", "SweepFolder", "new_folder", "check_sweep"):
        assert callable(getattr(search, name)), name
    assert "reading order" in alignment.__doc__.lower() and "reading order" in search.__doc__.lower()


def test_the_command_line_starts_without_torch_ray_or_mlflow():
    code = ("import sys\nimport alignment, search, search.cli\n"
            "search.cli.build_parser().parse_args(['tasks'])\n"
            "search.cli.build_parser().parse_args(['data', 'price_tagging', '--out', 'x'])\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'mlflow', 'transformers'})\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_trials_worker_imports_no_mlflow():
    """The trainable and the stop rules it judges its reports by: MLflow's import cost every worker 0.5 s of the
    grid's start when the stop rules' module imported the tracker (only the driver logs to MLflow)."""
    code = ("import sys\nimport search.trainable, search.tune_parts\n"
            "assert 'mlflow' not in sys.modules, 'mlflow was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
