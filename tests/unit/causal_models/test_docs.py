"""The task in docs/your-own-task.md works exactly as written."""

import re
from pathlib import Path

from causal_models import get_task, sample_pairs

DOC = Path(__file__).resolve().parents[3] / "docs" / "your-own-task.md"


def test_the_documented_task_runs_and_is_short(tmp_path):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) < 60
    path = tmp_path / "carry_task.py"
    path.write_text(code)
    task = get_task(f"{path}:CARRY")
    pairs = sample_pairs(task.causal_model(), ["carry"], 100, seed=0)
    assert pairs.stats.label_shares == {"False": 0.5, "True": 0.5}
    prompt = task.template().render({"a": 7, "b": 5})
    assert prompt.text == "7 plus 5: does it carry?"
    assert prompt.text[prompt.positions["question"]:].startswith("carry?")
