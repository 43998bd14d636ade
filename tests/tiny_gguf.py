"""A tiny Llama written as a GGUF file the way llama.cpp writes one, for the convert-gguf tests.

F32 tensors (nothing to dequantize, so a converted folder must give the same logits), a
byte-level BPE vocabulary (the 256 byte symbols, one merge "Ġ t", an end-of-text token), and
the query and key weights permuted as llama.cpp's converter permutes them (transformers undoes
it on load).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

HEADS, KV_HEADS, HIDDEN, LAYERS = 4, 2, 32, 2
NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout: each head's two halves interleaved."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _gguf_name(name: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if name in top:
        return top[name]
    _, _, layer, *rest = name.split(".")
    return f"blk.{layer}.{NAMES['.'.join(rest[:-1])]}.weight"


def write_tiny_gguf(path: Path) -> tuple[Path, torch.nn.Module, list[str]]:
    """Write the GGUF; return (its path, the model it holds, its vocabulary)."""
    import gguf

    spelling = bytes_to_unicode()
    tokens = [spelling[b] for b in range(256)] + ["Ġt", "<|endoftext|>"]
    end = len(tokens) - 1
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        num_hidden_layers=LAYERS, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, vocab_size=len(tokens), max_position_embeddings=128, bos_token_id=end,
        eos_token_id=end, tie_word_embeddings=False, rms_norm_eps=1e-5, rope_theta=10000.0)).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(2 * HIDDEN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(["Ġ t"])
    writer.add_token_types([1] * (len(tokens) - 1) + [3])  # the last is a control token
    writer.add_bos_token_id(end)
    writer.add_eos_token_id(end)
    for name, tensor in model.state_dict().items():
        weight = tensor.float().numpy()
        if ".q_proj." in name:
            weight = _permute(weight, HEADS)
        elif ".k_proj." in name:
            weight = _permute(weight, KV_HEADS)
        writer.add_tensor(_gguf_name(name), np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model, tokens
