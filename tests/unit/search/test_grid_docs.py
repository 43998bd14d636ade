"""The sweep configs docs/grid.md runs load, plan the grids their comments count, on the shipped models."""

import random
from pathlib import Path

import pytest

from alignment.models import load_tokenizer
from alignment.prompts import build_prompt_table
from alignment.taskmodels import shipped_model_path
from causal_models import get_task
from search.config import load_config
from search.prepare import check_grid, model_facts, prompt_facts, template_name

DOCS = Path(__file__).resolve().parents[3] / "docs"
CONFIGS = {"grid-hierarchical-yz.toml": 144, "grid-price-every-token.toml": 162, "grid-price-groups.toml": 48,
           "grid-price-digits.toml": 72}


@pytest.mark.parametrize(("name", "trials"), CONFIGS.items())
def test_grid_configs_plan_the_trials_their_comments_count(name, trials):
    config = load_config(DOCS / name)
    assert f"= {trials} grid trials" in (DOCS / name).read_text()
    model = shipped_model_path(config.task)
    facts = model_facts(str(model))
    template = template_name(config, facts.meta)
    task = get_task(config.task)
    rng = random.Random(0)
    prompts = [task.template(template).render(task.sample_inputs(rng)) for _ in range(50)]
    tokenizer = load_tokenizer(model)
    table = build_prompt_table(tokenizer, [p.text for p in prompts], [p.positions for p in prompts],
                               list(task.template(template).position_names))
    specs = check_grid(config, facts, template, prompt_facts(table, tokenizer))
    assert len(specs) == trials
    assert f"align-search sweep docs/{name}" in (DOCS / "grid.md").read_text()
