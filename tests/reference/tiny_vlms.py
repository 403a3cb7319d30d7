"""Builds the tiny seeded-random vision-language checkpoints of tests/data/tiny_vlms.json with the
tensor formula of tiny_models.py (tests/support/tiny_vlms.cpp builds the same bytes), in the file
layouts the published checkpoints use: llava-1.5-hf, InternVL2 (InternVLChatModel, InternLM2
inside) and InternVL -hf (InternVLForConditionalGeneration, Qwen2 inside).
"""
import json
import os

import tiny_models


def _text_shapes(text_config, architecture, rename):
    shapes = tiny_models.tensor_shapes(dict(text_config, architectures=[architecture]))
    return {rename(name): shape for name, shape in shapes.items()}


def tensor_shapes(model):
    """name -> shape for one entry of tiny_vlms.json's models."""
    c = model["config"]
    v = c["vision_config"]
    d, inter, layers = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    p = v["patch_size"][0] if isinstance(v["patch_size"], list) else v["patch_size"]
    size = v["image_size"][0] if isinstance(v["image_size"], list) else v["image_size"]
    n = (size // p) ** 2
    shapes = {}
    name = model.get("layout", model["name"])
    if name == "llava":
        h = c["text_config"]["hidden_size"]
        t = "vision_tower.vision_model."
        shapes[t + "embeddings.class_embedding"] = [d]
        shapes[t + "embeddings.patch_embedding.weight"] = [d, 3, p, p]
        shapes[t + "embeddings.position_embedding.weight"] = [n + 1, d]
        shapes[t + "pre_layrnorm.weight"] = [d]
        shapes[t + "pre_layrnorm.bias"] = [d]
        for l in range(layers):
            q = f"{t}encoder.layers.{l}."
            for norm in ("layer_norm1", "layer_norm2"):
                shapes[q + norm + ".weight"] = [d]
                shapes[q + norm + ".bias"] = [d]
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[q + f"self_attn.{proj}.weight"] = [d, d]
                shapes[q + f"self_attn.{proj}.bias"] = [d]
            shapes[q + "mlp.fc1.weight"] = [inter, d]
            shapes[q + "mlp.fc1.bias"] = [inter]
            shapes[q + "mlp.fc2.weight"] = [d, inter]
            shapes[q + "mlp.fc2.bias"] = [d]
        shapes[t + "post_layernorm.weight"] = [d]
        shapes[t + "post_layernorm.bias"] = [d]
        # A list of vision_feature_layer values puts that many hidden states side by side.
        layers_used = c["vision_feature_layer"]
        shapes["multi_modal_projector.linear_1.weight"] = [h, d * (len(layers_used) if isinstance(layers_used, list) else 1)]
        shapes["multi_modal_projector.linear_1.bias"] = [h]
        shapes["multi_modal_projector.linear_2.weight"] = [h, h]
        shapes["multi_modal_projector.linear_2.bias"] = [h]
        shapes.update(_text_shapes(c["text_config"], "LlamaForCausalLM",
                                   lambda s: "language_model." + s))
    elif name == "internvl_chat":
        h = c["llm_config"]["hidden_size"]
        t = "vision_model."
        shapes[t + "embeddings.class_embedding"] = [1, 1, d]
        shapes[t + "embeddings.patch_embedding.weight"] = [d, 3, p, p]
        shapes[t + "embeddings.patch_embedding.bias"] = [d]
        shapes[t + "embeddings.position_embedding"] = [1, n + 1, d]
        for l in range(layers):
            q = f"{t}encoder.layers.{l}."
            for norm in ("norm1", "norm2"):
                shapes[q + norm + ".weight"] = [d]
                shapes[q + norm + ".bias"] = [d]
            shapes[q + "attn.qkv.weight"] = [3 * d, d]
            shapes[q + "attn.qkv.bias"] = [3 * d]
            shapes[q + "attn.proj.weight"] = [d, d]
            shapes[q + "attn.proj.bias"] = [d]
            shapes[q + "ls1"] = [d]
            shapes[q + "mlp.fc1.weight"] = [inter, d]
            shapes[q + "mlp.fc1.bias"] = [inter]
            shapes[q + "mlp.fc2.weight"] = [d, inter]
            shapes[q + "mlp.fc2.bias"] = [d]
            shapes[q + "ls2"] = [d]
        shapes["mlp1.0.weight"] = [4 * d]
        shapes["mlp1.0.bias"] = [4 * d]
        shapes["mlp1.1.weight"] = [h, 4 * d]
        shapes["mlp1.1.bias"] = [h]
        shapes["mlp1.3.weight"] = [h, h]
        shapes["mlp1.3.bias"] = [h]
        shapes.update(_text_shapes(c["llm_config"], "InternLM2ForCausalLM",
                                   lambda s: "language_model." + s))
    elif name == "internvl_hf":
        h = c["text_config"]["hidden_size"]
        t = "model.vision_tower."
        shapes[t + "embeddings.cls_token"] = [1, 1, d]
        shapes[t + "embeddings.position_embeddings"] = [1, n + 1, d]
        shapes[t + "embeddings.patch_embeddings.projection.weight"] = [d, 3, p, p]
        shapes[t + "embeddings.patch_embeddings.projection.bias"] = [d]
        rms = v.get("norm_type") == "rms_norm"
        for l in range(layers):
            q = f"{t}encoder.layer.{l}."
            for norm in ("layernorm_before", "layernorm_after"):
                shapes[q + norm + ".weight"] = [d]
                if not rms:
                    shapes[q + norm + ".bias"] = [d]
            for proj in ("q_proj", "k_proj", "v_proj"):
                shapes[q + f"attention.{proj}.weight"] = [d, d]
                if v.get("attention_bias", False):
                    shapes[q + f"attention.{proj}.bias"] = [d]
            if v.get("use_qk_norm", False):
                shapes[q + "attention.q_norm.weight"] = [d]
                shapes[q + "attention.k_norm.weight"] = [d]
            shapes[q + "attention.projection_layer.weight"] = [d, d]
            shapes[q + "attention.projection_layer.bias"] = [d]
            shapes[q + "lambda_1"] = [d]
            shapes[q + "mlp.fc1.weight"] = [inter, d]
            shapes[q + "mlp.fc1.bias"] = [inter]
            shapes[q + "mlp.fc2.weight"] = [d, inter]
            shapes[q + "mlp.fc2.bias"] = [d]
            shapes[q + "lambda_2"] = [d]
        m = "model.multi_modal_projector."
        shapes[m + "layer_norm.weight"] = [4 * d]
        shapes[m + "layer_norm.bias"] = [4 * d]
        shapes[m + "linear_1.weight"] = [h, 4 * d]
        shapes[m + "linear_1.bias"] = [h]
        shapes[m + "linear_2.weight"] = [h, h]
        shapes[m + "linear_2.bias"] = [h]
        shapes.update(_text_shapes(c["text_config"], "Qwen2ForCausalLM",
                                   lambda s: s if s == "lm_head.weight" else "model.language_model." + s[len("model."):]))
    else:
        raise ValueError(name)
    return shapes


def build_tensors(seed, model, dtype):
    """name -> torch tensor of `dtype`."""
    import numpy as np
    import torch
    out = {}
    for name, shape in tensor_shapes(model).items():
        values = tiny_models.tensor_values(seed, name, int(np.prod(shape))).reshape(shape)
        out[name] = torch.from_numpy(values).to(dtype)
    return out


def load_spec(root):
    with open(os.path.join(root, "tests", "data", "tiny_vlms.json")) as f:
        return json.load(f)
