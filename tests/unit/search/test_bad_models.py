"""Model folders that cannot be used, and models that must not run code: one line each, nothing executed."""

from __future__ import annotations

import importlib.util
import json
import pickle

from alignment.models import GGUF_EXTRA
from search.cli import main
from tests.unit.search.cli_run import align_args, sweep_args, user_error


class _Trap:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _every_command(model, tmp_path) -> list[list]:
    return [["sites", model], align_args(model, tmp_path / "run"), sweep_args(model, tmp_path / "sweep")]


def test_missing_model_folder(tmp_path, capsys):
    for argv in _every_command(tmp_path / "nothing-here", tmp_path):
        assert "model path must exist, got" in user_error(capsys, argv)
    assert not (tmp_path / "sweep").exists()


def test_incomplete_model_folders(tiny_planted, tmp_path, capsys):
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((tiny_planted / "model.safetensors").read_bytes())
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_planted / "config.json").read_text())
    for argv in _every_command(no_config, tmp_path):
        assert "is incomplete: it has no config.json" in user_error(capsys, argv)
    for argv in _every_command(no_weights, tmp_path):
        assert "must hold its weights as *.safetensors, got no weights" in user_error(capsys, argv)


def test_pickled_weights_are_refused_not_unpickled(tiny_planted, tmp_path, capsys):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text((tiny_planted / name).read_text())
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(str(marker))))
    for argv in _every_command(folder, tmp_path):
        assert "got only pytorch_model.bin, which would have to be unpickled" in user_error(capsys, argv)
    assert not marker.exists()


def test_a_folder_that_is_not_a_causal_lm(tiny_planted, tmp_path, capsys):
    from transformers import ViTConfig

    folder = tmp_path / "vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    (folder / "model.safetensors").write_bytes((tiny_planted / "model.safetensors").read_bytes())
    for argv in _every_command(folder, tmp_path):
        assert "must hold a causal language model, got model type 'vit'" in user_error(capsys, argv)


def test_remote_code_never_runs_without_the_flag(tiny_planted, tmp_path, capsys):
    folder = tmp_path / "remote"
    folder.mkdir()
    marker = tmp_path / "remote-code-ran"
    config = json.loads((tiny_planted / "config.json").read_text())
    config.update(model_type="evil_lm", architectures=["EvilForCausalLM"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    "from transformers import GPT2Config as EvilConfig\n"
                                    "from transformers import GPT2LMHeadModel as EvilForCausalLM\n")
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((tiny_planted / name).read_bytes())
    for argv in _every_command(folder, tmp_path):
        line = user_error(capsys, argv)
        assert "trust_remote_code" in line and str(folder) in line
    assert not marker.exists()


def test_gguf_without_its_package(tmp_path, capsys, monkeypatch):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    for argv in _every_command(model, tmp_path):
        assert f"loading model.gguf needs the gguf and accelerate packages: {GGUF_EXTRA}" in user_error(capsys, argv)


def test_an_intervention_saved_for_another_model(tiny_planted, other_planted, tmp_path, capsys):
    assert main(align_args(tiny_planted, tmp_path / "run")) == 0
    capsys.readouterr()
    line = user_error(capsys, ["steer", tmp_path / "run", "--model", other_planted, "--prompt", "cat dog cow red =",
                               "--set", "in_set=true"])
    assert "this intervention was trained on" in line and "Load it onto the model it was trained on" in line
