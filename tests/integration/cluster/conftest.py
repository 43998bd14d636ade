"""Fixtures of the cluster/ slow tests: a small local Ray, tiny models saved to disk (each test's time limit is a
`pytest.mark.timeout`)."""

from __future__ import annotations

import pytest

from alignment.tokenizer import task_tokenizer
from causal_models import get_task
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 logical CPUs, small object store, no dashboard; shut down after the module."""
    import ray
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Tiny random GPT-2 and Llama with the price-tagging tokenizer, saved as Hugging Face folders."""
    tokenizer = task_tokenizer(get_task("price_tagging"))
    folders = {}
    for family in ("gpt2", "llama"):
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        tiny_model(family, len(tokenizer), layers=3).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[family] = folder
    return folders
