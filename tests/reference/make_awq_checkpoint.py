#!/usr/bin/env python3
"""A random checkpoint of a config's shapes in AutoAWQ's GEMM layout (4-bit, groups of 128), for
timing how fast a real-size 4-bit folder loads (`lumen-cli bench --model OUT`).

    python3 tests/reference/make_awq_checkpoint.py CONFIG.json OUT_DIR

Llama-family configs (llama, qwen2). The linear weights are random codes, zeros and fp16 scales in
AutoAWQ's tensors (qweight [in, out/8], qzeros [groups, out/8], scales [groups, out]); embeddings,
norms and the output projection are random fp16, split into shards of at most 4 GiB with an index,
as the Hub's folders are.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file


def main(config_path, out_dir):
    with open(config_path) as f:
        config = json.load(f)
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    d = h // heads
    group = 128
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(1)

    def dense(*shape, scale=0.02):
        return ((torch.rand(*shape, generator=g) - 0.5) * scale).half()

    def awq(prefix, out_f, in_f):
        return {
            prefix + ".qweight": torch.randint(-2**31, 2**31 - 1, (in_f, out_f // 8), generator=g, dtype=torch.int32),
            prefix + ".qzeros": torch.randint(-2**31, 2**31 - 1, (in_f // group, out_f // 8), generator=g, dtype=torch.int32),
            prefix + ".scales": (torch.rand(in_f // group, out_f, generator=g) * 0.002 + 0.001).half(),
        }

    shards, current, size = [], {}, 0

    def put(tensors):
        nonlocal current, size
        for name, t in tensors.items():
            n = t.numel() * t.element_size()
            if size + n > (4 << 30) and current:
                shards.append(current)
                current, size = {}, 0
            current[name] = t.contiguous()
            size += n

    put({"model.embed_tokens.weight": dense(vocab, h, scale=1.0), "model.norm.weight": torch.ones(h).half()})
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        put({p + "input_layernorm.weight": torch.ones(h).half(), p + "post_attention_layernorm.weight": torch.ones(h).half()})
        for proj, rows in (("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d), ("o_proj", h)):
            put(awq(p + "self_attn." + proj, rows if proj != "o_proj" else h, h if proj != "o_proj" else heads * d))
        put(awq(p + "mlp.gate_proj", inter, h))
        put(awq(p + "mlp.up_proj", inter, h))
        put(awq(p + "mlp.down_proj", h, inter))
    if not config.get("tie_word_embeddings", False):
        put({"lm_head.weight": dense(vocab, h)})
    shards.append(current)
    index = {"metadata": {}, "weight_map": {}}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
        for t in shard:
            index["weight_map"][t] = name
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)
    config = dict(config, torch_dtype="float16",
                  quantization_config={"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm", "zero_point": True})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
