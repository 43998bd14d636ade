"""The task in docs/your-own-task.md works exactly as written."""

import re
from pathlib import Path

from causal_models import get_task, sample_pairs

DOC = Path(__file__).resolve().parents[3] / "docs" / "your-own-task.md"


def write_documented_task(directory: Path) -> Path:
    """The doc's task file, carry_task.py, written as the doc shows it into `directory`."""
    path = directory / "carry_task.py"
    path.write_text(re.search(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL).group(1))
    return path


def test_the_documented_task_runs_and_is_short(tmp_path):
    path = write_documented_task(tmp_path)
    assert len([line for line in path.read_text().splitlines() if line.strip()]) < 60
    task = get_task(f"{path}:CARRY")
    pairs = sample_pairs(task.causal_model(), ["carry"], 100, seed=0)
    assert pairs.stats.label_shares == {"False": 0.5, "True": 0.5}
    prompt = task.template().render({"a": 7, "b": 5})
    assert prompt.text == "7 plus 5: does it carry?"
    assert prompt.text[prompt.positions["question"]:].startswith("carry?")


def test_the_documented_task_gets_held_out_pairs_at_the_sweep_default_sizes(tmp_path):
    """100 distinct inputs, 2000 / 200 / 400 pairs (the sweep's defaults): dev and test still share no input
    with training, because some inputs are reserved for them before training is sampled."""
    from causal_models import make_splits

    task = get_task(f"{write_documented_task(tmp_path)}:CARRY")
    splits = make_splits(task, "carry", ["carry"], {"train": 2000, "dev": 200, "test": 400}, 0, max_unchanged=0.5)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [2000, 200, 400]
    reserved = splits["test"].stats.reserved_inputs
    assert reserved and splits["train"].stats.distinct_inputs + reserved == 100
    assert all(splits[s].stats.held_out and splits[s].stats.shared_inputs == 0 for s in ("dev", "test"))
