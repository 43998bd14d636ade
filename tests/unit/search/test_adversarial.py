"""The cases of the adversarial run (the shared research notes' bad-inputs.md, by number) that were not one clean line.

Each gives one line and exit status 2 before any work (or does the right thing where it is not
an error), and a refused command changes no file that existed. docs/errors.md lists each case
with the test here that checks it.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
from pathlib import Path

import pytest

from causal_models import Hypothesis
from search.cli import _finite, main
from search.config import load_config
from search.folder import SweepFolder, TrialSpec
from tests.helpers import trial_summary
from tests.unit.search.cli_run import PLANTED, align_args, sweep_args, user_error

SHIPPED = Path(__file__).resolve().parents[3] / "alignment" / "task_models"
PROMPT = "cat dog cow red ="


def cli(argv: list) -> int:
    return main([str(a) for a in argv])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tiny_planted, tmp_path_factory) -> Path:
    """A trained (two-step) run of the planted task: config.json, metrics, intervention/, summary."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli(align_args(tiny_planted, out)) == 0
    return out


def finished_sweep(path: Path, model: Path) -> SweepFolder:
    """A sweep folder as a finished two-trial sweep leaves it (no Ray needed to make it)."""
    config = load_config(None, [f'model_path="{model}"', f'task="{PLANTED}"', 'hypotheses.causal_models=["planted"]',
                                'hypotheses.positions=["last", "filler"]', 'hypotheses.layers="1"',
                                "controls.top_k=0", "data.n_train=64"])
    folder = SweepFolder(path)
    path.mkdir(parents=True)
    folder.write_config(config)
    specs = [TrialSpec(Hypothesis("planted", ("in_set",), 1, position), 0) for position in ("last", "filler")]
    folder.write_trials(specs)
    for spec, iia in zip(specs, (0.95, 0.5)):
        folder.trial_dir(spec.key).mkdir(parents=True)
        summary = trial_summary(best_dev_iia=iia, test_iia=iia, test_iia_full_vocab=iia, boundary_widths={"in_set": 3})
        (folder.trial_dir(spec.key) / "summary.json").write_text(json.dumps(summary))
    folder.update_state(attempts=1)
    return folder


# -- data damaged: a refused command leaves what was there as it was -------------------------------------------


def test_20_data_refuses_a_folder_holding_files_and_names_them(tmp_path, capsys):
    out = tmp_path / "d20"
    out.mkdir()
    (out / "stats.json").write_text("my notes")
    (out / "notes.txt").write_text("mine")
    line = user_error(capsys, ["data", "price_tagging", "--n", "10", "--out", out])
    assert f"--out must be a new or empty folder, got '{out}', which holds notes.txt, stats.json" in line
    assert "--overwrite" in line and snapshot(out) == {"notes.txt": b"mine", "stats.json": b"my notes"}
    assert cli(["data", "price_tagging", "--n", "10", "--out", out, "--overwrite"]) == 0  # asked for: replaced
    assert (out / "notes.txt").read_text() == "mine" and (out / "pairs.jsonl").is_file()
    assert json.loads((out / "stats.json").read_text())["n"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["d20"]  # no hidden folder left beside it


def test_39_align_never_touches_an_existing_run_it_refuses(tiny_planted, run, tmp_path, capsys):
    copy = tmp_path / "run_copy"
    shutil.copytree(run, copy)
    before = snapshot(copy)
    line = user_error(capsys, align_args(tiny_planted, copy))
    assert "--out must be a new or empty folder" in line and "summary.json" in line
    line = user_error(capsys, [*align_args(tiny_planted, copy), "--overwrite", "--position", "middle"])
    assert "position must be one of ['filler', 'key', 'last'] or an integer, got 'middle'" in line
    assert snapshot(copy) == before  # its config.json still describes the intervention beside it


def test_96_97_99_share_never_overwrites_and_never_copies_onto_itself(run, tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "README.md").write_text("my card")
    assert "which holds README.md" in user_error(capsys, ["share", run, "--out", out])
    assert (out / "README.md").read_text() == "my card"
    before = snapshot(run)
    line = user_error(capsys, ["share", run / "intervention", "--out", run / "intervention"])
    assert "which holds intervention.json, intervention.safetensors" in line and snapshot(run) == before
    assert cli(["share", run / "intervention", "--out", run / "intervention", "--overwrite"]) == 0
    assert json.loads((run / "intervention" / "intervention.json").read_text()) == json.loads(
        before["intervention/intervention.json"])
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    assert f"--out must be a folder, got '{afile}', which is a file" in user_error(
        capsys, ["share", run, "--out", afile])


def test_107_train_model_refuses_an_existing_model_folder(tmp_path, capsys):
    model = tmp_path / "model_copy"
    shutil.copytree(SHIPPED / "price_tagging", model)
    before = snapshot(model)
    line = user_error(capsys, ["train-model", "price_tagging", "--out", model, "--steps", "5", "--quiet"])
    assert "--out must be a new or empty folder" in line and "model.safetensors" in line
    assert snapshot(model) == before


def test_145_sweep_refuses_a_folder_holding_someones_files(tiny_planted, tmp_path, capsys):
    out = tmp_path / "userdir"
    out.mkdir()
    (out / "report.md").write_text("mine")
    (out / "results.csv").write_text("mine")
    line = user_error(capsys, sweep_args(tiny_planted, out))
    assert f"sweep folder must be a new or empty folder, got '{out}', which holds report.md, results.csv" in line
    assert snapshot(out) == {"report.md": b"mine", "results.csv": b"mine"}


def test_148_report_on_a_folder_without_results_writes_nothing(tiny_planted, tmp_path, capsys):
    folder = finished_sweep(tmp_path / "s", tiny_planted)
    shutil.rmtree(folder.path / "trials")
    (folder.path / "results.csv").write_text("the last copy of the results")
    before = snapshot(folder.path)
    line = user_error(capsys, ["report", folder.path])
    assert "must hold a trial's result to report on, got none of its 2 trials finished or stopped" in line
    assert snapshot(folder.path) == before


# -- hangs: fail at once ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "expected"), [
    ("resources.gpu=1", "resources per trial must fit on one node of this machine, got CPU 1, GPU 1; this "
                        "machine has CPU"),
    ("resources.custom={accelerator_type_a100=1}", "got CPU 1, accelerator_type_a100 1"),
])
def test_128_a_resource_the_machine_lacks_fails_at_once(tiny_planted, tmp_path, capsys, setting, expected):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    out = tmp_path / "s128"
    assert expected in user_error(capsys, sweep_args(tiny_planted, out, setting))
    assert not out.exists()


def test_144_data_size_has_a_bound(tmp_path, capsys):
    line = user_error(capsys, ["data", "price_tagging", "--n", "1000000000000", "--out", tmp_path / "d"])
    assert "argument --n: must be <= 1e+06, got 1000000000000" in line


# -- tracebacks that are now one line -----------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("x = (\n", "must import without errors, got SyntaxError at line 1: '(' was never closed"),
    ("import os\nraise RuntimeError('boom at import')\n", "must import without errors, got RuntimeError at line 2: "
                                                         "boom at import"),
    ("import sys\nsys.exit(0)\n", "must import without errors, got exit(0) while importing it"),  # 09: looked fine
])
def test_04_05_09_a_task_file_that_does_not_import_is_named(tmp_path, capsys, source, expected):
    path = tmp_path / "task.py"
    path.write_text(source)
    line = user_error(capsys, ["data", f"{path}:T", "--out", tmp_path / "d"])
    assert f"task file '{path}' {expected}" in line and not (tmp_path / "d").exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["data", "price_tagging", "--max-unchanged", "nan"], "argument --max-unchanged: must be a finite number"),
    (["data", "price_tagging", "--max-unchanged", "1.5"], "argument --max-unchanged: must be <= 1, got 1.5"),
    (["accuracy", "price_tagging", "--model-path", "m", "--threads", "-1"], "argument --threads: must be >= 1"),
    (["ui", "DIR", "--port", "99999"], "argument --port: must be <= 65535, got 99999"),
    (["steer", "RUN", "--value", "x=1", "--generate", "-1"], "argument --generate: must be >= 1, got -1"),
    (["steer", "RUN", "--value", "x=1", "--eval", "-5"], "argument --eval: must be >= 1, got -5"),  # 93
    (["cluster", "status", "--address", ""], "--address must be 'auto', 'HOST:PORT' or 'ray://HOST:PORT', "
                                             "got ''"),  # 126: silently meant auto
])
def test_14_15_93_115_117_126_136_numbers_and_addresses_are_checked_where_they_enter(tmp_path, capsys, argv,
                                                                                         expected):
    assert expected in user_error(capsys, [*argv, *(["--out", tmp_path / "d"] if argv[0] == "data" else [])])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_40_42_49_103_a_learning_rate_must_be_finite(tiny_planted, tmp_path, capsys, value):
    line = user_error(capsys, [*align_args(tiny_planted, tmp_path / "a"), f"--lr={value}"])
    assert "argument --lr: must be a finite number" in line
    line = user_error(capsys, sweep_args(tiny_planted, tmp_path / "s", f"train.lr={value}"))
    assert f"train.lr must be a finite number > 0, got {float(value)}" in line
    line = user_error(capsys, ["train-model", "price_tagging", "--out", tmp_path / "m", "--set", f"lr={value}"])
    assert f"lr must be a finite number > 0, got {float(value)}" in line
    assert not any(tmp_path.iterdir())


def test_40_training_that_diverges_is_one_line(tiny_planted, tmp_path, capsys, monkeypatch):
    import alignment.trial
    from alignment.train import TrialDiverged

    def diverge(*args, **kwargs):
        raise TrialDiverged("loss became nan at step 2 (cross-entropy nan)")

    monkeypatch.setattr(alignment.trial, "train", diverge)  # what a learning rate too high does, every time
    out = tmp_path / "a"
    line = user_error(capsys, [*align_args(tiny_planted, out), "--lr", "0.5"])
    assert line == (f"align-search: error: training diverged: loss became nan at step 2 (cross-entropy nan). Lower "
                    f"--lr (0.5) or --boundary-lr (0.05); {out / 'metrics.jsonl'} has the steps before it")
    assert (out / "config.json").is_file()  # the run it diverged in is kept, to be read


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda m: (m / "model.safetensors").write_bytes(b"\xff" * 64),  # 28
     "must be a causal language model folder that transformers can load: Error while deserializing header"),
    (lambda m: (m / "config.json").write_text("[1, 2, 3]"),  # 29
     "must have a config.json holding a JSON object, got a list"),
    (lambda m: (m / "config.json").write_text(json.dumps({**json.loads((m / "config.json").read_text()),
                                                           "n_embd": 48})),  # 31
     "must hold weights of the shapes its config.json gives, got transformer."),
    (lambda m: [p.unlink() for p in m.glob("*token*")],  # 150: was cut off mid-sentence
     "must hold its tokenizer (tokenizer.json, tokenizer_config.json, vocab.json, tokenizer.model, "
     "spiece.model), got none of them"),
])
def test_28_29_31_150_a_broken_model_folder_is_one_line(tiny_planted, tmp_path, capsys, damage, expected):
    model = tmp_path / "m"
    shutil.copytree(tiny_planted, model)
    damage(model)
    assert expected in user_error(capsys, ["sites", "--model-path", model])


def test_resume_and_report_name_a_torn_sweep_file_and_how_to_recover(tiny_planted, tmp_path, capsys):
    for name, hint in (("sweep.json", "restore it from the artifact sweep.json"),  # 72
                       ("trials.json", "delete it and resume"),  # 70, 74
                       ("state.json", "delete it and resume: every result is kept")):  # 69
        folder = finished_sweep(tmp_path / name, tiny_planted)
        path = folder.path / name
        path.write_text(path.read_text()[:len(path.read_text()) // 2])
        before = snapshot(folder.path)
        for argv in (["sweep", "--resume", folder.path], ["report", folder.path]):
            if name == "state.json" and argv[0] == "report":
                continue  # report does not need state.json: it reports (73)
            line = user_error(capsys, argv)
            assert f"'{path}' must be the JSON align-search wrote, got a torn or foreign file" in line, line
            assert hint in line
        assert snapshot(folder.path) == before


def test_75_a_torn_trial_file_is_skipped_with_a_warning_and_the_report_covers_the_rest(tiny_planted, tmp_path,
                                                                                       capsys, caplog):
    folder = finished_sweep(tmp_path / "s", tiny_planted)
    torn = folder.trial_dir(folder.read_trials()[1].key) / "summary.json"
    torn.write_text('{"test_iia": 0.5, ')
    assert cli(["report", folder.path]) == 0
    captured = capsys.readouterr()
    assert f"skipping {torn}: torn or not JSON" in caplog.text
    rows = (folder.path / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and "finished" in rows[1] and "pending" in rows[2]
    assert json.loads(captured.out)["verdict"]["causal_models"]["planted"]["iia"] == 0.95


def test_79_80_122_124_a_tracking_uri_is_checked_before_anything_is_made(tiny_planted, tmp_path, capsys):
    out = tmp_path / "s79"
    line = user_error(capsys, sweep_args(tiny_planted, out, 'tracking.uri="not a uri at all"'))
    assert "tracking.uri must be an MLflow server (http://HOST:PORT), a database (sqlite:///PATH.db" in line
    assert "got 'not a uri'" in user_error(capsys, [*sweep_args(tiny_planted, out), "--tracking-uri", "not a uri"])
    assert not out.exists()
    folder = finished_sweep(tmp_path / "s", tiny_planted)
    before = snapshot(folder.path)
    assert "tracking.uri must be an MLflow server" in user_error(
        capsys, ["sync", folder.path, "--tracking-uri", "not a uri at all"])
    blocked = tmp_path / "afile"
    blocked.write_text("x")
    line = user_error(capsys, ["sync", folder.path, "--tracking-uri", f"sqlite:///{blocked}/x.db"])
    assert f"MLflow store sqlite:///{blocked}/x.db must be a SQLite file this process can write, got its folder " \
           f"does not exist" in line
    assert snapshot(folder.path) == before


def test_85_88_90_92_steering_requests_are_checked(run, capsys):
    line = user_error(capsys, ["steer", run, "--value", "in_set=maybe", "--eval", "5"])
    assert "--value in_set must be one of [False, True], got 'maybe'" in line
    line = user_error(capsys, ["steer", run, "--prompt", PROMPT, "--prompt", PROMPT, *["--source", PROMPT] * 3])
    assert "--source must be given once, or once per --prompt (2), got 3 times" in line
    line = user_error(capsys, ["steer", run, "--prompt", "cat dog " * 5000, "--value", "in_set=true"])
    assert "(40000 characters)" in line and len(line) < 600
    line = user_error(capsys, ["steer", run, "--prompt", "cat dog cow zebra =", "--value", "in_set=true"])
    assert "prompt must use only text the model's tokenizer knows, got ['zebra'] read as its unknown token" in line


def test_151_152_a_damaged_intervention_is_one_line(run, tmp_path, capsys):
    for name, content, expected in (
            ("intervention.json", '{"format": "align-search/intervention", ', "must be the JSON align-search wrote"),
            ("intervention.safetensors", b"\xff" * 64, "must hold an intervention align-search saved, got "
                                                      "SafetensorError")):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        target = copy / "intervention" / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        assert expected in user_error(capsys, ["steer", copy, "--prompt", PROMPT, "--value", "in_set=true"])


def test_114_a_model_that_cannot_answer_the_task_is_one_line(capsys):
    line = user_error(capsys, ["accuracy", "price_tagging", "--model-path", SHIPPED / "word_logic", "--n", "4"])
    assert "answers ['No', 'Yes'] must start with different tokens" in line and "another task" in line


def test_142_a_binary_config_file_is_one_line(tmp_path, capsys):
    config = tmp_path / "garbage.toml"
    config.write_bytes(b"\x8e\xff\x00binary")
    assert f"sweep config '{config}' must be UTF-8 text (TOML), got the byte 0x8e at offset 0" in user_error(
        capsys, ["sweep", config, "--out", tmp_path / "s"])
    assert f"got '{tmp_path}' (a folder)" in user_error(capsys, ["sweep", tmp_path])  # 141: said "no such file"
    assert not (tmp_path / "s").exists()


# -- silent misbehaviour that is now caught or right ----------------------------------------------------------


def test_43_a_subspace_wider_than_the_model_is_refused_for_every_kind(tiny_planted, tmp_path, capsys):
    line = user_error(capsys, [*align_args(tiny_planted, tmp_path / "a"), "--subspace-dim", "1000"])
    assert "intervention.subspace_dim must fit the model's hidden size 32 (boundless over 1 variable(s) needs " \
           "1000 dimensions), got 1000" in line


def test_93_a_rate_over_no_prompts_prints_as_json_null():
    assert json.loads(json.dumps(_finite({"flipped": math.nan, "kept": [1.0, math.inf], "n": 0}))) == {
        "flipped": None, "kept": [1.0, None], "n": 0}


def test_118_ui_refuses_a_busy_port(tiny_planted, tmp_path, capsys):
    folder = finished_sweep(tmp_path / "s", tiny_planted)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = user_error(capsys, ["ui", folder.path, "--port", port])
    assert f"--port must be free on 127.0.0.1, got {port}, which another process holds" in line


def test_147_resume_lists_only_the_keys_the_user_changed(tiny_planted, tmp_path, capsys):
    folder = finished_sweep(tmp_path / "s", tiny_planted)
    line = user_error(capsys, ["sweep", "--resume", folder.path, "--set", "train.lr=0.5"])
    assert line.endswith("differing keys: train.lr (0.003 -> 0.5). Resume without a config, or start a new sweep")


# -- one line, but flawed: now with a rule and a hint, and nothing left behind --------------------------------


def test_17_an_output_folder_under_a_file(tmp_path, capsys):
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    line = user_error(capsys, ["data", "price_tagging", "--out", afile / "sub"])
    assert f"--out must be a folder, got '{afile / 'sub'}', which is under the file '{afile}'" in line


def test_82_an_unreachable_cluster_leaves_no_half_made_sweep_folder(tiny_planted, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "s82"
    line = user_error(capsys, [*sweep_args(tiny_planted, out), "--address", f"127.0.0.1:{port}"])
    assert f"nothing answers at '127.0.0.1:{port}'" in line
    assert not out.exists()
