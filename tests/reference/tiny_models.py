"""Builds the tiny seeded-random checkpoints described in tests/data/tiny_models.json.

The tensors are a pure function of (seed, tensor name, element index), so the C++ tests build the
same bytes (tests/support/tiny_models.cpp) without committing checkpoints: each value is
uniform in [-scale/2, scale/2) (norm weights: 1 plus that) with a power-of-two scale, computed in
float64, rounded to float32, then to the stored dtype, all round-to-nearest-even.
"""
import json
import os

import numpy as np

MASK = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def splitmix64(z):
    """Vectorised over a numpy uint64 array (arithmetic wraps modulo 2^64)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def tensor_values(seed: int, name: str, count: int) -> np.ndarray:
    """float32 values of one tensor."""
    base = np.uint64((seed ^ fnv1a64(name.encode())) & MASK)
    with np.errstate(over="ignore"):
        x = splitmix64(base ^ np.arange(count, dtype=np.uint64))
    u = (x >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    if name.endswith("norm.weight"):
        v = 1.0 + (u - 0.5) * 0.5
    elif name.endswith(".bias"):
        v = (u - 0.5) * 0.25
    elif "embed" in name or name in ("lm_head.weight", "output.weight"):
        v = u - 0.5
    else:
        v = (u - 0.5) * 0.5
    return v.astype(np.float32)


def tensor_shapes(config: dict) -> dict:
    """name -> shape, in the checkpoint layout of config's architecture."""
    arch = config["architectures"][0]
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = h // heads
    shapes = {}
    if arch == "InternLM2ForCausalLM":
        shapes["model.tok_embeddings.weight"] = [vocab, h]
        for l in range(config["num_hidden_layers"]):
            p = f"model.layers.{l}."
            shapes[p + "attention_norm.weight"] = [h]
            shapes[p + "attention.wqkv.weight"] = [(heads + 2 * kv) * d, h]
            shapes[p + "attention.wo.weight"] = [h, heads * d]
            if config.get("bias", True):
                shapes[p + "attention.wqkv.bias"] = [(heads + 2 * kv) * d]
                shapes[p + "attention.wo.bias"] = [h]
            shapes[p + "ffn_norm.weight"] = [h]
            shapes[p + "feed_forward.w1.weight"] = [inter, h]
            shapes[p + "feed_forward.w3.weight"] = [inter, h]
            shapes[p + "feed_forward.w2.weight"] = [h, inter]
        shapes["model.norm.weight"] = [h]
        shapes["output.weight"] = [vocab, h]
        return shapes
    qwen = arch == "Qwen2ForCausalLM"
    attn_bias = config.get("attention_bias", False)
    shapes["model.embed_tokens.weight"] = [vocab, h]
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        shapes[p + "input_layernorm.weight"] = [h]
        for proj, rows in (("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d)):
            shapes[p + f"self_attn.{proj}.weight"] = [rows, h]
            if qwen or attn_bias:
                shapes[p + f"self_attn.{proj}.bias"] = [rows]
        shapes[p + "self_attn.o_proj.weight"] = [h, heads * d]
        if attn_bias:
            shapes[p + "self_attn.o_proj.bias"] = [h]
        shapes[p + "post_attention_layernorm.weight"] = [h]
        shapes[p + "mlp.gate_proj.weight"] = [inter, h]
        shapes[p + "mlp.up_proj.weight"] = [inter, h]
        shapes[p + "mlp.down_proj.weight"] = [h, inter]
    shapes["model.norm.weight"] = [h]
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = [vocab, h]
    return shapes


def build_tensors(seed: int, config: dict, dtype):
    """name -> torch tensor of `dtype`."""
    import torch
    out = {}
    for name, shape in tensor_shapes(config).items():
        values = tensor_values(seed, name, int(np.prod(shape))).reshape(shape)
        out[name] = torch.from_numpy(values).to(dtype)
    return out


def checksum(tensor) -> int:
    """sum over the tensor's bytes read as little-endian uint16 words w_i of w_i * splitmix64(i),
    modulo 2^64: what tests/support/tiny_models.cpp computes to prove it built the same bytes."""
    import torch
    raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    words = np.frombuffer(raw, dtype="<u2").astype(np.uint64)
    with np.errstate(over="ignore"):
        weights = splitmix64(np.arange(words.size, dtype=np.uint64))
        return int((words * weights).sum(dtype=np.uint64))


def load_spec(root: str) -> dict:
    with open(os.path.join(root, "tests", "data", "tiny_models.json")) as f:
        return json.load(f)
