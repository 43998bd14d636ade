import pytest
import torch

from alignment.hooks import capture_output, edit_output, skip_layers
from alignment.sites import SiteError, component_site, find_layer_list, get_module, layer_site, site_layer
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


def test_components_are_found_on_every_family():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                                            intermediate_size=32, vocab_size=50))
    expected = {"gpt2": ("transformer.h.1.attn", "transformer.h.1.mlp"),
                "llama": ("model.layers.1.self_attn", "model.layers.1.mlp"),
                "neox": ("gpt_neox.layers.1.attention", "gpt_neox.layers.1.mlp")}
    for name, model in (("gpt2", tiny_model("gpt2", 50)), ("llama", tiny_model("llama", 50)), ("neox", neox)):
        assert (component_site(model, 1, "attention"), component_site(model, 1, "mlp")) == expected[name]
        assert component_site(model, 1, "block") == layer_site(model, 1)
        assert site_layer(model, expected[name][1]) == (find_layer_list(model), 1, True)
        assert site_layer(model, layer_site(model, 0)) == (find_layer_list(model), 0, False)


class _FeedForwardNetwork(torch.nn.Module):
    def forward(self, x):
        return x


def test_unknown_sub_layer_names_fall_back_to_class_names_or_fail_naming_the_sites_command():
    model = tiny_model("llama", 50)
    layer = model.model.layers[0]
    layer.token_mixer = layer.self_attn  # renamed children: found by their class names
    layer.channel_mixer = _FeedForwardNetwork()
    del layer.self_attn, layer.mlp
    assert component_site(model, 0, "attention") == "model.layers.0.token_mixer"
    assert component_site(model, 0, "mlp") == "model.layers.0.channel_mixer"
    layer.other = _FeedForwardNetwork()
    with pytest.raises(SiteError, match=r"mlp sub-layer .* must be one child module, got \['channel_mixer', "
                                        r"'other'\].*align-search sites MODEL --all"):
        component_site(model, 0, "mlp")
    with pytest.raises(SiteError, match="component must be one of"):
        component_site(model, 0, "heads")
