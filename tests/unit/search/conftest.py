"""Tiny random models of the planted task saved as Hugging Face folders (built in memory, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment.tokenizer import task_tokenizer
from tests.helpers import tiny_model
from tests.planted_task import planted_task

PLANTED = str(Path(__file__).resolve().parents[2] / "planted_task.py") + ":PLANTED"


def save_tiny(folder: Path, family: str = "gpt2", layers: int = 2, hidden: int = 32) -> Path:
    tokenizer = task_tokenizer(planted_task())
    tiny_model(family, len(tokenizer), layers=layers, hidden=hidden).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_planted(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 (hidden 32) with the planted task's tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny_planted"))


@pytest.fixture(scope="session")
def other_planted(tmp_path_factory) -> Path:
    """A random 3-layer Llama (hidden 48): a different model for the same task."""
    return save_tiny(tmp_path_factory.mktemp("other_planted"), "llama", layers=3, hidden=48)
