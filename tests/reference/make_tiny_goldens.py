#!/usr/bin/env python3
"""Goldens for the tiny checkpoints of tests/data/tiny_models.json: prompt ids, greedy ids and
last-position logits from Hugging Face transformers in float32, for every model and stored dtype.

    python3 tests/reference/make_tiny_goldens.py OUT_DIR
writes OUT_DIR/tiny_goldens.json and OUT_DIR/tiny_<model>_<dtype>.logits (float32, the logits
after the second prompt); copy them to tests/data/goldens/tiny/.

transformers 5 has no InternLM2 class of its own (the model ships remote code). The InternLM2
checkpoint is therefore run through transformers' LlamaForCausalLM after unpacking its wqkv the
way InternLM2's modeling code reads it ([kv_heads, groups + 2, head_dim, hidden]: the groups'
queries, then one key, then one value), and its prompt ids are the spec's (spm_encode plus the BOS
that InternLM2Tokenizer adds).
"""
import json
import os
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZERS = os.path.join(ROOT, "..", "shared", "data", "tokenizers")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def internlm2_as_llama(tensors, config):
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    h = config["hidden_size"]
    d, groups = h // heads, heads // kv
    out = {"model.embed_tokens.weight": tensors["model.tok_embeddings.weight"],
           "model.norm.weight": tensors["model.norm.weight"], "lm_head.weight": tensors["output.weight"]}
    for l in range(config["num_hidden_layers"]):
        p, q = f"model.layers.{l}.", f"model.layers.{l}."
        w = tensors[p + "attention.wqkv.weight"].view(kv, groups + 2, d, h)
        out[q + "self_attn.q_proj.weight"] = w[:, :groups].reshape(heads * d, h)
        out[q + "self_attn.k_proj.weight"] = w[:, groups].reshape(kv * d, h)
        out[q + "self_attn.v_proj.weight"] = w[:, groups + 1].reshape(kv * d, h)
        if config.get("bias", True):
            b = tensors[p + "attention.wqkv.bias"].view(kv, groups + 2, d)
            out[q + "self_attn.q_proj.bias"] = b[:, :groups].reshape(heads * d)
            out[q + "self_attn.k_proj.bias"] = b[:, groups].reshape(kv * d)
            out[q + "self_attn.v_proj.bias"] = b[:, groups + 1].reshape(kv * d)
            out[q + "self_attn.o_proj.bias"] = tensors[p + "attention.wo.bias"]
        out[q + "self_attn.o_proj.weight"] = tensors[p + "attention.wo.weight"]
        out[q + "input_layernorm.weight"] = tensors[p + "attention_norm.weight"]
        out[q + "post_attention_layernorm.weight"] = tensors[p + "ffn_norm.weight"]
        out[q + "mlp.gate_proj.weight"] = tensors[p + "feed_forward.w1.weight"]
        out[q + "mlp.up_proj.weight"] = tensors[p + "feed_forward.w3.weight"]
        out[q + "mlp.down_proj.weight"] = tensors[p + "feed_forward.w2.weight"]
    llama = LlamaConfig(vocab_size=config["vocab_size"], hidden_size=h, intermediate_size=config["intermediate_size"],
                        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=heads,
                        num_key_value_heads=kv, max_position_embeddings=config["max_position_embeddings"],
                        rms_norm_eps=config["rms_norm_eps"], rope_theta=float(config["rope_theta"]),
                        rope_scaling={"rope_type": config["rope_scaling"]["type"],
                                      "factor": config["rope_scaling"]["factor"]},
                        attention_bias=config.get("bias", True), tie_word_embeddings=False,
                        bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(llama)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in out.items()}, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    print("  internlm2 via Llama, rope:", getattr(llama, "rope_parameters", None) or llama.rope_scaling, flush=True)
    return model.float().eval()


def greedy_runs(model, encode, spec, logits_file):
    """Prompt ids, greedy ids and the largest |logit| for each prompt of the spec; the last
    prompt's last-position logits go to logits_file (float32)."""
    runs = []
    for i, prompt in enumerate(spec["prompts"]):
        ids = encode(prompt)
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1].float()
            out = model.generate(x, max_new_tokens=spec["new_tokens"], do_sample=False,
                                 attention_mask=torch.ones_like(x), pad_token_id=0)
        runs.append({"prompt_ids": ids, "generated_ids": out[0, len(ids):].tolist(), "logits_max": float(logits.abs().max())})
        if i == len(spec["prompts"]) - 1:
            logits.numpy().astype("<f4").tofile(logits_file)
    return runs


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    spec = tiny_models.load_spec(ROOT)
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "models": {}}
    for m in spec["models"]:
        for dtype_name in spec["dtypes"]:
            key = f"{m['name']}_{dtype_name}"
            folder = tempfile.mkdtemp(prefix=key)
            config = dict(m["config"], torch_dtype=dtype_name)
            tensors = tiny_models.build_tensors(spec["seed"], config, DTYPES[dtype_name])
            save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(config, f)
            src = os.path.join(TOKENIZERS, m["tokenizer"])
            for f in os.listdir(src):
                shutil.copy(os.path.join(src, f), folder)

            if m["name"] == "internlm2":
                # Python's sentencepiece >= 0.2.1 refuses this tokenizer.model (a legacy piece holds
                # a NUL), so the spec carries the ids Debian's spm_encode gives, plus the BOS.
                prompt_ids = dict(zip(spec["prompts"], m["prompt_ids"]))
                encode = lambda text: prompt_ids[text]  # noqa: E731
                model = internlm2_as_llama(tensors, config)
            else:
                tok = AutoTokenizer.from_pretrained(folder)
                encode = lambda text: tok(text)["input_ids"]  # noqa: E731
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
            entry = {"checksums": {n: str(tiny_models.checksum(t)) for n, t in tensors.items()},
                     "runs": greedy_runs(model, encode, spec, os.path.join(out_dir, f"tiny_{key}.logits"))}
            result["models"][key] = entry
            print(key, [len(r["prompt_ids"]) for r in entry["runs"]], flush=True)
            shutil.rmtree(folder)
    with open(os.path.join(out_dir, "tiny_goldens.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
