"""One vocabulary across commands: --model-path, --out (old spellings as aliases), align's --set and its
one table of 2023 flags, legacy flags refused, steer's --value; each command registers its own handler."""

import json

import pytest
import torch

from search.align_command import FLAGS, LEGACY, trial_config
from search.cli import build_parser, main
from tests.unit.search.cli_run import PLANTED, align_args, user_error


def parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def test_every_command_has_its_own_handler():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert callable(parser.get_default("handler")) or name == "cluster", name


def test_align_flags_and_set_build_one_config():
    args = parse("align", "--model_path", "m", "--task", PLANTED, "--valid_steps", "7", "--log-step", "3",
                 "--seed", "5", "--n_eval_examples", "30", "--set", "intervention.init_width=0.25",
                 "--set", "train.lr=0.02", "--output_dir", "run")
    config = trial_config(args)
    assert (config.train.eval_every, config.train.log_every, config.train.seed, config.data.seed) == (7, 3, 5, 5)
    assert (config.data.n_dev, config.intervention.init_width, config.train.lr) == (30, 0.25, 0.02)
    assert (config.layer, config.position, args.out) == (0, "last", "run")
    config = trial_config(parse("align", "--model-path", "m", "--site", "transformer.h.0.mlp", "--out", "r"))
    assert (config.layer, config.site) == (None, "transformer.h.0.mlp")
    # every flag maps onto a key TrialConfig has: the table is the whole mapping
    assert {key for flag in FLAGS for key in flag.keys} >= {"train.eval_every", "train.device", "data.n_train"}


@pytest.mark.parametrize("legacy", sorted(LEGACY))
def test_a_2023_flag_that_would_do_nothing_is_refused(capsys, legacy):
    line = user_error(capsys, ["align", "--model-path", "m", "--out", "r", legacy])
    assert f"{legacy} is a 2023 run_alignment.py flag that would do nothing here: {LEGACY[legacy]}" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_align_on_a_gpu_this_machine_lacks_is_one_line(tiny_planted, tmp_path, capsys):
    line = user_error(capsys, [*align_args(tiny_planted, tmp_path / "run"), "--device", "cuda"])
    assert "device must be one this machine has, got 'cuda' with no CUDA GPU visible" in line
    line = user_error(capsys, [*align_args(tiny_planted, tmp_path / "run"), "--set", 'train.device="tpu"'])
    assert "train.device must be cpu, cuda, cuda:N or mps, got 'tpu'" in line
    assert not (tmp_path / "run").exists()


def test_align_device_cpu_and_set_reach_the_trial(tiny_planted, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*align_args(tiny_planted, out), "--device", "cpu", "--set", "intervention.init_width=0.25"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["device"] == "cpu" and config["intervention"]["init_width"] == 0.25


def test_one_flag_name_per_concept_with_old_spellings_kept():
    assert parse("align", "--model-path", "m", "--output-dir", "r").out == "r"
    assert parse("align", "--model_path", "m", "--out", "r").model_path == "m"
    assert parse("steer", "run", "--model", "m", "--set", "x=1").model_path == "m"
    steer = parse("steer", "run", "--model-path", "m", "--value", "x=1", "--set", "y=2")
    assert (steer.model_path, steer.values) == ("m", ["x=1", "y=2"])
    assert parse("sites", "--model-path", "m").model_path == "m" and parse("sites", "m").model == "m"
    assert parse("accuracy", "price_tagging", "--model-path", "m").model_path == "m"
    for command in (["data", "price_tagging"], ["train-model", "price_tagging"], ["share", "run"],
                    ["convert-gguf", "x.gguf"]):
        args = parse(*command, "--out", "o", "--overwrite")
        assert (args.out, args.overwrite) == ("o", True)
