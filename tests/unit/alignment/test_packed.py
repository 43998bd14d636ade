"""Packed linear layers (alignment/packed.py) compute what nn.Linear does, forward and backward, and change
nothing else about the model: its parameters, tied weights, hooks and the fast paths' agreement."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alignment import packed
from alignment.packed import MIN_ELEMENTS, PackedLinear, pack_linears
from tests.helpers import tiny_model
from tests.unit.alignment.test_suffix import assert_suffix_equals_plain, suffix_interchange

pytestmark = pytest.mark.skipif(not packed.available(), reason="this torch has no oneDNN packed linear product")
FAMILIES = ["llama", "qwen2", "mistral", "gpt_neox"]  # GPT-2's Conv1D layers are not nn.Linear: left as they are


def wide(family, vocab=300):
    """A random 2-layer `family` model wide enough (256) for its layers to be packed."""
    return tiny_model(family, vocab, layers=2, hidden=256, seed=3)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 16, 3 * 7])
def test_a_packed_linear_equals_nn_linear_forward_and_backward(bias, rows):
    torch.manual_seed(0)
    linear = nn.Linear(256, 384, bias=bias).requires_grad_(False)
    ours = PackedLinear(linear)
    x = torch.randn(rows // 7 or 1, rows if rows < 7 else 7, 256, requires_grad=True)
    grad = torch.randn(*x.shape[:-1], 384)
    expected = linear(x)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    got = ours(x)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad, expected_grad, atol=1e-5, rtol=1e-5)
    assert ours.weight is linear.weight and ours.bias is linear.bias


@pytest.mark.parametrize("family", FAMILIES)
def test_a_packed_model_gives_the_same_logits_and_input_gradients(family):
    model = wide(family)
    reference = wide(family)
    names = dict(reference.named_parameters())
    assert pack_linears(model) > 0
    assert any(isinstance(module, PackedLinear) for module in model.modules())
    assert dict(model.named_parameters()).keys() == names.keys()  # the same parameters, in the same places
    assert model.state_dict().keys() == reference.state_dict().keys()
    ids = torch.randint(3, 300, (4, 9))
    embeds = reference.get_input_embeddings()(ids).detach().requires_grad_(True)
    ours = model(inputs_embeds=embeds).logits
    theirs = reference(inputs_embeds=embeds).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    weights = torch.randn_like(theirs)
    (ours_grad,) = torch.autograd.grad((ours * weights).sum(), embeds)
    (theirs_grad,) = torch.autograd.grad((theirs * weights).sum(), embeds)
    torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-4, rtol=1e-4)


def test_tied_weights_stay_tied_and_hooks_still_fire():
    model = tiny_model("llama", 300, layers=1, hidden=256, tie_word_embeddings=True)
    pack_linears(model)
    assert isinstance(model.lm_head, PackedLinear)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    model(torch.randint(3, 300, (2, 5)))
    assert seen == [torch.Size([2, 5, 300])]


def test_small_trainable_or_non_float32_layers_are_left_as_they_are():
    assert pack_linears(tiny_model("llama", 300, hidden=32)) == 0  # 32 x 64 products: nothing to gain
    trainable = nn.Sequential(nn.Linear(256, 256))
    assert pack_linears(trainable) == 0  # a weight that trains
    half = nn.Sequential(nn.Linear(256, 256).to(torch.bfloat16).requires_grad_(False))
    assert pack_linears(half) == 0
    frozen = nn.Sequential(nn.Linear(256, 256).requires_grad_(False))
    assert pack_linears(frozen, budget_mb=2 * 256 * 256 * 4 / 2**20 / 2) == 0  # the copies would not fit
    assert pack_linears(frozen) == 1 and MIN_ELEMENTS <= 256 * 256


def test_a_weight_that_trains_again_takes_torchs_own_product():
    """The packed copies are of the frozen weight: once it trains, they would be stale, so they are not used."""
    linear = nn.Linear(256, 256).requires_grad_(False)
    ours = PackedLinear(linear)
    linear.weight.requires_grad_(True)
    with torch.no_grad():
        linear.weight.mul_(2)
    x = torch.randn(3, 256)
    out = ours(x)
    torch.testing.assert_close(out, F.linear(x, linear.weight, linear.bias))
    out.sum().backward()
    assert linear.weight.grad is not None


@pytest.mark.parametrize("component", ["block", "mlp"])
def test_the_suffix_path_equals_the_plain_path_on_a_packed_model(price_tokenizer, component):
    model = tiny_model("llama", len(price_tokenizer), layers=3, hidden=256)
    assert pack_linears(model) > 0
    interchange, pairs = suffix_interchange(price_tokenizer, "llama", 1, component, model=model)
    assert_suffix_equals_plain(interchange, pairs)
