"""Sites: where in a model an intervention acts, found by module path on any architecture.

A site is the output of one module, named by its dotted path as `model.named_modules()`
prints it ("transformer.h.6", "model.layers.12"). For the usual hypothesis, "the residual
stream after decoder layer L", the decoder-layer list is found by path
(`transformer.h` for GPT-2, `model.layers` for Llama/Qwen2/Mistral/SmolLM, `gpt_neox.layers`
for GPT-NeoX, ...) or, failing those, as the one `ModuleList` whose length is the config's
layer count. No per-architecture files: the hidden width is read from the model itself.
"""

from __future__ import annotations

import difflib

from torch import nn

from causal_models.errors import UserError

KNOWN_LAYER_LISTS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers",
                     "transformer.layers", "model.language_model.layers")


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
    try:
        path = find_layer_list(model)
    except SiteError:
        return None
    prefix, _, index = site.rpartition(".")
    return (path, int(index)) if prefix == path and index.isdigit() else None


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
