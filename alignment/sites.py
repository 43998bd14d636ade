"""Sites: where in a model an intervention acts, found by module path on any architecture.

A site is the output of one module, named by its dotted path as `model.named_modules()`
prints it ("transformer.h.6", "model.layers.12"). For the usual hypothesis, "the residual
stream after decoder layer L", the decoder-layer list is found by path
(`transformer.h` for GPT-2, `model.layers` for Llama/Qwen2/Mistral/SmolLM, `gpt_neox.layers`
for GPT-NeoX, ...) or, failing those, as the one `ModuleList` whose length is the config's
layer count. No per-architecture files: the hidden width is read from the model itself.

A hypothesis may also name a *component* of layer L: "block" is the layer's output (the
residual stream after it), "attention" and "mlp" the outputs of its two sub-layers, the
vectors each adds to the residual stream. They are found among the layer's children by
their usual names (`attn` / `self_attn` / `attention`, `mlp` / `feed_forward`), else as the
one child whose class name says attention or MLP.
"""

from __future__ import annotations

import difflib

from torch import nn

from causal_models.errors import UserError
from causal_models.hypotheses import COMPONENTS  # the one list of components

KNOWN_LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers",
                     "transformer.layers", "model.language_model.layers")


# Children of a decoder layer by their usual names, most common first (GPT-2, Llama/Qwen2/Mistral,
# GPT-NeoX, Falcon/Bloom, ...), then words the class names of the others contain.
SUBLAYER_NAMES = {"attention": ("self_attn", "attn", "attention", "self_attention"),
                  "mlp": ("mlp", "feed_forward", "ffn", "block_sparse_moe")}
SUBLAYER_WORDS = {"attention": ("attention", "attn"), "mlp": ("mlp", "feedforward", "ffn")}


class SiteError(UserError, ValueError):
    """A site path or layer that does not exist in the model."""


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted `path`; a wrong path lists the closest ones."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise SiteError(f"site must be a module path of {type(model).__name__}, got {path!r}.{hint} "
                        f"List them with `align-search sites MODEL`.") from None


def find_layer_list(model: nn.Module) -> str:
    """The dotted path of the decoder-layer `ModuleList`."""
    modules = dict(model.named_modules())
    for path in KNOWN_LAYER_LISTS:
        if isinstance(modules.get(path), nn.ModuleList):
            return path
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [name for name, module in modules.items()
                  if isinstance(module, nn.ModuleList) and len(module) == n_layers]
    if len(candidates) == 1:
        return candidates[0]
    raise SiteError(f"cannot find the decoder-layer list of {type(model).__name__} "
                    f"(tried {list(KNOWN_LAYER_LISTS)}); pass the layer's module path with --site")


def layer_count(model: nn.Module) -> int:
    return len(_layers(model, find_layer_list(model)))


def _layers(model: nn.Module, path: str) -> nn.ModuleList:
    layers = get_module(model, path)
    if not isinstance(layers, nn.ModuleList):
        raise SiteError(f"{path!r} must be the decoder-layer ModuleList, got {type(layers).__name__}")
    return layers


def layer_site(model: nn.Module, layer: int) -> str:
    """The module path of decoder layer `layer`, checked against the model's layer count."""
    path = find_layer_list(model)
    n_layers = len(_layers(model, path))
    if not 0 <= layer < n_layers:
        raise SiteError(f"layer must be in 0..{n_layers - 1} ({type(model).__name__} has {n_layers} layers), "
                        f"got {layer}")
    return f"{path}.{layer}"


def split_site(model: nn.Module, site: str) -> tuple[str, int] | None:
    """(layer list path, index) when `site` is a decoder layer, else None (an arbitrary module)."""
    place = site_layer(model, site)
    return place[:2] if place is not None and not place[2] else None


def site_layer(model: nn.Module, site: str) -> tuple[str, int, bool] | None:
    """(layer list path, index, inside) of the decoder layer `site` is, or is inside; None when neither.

    `inside` is True for a module within the layer (its attention, its MLP, a projection).
    """
    try:
        path = find_layer_list(model)
    except SiteError:
        return None
    if not site.startswith(f"{path}."):
        return None
    index, _, rest = site[len(path) + 1:].partition(".")
    return (path, int(index), bool(rest)) if index.isdigit() else None


def component_site(model: nn.Module, layer: int, component: str) -> str:
    """The module path of `component` ("block", "attention" or "mlp") of decoder layer `layer`."""
    block = layer_site(model, layer)
    if component == "block":
        return block
    if component not in SUBLAYER_NAMES:
        raise SiteError(f"component must be one of {list(COMPONENTS)}, got {component!r}")
    return f"{block}.{_sublayer_name(get_module(model, block), component, block)}"


def _sublayer_name(layer: nn.Module, component: str, block: str) -> str:
    children = dict(layer.named_children())
    for name in SUBLAYER_NAMES[component]:
        if name in children:
            return name
    words = SUBLAYER_WORDS[component]
    matches = [name for name, child in children.items()
               if any(word in type(child).__name__.lower() for word in words)]
    if len(matches) == 1:
        return matches[0]
    raise SiteError(f"the {component} sub-layer of decoder layer {block!r} must be one child module, got "
                    f"{matches or 'none'} among its children {list(children)} ({type(layer).__name__}). "
                    f"List the module paths with `align-search sites MODEL --all` and pass one with --site")


def hidden_size(model: nn.Module) -> int:
    """The residual-stream width, from the model config or, failing that, its input embeddings."""
    config = getattr(model, "config", None)
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if callable(get_embeddings) else None
    if isinstance(embeddings, nn.Embedding):
        return embeddings.embedding_dim
    raise SiteError(f"cannot read the hidden size of {type(model).__name__}")
