#!/usr/bin/env python3
"""A random-weight model at InternLM2-chat-1.8B's shapes, in Llama layout, with transformers'
logits for a fixed prompt, for the GPU test `realShapeMatchesTransformers`:

    python3 tests/reference/make_real_shape.py OUT_DIR
    LUMEN_REAL_SHAPE_DIR=OUT_DIR build/tests/test_cuda_backend realShapeMatchesTransformers

Weights are normal with std 0.02 (norms 1), stored in bf16; transformers runs them in fp32 on the
GPU. OUT_DIR gets config.json, model.safetensors, reference.json (prompt ids) and reference.logits
(float32 logits after the prompt).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

# internlm2-chat-1_8b's shapes (../shared/data/configs/internlm2-chat-1_8b.json).
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
          "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 8,
          "vocab_size": 92544, "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
          "rope_scaling": {"type": "dynamic", "factor": 2.0}, "hidden_act": "silu", "tie_word_embeddings": False,
          "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1234)
    config = LlamaConfig(**{k: v for k, v in CONFIG.items() if k not in ("architectures", "torch_dtype")})
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if "rotary" not in k}
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f)
    # The reference runs the stored bf16 weights in fp32.
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    model = model.float().cuda().eval()
    g = torch.Generator().manual_seed(99)
    prompt = torch.randint(3, CONFIG["vocab_size"], (300,), generator=g).tolist()
    with torch.no_grad():
        logits = model(torch.tensor([prompt]).cuda()).logits[0, -1].float().cpu()
    logits.numpy().astype("<f4").tofile(os.path.join(out, "reference.logits"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"prompt_ids": prompt}, f)
    print("real-shape model written to", out, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
