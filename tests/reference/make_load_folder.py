#!/usr/bin/env python3
"""A model folder at a config's real shapes, as Hugging Face writes one (bf16 safetensors shards of
about 5 GB and their index), for timing how long Lumen takes from the page cache to ready:

    python3 tests/reference/make_load_folder.py ../shared/data/configs/llama-2-7b.json OUT_DIR [TOKENIZER_DIR]

The weights are random (made on the GPU when there is one); the files of TOKENIZER_DIR, if given,
are copied in so that `lumen-cli generate` can run. Only Llama-layout configs.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file


def shapes(c):
    h, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    d = h // heads
    yield "model.embed_tokens.weight", (c["vocab_size"], h)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (heads * d, h)
        yield p + "self_attn.k_proj.weight", (kv * d, h)
        yield p + "self_attn.v_proj.weight", (kv * d, h)
        yield p + "self_attn.o_proj.weight", (h, heads * d)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (inter, h)
        yield p + "mlp.up_proj.weight", (inter, h)
        yield p + "mlp.down_proj.weight", (h, inter)
    yield "model.norm.weight", (h,)
    if not c.get("tie_word_embeddings", False):
        yield "lm_head.weight", (c["vocab_size"], h)


def main(config_path, out, tokenizer=None):
    with open(config_path) as f:
        config = json.load(f)
    os.makedirs(out, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=device).manual_seed(1234)
    shards, shard, size, limit = [], {}, 0, 5 << 30
    for name, shape in shapes(config):
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=g, device=device) * 0.02).to(torch.bfloat16).cpu()
        if size and size + t.numel() * 2 > limit:
            shards.append(shard)
            shard, size = {}, 0
        shard[name] = t
        size += t.numel() * 2
    shards.append(shard)
    index = {"metadata": {"total_size": sum(t.numel() * 2 for s in shards for t in s.values())}, "weight_map": {}}
    for i, s in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, os.path.join(out, file), metadata={"format": "pt"})
        for name in s:
            index["weight_map"][name] = file
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)
    config["torch_dtype"] = "bfloat16"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    if tokenizer:
        for name in os.listdir(tokenizer):
            shutil.copy(os.path.join(tokenizer, name), out)
    print(f"{len(shards)} shards, {index['metadata']['total_size'] / 2**30:.1f} GiB written to {out}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
