import argparse
import json

import pytest

from alignment.config import DataConfig, InterventionConfig, TrainConfig, TrialConfig
from alignment.config_io import ConfigError, from_dict, override, to_dict
from search.config import SweepConfig, default_config, load_config, to_toml
from search.sweep_commands import resolve_sweep_config


@pytest.mark.parametrize("config", [default_config(), InterventionConfig(kind="das", subspace_dim=4),
                                    TrainConfig(max_steps=5), DataConfig(max_unchanged=0.3),
                                    TrialConfig(model_path="m", layer=2, variables=("a", "b"))])
def test_round_trip_through_json(config):
    assert from_dict(type(config), json.loads(json.dumps(to_dict(config)))) == config


def test_unknown_keys_and_wrong_types_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['train.learning_rate'\]"):
        from_dict(SweepConfig, {"train": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="train.batch_size must be int, got 'big'"):
        from_dict(SweepConfig, {"train": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match="scheduler.kind must be 'asha' or 'fifo', got 'median'"):
        from_dict(SweepConfig, {"scheduler": {"kind": "median"}})
    with pytest.raises(ConfigError, match="data.n_train must be > 0, got -5"):
        from_dict(SweepConfig, {"data": {"n_train": -5}})
    with pytest.raises(ConfigError, match="train.batch_size must be > 0, got 0"):
        override(default_config(), "train.batch_size=0")


def test_overrides_parse_toml_values_and_bare_strings():
    config = override(default_config(), "train.lr=3e-4")
    config = override(config, 'hypotheses.positions=["last", "response"]')
    config = override(config, "hypotheses.layers=0-2")
    config = override(config, "scheduler.kind=fifo")
    assert config.train.lr == 3e-4 and config.hypotheses.positions == ("last", "response")
    assert config.hypotheses.layers == "0-2" and config.scheduler.kind == "fifo"
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        override(config, "train.nope=1")
    with pytest.raises(ConfigError, match="override must look like key.path=value"):
        override(config, "train.lr")


def test_toml_file_and_print_config(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('name = "mine"\n[train]\nmax_steps = 7\n[hypotheses]\nlayers = [0, 2]\n')
    config = load_config(path, ["train.lr=0.5"])
    assert (config.name, config.train.max_steps, config.train.lr, config.hypotheses.layers) == ("mine", 7, 0.5, (0, 2))
    assert config.train.batch_size == default_config().train.batch_size  # untouched keys keep their defaults
    assert 'name = "mine"' in to_toml(config) and "max_steps = 7" in to_toml(config)
    path.write_text("[train]\nmax_stepz = 7\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)
    with pytest.raises(ConfigError, match="must be a TOML file"):
        load_config(tmp_path / "missing.toml")


def test_resume_refuses_a_different_config_and_shows_the_keys(tmp_path):
    from search.folder import SweepFolder
    folder = SweepFolder(tmp_path)
    folder.write_config(default_config())
    args = argparse.Namespace(config=None, set=["train.lr=0.5", "resources.concurrency=1"], resume=str(tmp_path),
                              scheduler=None, address=None, tracking_uri=None, out=None)
    with pytest.raises(ConfigError, match=r"differing keys: train.lr \(0.003 -> 0.5\)\. Resume without"):
        resolve_sweep_config(args)
    args.set = ["resources.concurrency=1"]  # where it runs may change
    config, _ = resolve_sweep_config(args)
    assert config.resources.concurrency == 1


def test_relative_model_and_task_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Ray Tune runs trials in their own folders: the driver's paths must not be relative
    (tmp_path / "models" / "smollm2").mkdir(parents=True)
    args = argparse.Namespace(config=None, set=['model_path="models/smollm2"', 'task="tasks/mine.py:MINE"'],
                              resume=None, scheduler=None, address=None, tracking_uri=None, out=None)
    config, _ = resolve_sweep_config(args)
    assert config.model_path == str(tmp_path / "models" / "smollm2")
    args.set = ['model_path="HuggingFaceTB/SmolLM2-135M@main"']  # a Hub id is not a path: it stays as it is
    assert resolve_sweep_config(args)[0].model_path == "HuggingFaceTB/SmolLM2-135M@main"
    args.set = ['model_path="models/missing"']  # its first part is a local folder: a local path
    assert resolve_sweep_config(args)[0].model_path == str(tmp_path / "models" / "missing")
    assert config.task == f"{tmp_path / 'tasks' / 'mine.py'}:MINE"
    args.set = ['task="ioi"']
    assert resolve_sweep_config(args)[0].task == "ioi"


def test_the_documented_smollm2_sweep_config_is_valid():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[3] / "docs" / "smollm2-ioi.toml")
    assert config.task == "ioi" and config.hypotheses.causal_models == ("io_position", "io_name")
