"""Tiny models and tokenizers built in memory: nothing is downloaded."""

from __future__ import annotations

import pytest

from alignment.models import LoadedModel
from alignment.tokenizer import task_tokenizer
from causal_models import get_task
from tests.helpers import tiny_model


@pytest.fixture(scope="session")
def price_tokenizer():
    return task_tokenizer(get_task("price_tagging"))


@pytest.fixture(params=["gpt2", "llama"])
def family(request):
    return request.param


@pytest.fixture
def tiny_price(family, price_tokenizer):
    """A random tiny model of each family with the price-tagging tokenizer."""
    return LoadedModel(tiny_model(family, len(price_tokenizer)), price_tokenizer, f"tiny-{family}")
