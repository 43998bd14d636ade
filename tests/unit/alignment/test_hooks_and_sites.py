import pytest
import torch

from alignment.hooks import capture_output, edit_output, skip_layers
from alignment.sites import SiteError, find_layer_list, get_module, layer_site
from tests.helpers import tiny_model


def test_layer_lists_are_found_by_path(family):
    model = tiny_model(family, 50)
    assert find_layer_list(model) == {"gpt2": "transformer.h", "llama": "model.layers"}[family]
    with pytest.raises(SiteError, match=r"layer must be in 0..1 \(.* has 2 layers\), got 5"):
        layer_site(model, 5)


def test_gpt_neox_layer_list():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    model = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                             intermediate_size=32, vocab_size=50))
    assert layer_site(model, 1) == "gpt_neox.layers.1"


def test_a_wrong_path_lists_close_matches():
    with pytest.raises(SiteError, match="Did you mean 'model.layers.1'"):
        get_module(tiny_model("llama", 50), "model.layer.1")


def test_hooks_are_removed_even_after_an_error_and_foreign_hooks_survive(family):
    model = tiny_model(family, 50)
    site = layer_site(model, 1)
    ids = torch.randint(3, 50, (2, 6))
    calls = []
    foreign = get_module(model, site).register_forward_hook(lambda m, a, o: calls.append(1))
    before = model(input_ids=ids).logits
    with pytest.raises(RuntimeError, match="boom"), edit_output(model, site, torch.zeros_like):
        assert not torch.allclose(model(input_ids=ids).logits, before)
        raise RuntimeError("boom")
    with capture_output(model, site) as captured:
        model(input_ids=ids)
    assert len(captured) == 1
    torch.testing.assert_close(model(input_ids=ids).logits, before)
    assert len(get_module(model, site)._forward_hooks) == 1 and len(calls) == 4
    foreign.remove()


def test_skip_layers_restores_the_model(family):
    model = tiny_model(family, 50)
    path = find_layer_list(model)
    layers = list(get_module(model, path))
    ids = torch.randint(3, 50, (2, 6))
    with capture_output(model, f"{path}.0") as captured:
        expected = model(input_ids=ids).logits
    with skip_layers(model, path, 0, captured[0], returns_tuple=False):
        torch.testing.assert_close(model(input_ids=ids).logits, expected)
    assert list(get_module(model, path)) == layers
