"""Helpers shared by tests: tiny random models built in memory, a free local port."""

from __future__ import annotations

import socket

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


def tiny_model(family: str, vocab_size: int, layers: int = 2, hidden: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=2, vocab_size=vocab_size, n_positions=128,
                            bos_token_id=2, eos_token_id=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_attention_heads=2, num_key_value_heads=1, vocab_size=vocab_size,
                             max_position_embeddings=128, bos_token_id=2, eos_token_id=2, pad_token_id=0)
        model = LlamaForCausalLM(config)
    return model.eval().requires_grad_(False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
