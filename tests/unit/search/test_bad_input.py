"""Bad input through the CLI: one line on stderr, exit 2, no traceback, nothing started (docs/errors.md)."""

from __future__ import annotations

import pytest

from search.config import default_config
from search.folder import SweepFolder
from tests.unit.search.cli_run import ODD, align_args, sweep_args, user_error


@pytest.mark.parametrize(("settings", "expected"), [
    (['task="nosuch"'], "task must be one of ['hierarchical_equality', 'ioi', 'price_tagging', 'word_logic'], "
                        "got 'nosuch'"),
    (['hypotheses.causal_models=["plantd"]'], "causal model of task 'planted' must be one of ['key_low', 'planted'], "
                                              "got 'plantd'. Did you mean 'planted'?"),
    (['hypotheses.positions=["lasst"]'], "position of template 'plain' must be one of ['filler', 'key', 'last'], "
                                         "got 'lasst'"),
    (['hypotheses.interventions=["boundles"]'], "intervention must be one of"),
    (["hypotheses.layers=[2]"], "hypotheses.layers: layer must be in 0..1 (the model has 2 layers), got 2"),
    (['hypotheses.layers="0-9"'], "(the model has 2 layers), got"),
    (['hypotheses.interventions=["das"]', "intervention.subspace_dim=40"],
     "intervention.subspace_dim must fit the model's hidden size 32 (das over 1 variable(s) needs 40 dimensions)"),
])
def test_sweep_checks_its_grid_before_making_the_folder(tiny_planted, tmp_path, capsys, settings, expected):
    out = tmp_path / "sweep"
    assert expected in user_error(capsys, sweep_args(tiny_planted, out, *settings))
    assert not out.exists()


def test_unknown_variable_names_the_variables_of_the_causal_model(tiny_planted, tmp_path, capsys):
    line = user_error(capsys, sweep_args(tiny_planted, tmp_path / "s", 'hypotheses.variables=[["in_sett"]]'))
    assert "'in_sett'" in line and "'in_set'" in line


@pytest.mark.parametrize(("argv", "expected"), [
    (["data", "nosuch"], "task must be one of"),
    (["data", "price_tagging", "--causal-model", "left_boundry"], "Did you mean 'left_boundary'?"),
    (["data", "price_tagging", "--variables", "nosuch"], "'nosuch'"),
    (["data", "price_tagging", "--n", "0"], "argument --n: must be >= 1, got 0"),
    (["data", "price_tagging", "--n", "-3"], "argument --n: must be >= 1, got -3"),
])
def test_data_rejects_unknown_names_and_sizes(tmp_path, capsys, argv, expected):
    assert expected in user_error(capsys, [*argv, "--out", tmp_path / "pairs"])
    assert not (tmp_path / "pairs").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--task", "nosuch"], "task must be one of"),
    (["--causal-model", "nosuch"], "causal model of task 'planted' must be one of ['key_low', 'planted']"),
    (["--variables", "nosuch"], "'nosuch'"),
    (["--position", "middle"], "position must be one of ['filler', 'key', 'last'] or an integer, got 'middle'"),
    (["--layer", "5"], "layer must be in 0..1 (GPT2LMHeadModel has 2 layers), got 5"),
    (["--position", "40"], "position 40 must be within the"),
    (["--train-batch-size", "0"], "argument --train-batch-size/--train_batch_size: must be >= 1, got 0"),
    (["--n-training-examples", "-1"], "argument --n-training-examples/--n_training_examples: must be >= 1, got -1"),
    (["--set", "train.batch_size=0"], "train.batch_size must be > 0, got 0"),
    (["--intervention", "das", "--subspace-dim", "0"], "argument --subspace-dim/--subspace_dim: must be >= 1, got 0"),
    (["--intervention", "das", "--subspace-dim", "33"], "subspace_dim must fit the model's hidden size 32"),
    (["--intervention", "boundles"], "intervention.kind must be one of"),
])
def test_align_rejects_bad_input_in_one_line(tiny_planted, tmp_path, capsys, extra, expected):
    argv = align_args(tiny_planted, tmp_path / "run")
    if "--task" in extra:
        argv[argv.index("--task") + 1] = extra[1]
        extra = []
    assert expected in user_error(capsys, [*argv, *extra])
    assert not (tmp_path / "run" / "summary.json").exists()


def test_position_the_tokenizer_cannot_place_names_the_prompt(tiny_planted, tmp_path, capsys):
    line = user_error(capsys, align_args(tiny_planted, tmp_path / "run", "--position", "indent", task=ODD))
    assert "position 'indent' (character 0) is not covered by any token of ' " in line
    # The sweep finds it while preparing, before any trial starts.
    out = tmp_path / "sweep"
    line = user_error(capsys, sweep_args(tiny_planted, out, f'task="{ODD}"', 'hypotheses.positions=["indent"]'))
    assert "position 'indent' (character 0) is not covered by any token of ' " in line
    assert not (out / "trials").exists() and not (out / "ray").exists()


@pytest.mark.parametrize(("setting", "expected"), [
    ("train.nope=1", "unknown key 'train.nope'; known keys here: ['batch_size'"),
    ('train.batch_size="big"', "train.batch_size must be int, got 'big' (str)"),
    ("train.lr=true", "train.lr must be float, got True"),
    ("hypotheses.seeds=[]", "hypotheses.seeds must list at least one seed"),
    ('scheduler.kind="median"', "scheduler.kind must be 'asha' or 'fifo', got 'median'"),
    ("data.n_train=0", "data.n_train must be > 0, got 0"),
    ("train.batch_size=-4", "train.batch_size must be > 0, got -4"),
    ("resources.concurrency=0", "resources.concurrency must be > 0, got 0"),
    ("resources.max_failures=-1", "resources.max_failures must be >= 0, got -1"),
])
def test_sweep_config_keys_and_sizes_are_checked(tiny_planted, tmp_path, capsys, setting, expected):
    out = tmp_path / "sweep"
    assert expected in user_error(capsys, sweep_args(tiny_planted, out, setting))
    assert not out.exists()


def test_sweep_config_file_errors_name_the_file_or_key(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text("[train]\nmax_stepz = 7\n")
    assert "unknown key(s) ['train.max_stepz']" in user_error(capsys, ["sweep", config])
    config.write_text("[train\n")
    assert "is not valid TOML" in user_error(capsys, ["sweep", config])
    assert "must be a TOML file" in user_error(capsys, ["sweep", tmp_path / "missing.toml"])


def test_resume_refuses_a_folder_made_by_another_config(tiny_planted, tmp_path, capsys):
    folder = SweepFolder(tmp_path / "old")
    folder.path.mkdir()
    folder.write_config(default_config())
    line = user_error(capsys, ["sweep", "--resume", folder.path, "--set", "train.lr=0.5", "--set", "train.max_steps=9"])
    assert "differing keys: train.lr (0.003 -> 0.5), train.max_steps (300 -> 9)" in line
    assert "must hold sweep.json" in user_error(capsys, ["sweep", "--resume", tmp_path])
    assert "must hold sweep.json" in user_error(capsys, ["report", tmp_path])


def test_unknown_steering_variable_is_one_line(tiny_planted, tmp_path, capsys):
    from search.cli import main
    assert main(align_args(tiny_planted, tmp_path / "run")) == 0
    capsys.readouterr()
    line = user_error(capsys, ["steer", tmp_path / "run", "--prompt", "cat dog cow red =", "--value", "in_sett=true"])
    assert f"--value must name a variable of every run, got ['in_sett']; the variables of '{tmp_path / 'run'}' are " \
           f"['in_set']" in line
