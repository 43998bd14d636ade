"""The driver builds the files a sweep's trials share (search/caches.py): once per layer, lowest first, the
keys and values once; the trials then map them (same fingerprint) and build nothing."""

import logging
from dataclasses import replace

import numpy as np

from alignment.frozen import FrozenSite
from alignment.models import load_model
from alignment.sites import layer_site
from alignment.trial import TrialInputs, run_trial
from search.caches import base_rows, build_above, build_shared_files, sweep_table, why_not_built
from search.config import load_config
from search.estimate import plan_sweep
from search.folder import SweepFolder
from search.prepare import load_prompts, load_rows, trial_config
from search.sweep import prepare_sweep
from tests.unit.search.conftest import PLANTED


def sweep_config(model, out, *overrides):
    return load_config(None, [f'model_path="{model}"', f'task="{PLANTED}"', 'hypotheses.causal_models=["planted"]',
                              'hypotheses.positions=["filler", "last"]', 'hypotheses.components=["block", "mlp"]',
                              "hypotheses.layers=[0, 1, 2]", "data.n_train=32", "data.n_dev=8", "data.n_test=8",
                              "train.batch_size=8", "train.max_steps=2", "train.eval_every=2", f'output_dir="{out}"',
                              *overrides])


def files(folder):
    return {path.name.split("-", 1)[1]: path.stat().st_mtime_ns for path in folder.cache_dir.iterdir()
            if path.suffix in (".npy", ".kv", ".rows")}


def test_the_driver_builds_each_layer_once_and_the_trials_map_them(other_planted, tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    config = sweep_config(other_planted, folder.path)
    specs = prepare_sweep(config, folder)
    loaded = load_model(str(other_planted))
    assert build_shared_files(config, folder, specs, loaded) == 6  # 3 layers x 2 components
    built = files(folder)
    # Hidden states at decoder layers 0-2 (layer 0's MLP starts from the embeddings); the keys and values of
    # layers 1-2 once, at layer 0: they serve the sites above (layer 2's block has no layer above it).
    assert sorted(built) == ["model.layers.0.kv", "model.layers.0.kv.rows", "model.layers.0.npy",
                             "model.layers.1.npy", "model.layers.2.npy"]
    table = sweep_table(folder, loaded)
    stored = np.load(next(path for path in folder.cache_dir.iterdir() if path.suffix == ".rows"))
    bases = {pair["base_prompt"] for directory in folder.data_directories()
             for split in load_rows(directory).values() for pair in split}
    assert sorted(table.texts[row] for row in stored) == sorted(bases) and len(bases) < len(table)
    for spec in specs:
        trial = trial_config(config, spec, str(other_planted), "plain")
        rows = load_rows(folder.data_dir(spec.hypothesis.causal_model, spec.hypothesis.variables))
        inputs = TrialInputs(loaded, rows, str(folder.cache_dir), load_prompts(folder.prompts_file))
        run_trial(replace(trial, train=replace(trial.train, threads=1)), tmp_path / "trials" / spec.key, inputs)
    assert files(folder) == built  # every trial mapped what the driver built


def test_the_probe_maps_the_shared_files(other_planted, tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    config = sweep_config(other_planted, folder.path)
    specs = prepare_sweep(config, folder)
    loaded = load_model(str(other_planted))
    build_shared_files(config, folder, specs, loaded)
    built = files(folder)
    plan = plan_sweep(config, folder, specs, 3, "plain", loaded, shared=True)
    assert plan.seconds and "ms a training step" in plan.line(2)
    assert files(folder) == built


def test_a_cluster_or_sharded_sweep_leaves_the_files_to_its_trials(other_planted, tmp_path):
    assert why_not_built(sweep_config(other_planted, tmp_path)) is None
    assert why_not_built(sweep_config(other_planted, tmp_path, 'ray_address="10.0.0.1:6379"')) == \
        "the sweep runs on a cluster"
    assert why_not_built(sweep_config(other_planted, tmp_path, "hypotheses.shard=2")) == "the trials are sharded"
    assert why_not_built(sweep_config(other_planted, tmp_path, 'train.cache="off"')) == "train.cache is off"


def test_the_one_pass_files_equal_those_built_site_by_site(other_planted, tmp_path, caplog):
    """The driver runs each layer once per prompt (`build_above`); its files hold what each site builds alone."""
    folder = SweepFolder(tmp_path / "sweep")
    config = sweep_config(other_planted, folder.path)
    specs = prepare_sweep(config, folder)
    loaded = load_model(str(other_planted))
    with caplog.at_level(logging.INFO, logger="search.caches"):
        build_shared_files(config, folder, specs, loaded)
    assert "in one pass" in caplog.text
    table = sweep_table(folder, loaded)
    bases = base_rows(folder, table)
    alone = tmp_path / "alone"
    for layer in (0, 1, 2):  # each site on its own, in its own folder: the trials' path
        FrozenSite(loaded.model, layer_site(loaded.model, layer), table, cache_dir=alone / str(layer), kv_rows=bases)
    for name in files(folder):
        if name.endswith(".lock"):
            continue
        layer = int(name.split(".")[2])
        own = [path for path in (alone / str(layer)).iterdir() if path.name.endswith(name)]
        shared = np.load(next(folder.cache_dir.glob(f"*{name}")), mmap_mode="r")
        assert own, f"{name}: the site alone built no such file"
        np.testing.assert_allclose(shared, np.load(own[0], mmap_mode="r"), atol=1e-5, err_msg=name)


def test_one_pass_is_skipped_where_it_does_not_apply(other_planted, tmp_path):
    folder = SweepFolder(tmp_path / "sweep")
    config = sweep_config(other_planted, folder.path)
    prepare_sweep(config, folder)
    loaded = load_model(str(other_planted))
    table = sweep_table(folder, loaded)
    bases = base_rows(folder, table)
    lowest = FrozenSite(loaded.model, layer_site(loaded.model, 0), table, cache_dir=folder.cache_dir, kv_budget_mb=0,
                        kv_rows=bases)
    assert not build_above(lowest, [1, 2], bases, folder.cache_dir, budget_mb=1e-3)  # over the budget
    assert not build_above(lowest, [1, 2], bases[:0], folder.cache_dir, budget_mb=64)  # no bases
    assert build_above(lowest, [1, 2], bases, folder.cache_dir, budget_mb=64)
    assert not build_above(lowest, [1, 2], bases, folder.cache_dir, budget_mb=64)  # built already: nothing again
