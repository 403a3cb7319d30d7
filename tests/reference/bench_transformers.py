#!/usr/bin/env python3
"""Hugging Face transformers on the shapes `lumen-cli bench` measures, for side-by-side numbers:
random bf16 weights, greedy decoding with the default (dynamic) cache and SDPA attention.

    python3 tests/reference/bench_transformers.py CONFIG.json [--batch 1,16] [--prompt-len 512] [--gen-len 128]

Prints one JSON line per batch size: decode tokens/s per sequence and in total, prefill ms for the
batch, and time to first token for one sequence.
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def config_for(path):
    raw = json.load(open(path))
    inner = raw.get("llm_config") or raw.get("text_config") or raw
    inner = dict(inner)
    arch = inner.get("architectures", ["LlamaForCausalLM"])[0]
    if arch == "InternLM2ForCausalLM":  # no class in transformers: the same shapes as a Llama
        inner["model_type"] = "llama"
        inner["attention_bias"] = inner.pop("bias", False)
    inner.pop("architectures", None)
    inner.pop("auto_map", None)
    model_type = inner.pop("model_type", "llama")
    return AutoConfig.for_model(model_type, **inner)


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--gen-len", type=int, default=128)
    args = ap.parse_args()
    config = config_for(args.config)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    vocab = config.vocab_size
    for batch in [int(b) for b in args.batch.split(",")]:
        ids = torch.randint(10, vocab, (batch, args.prompt_len), device="cuda")
        gen = lambda n: model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,  # noqa: E731
                                       attention_mask=torch.ones_like(ids), pad_token_id=0)
        with torch.no_grad():
            gen(4)  # warm-up
            _, t_first = timed(lambda: gen(1))
            _, t_all = timed(lambda: gen(args.gen_len))
            _, ttft = timed(lambda: model(ids[:1]))
        decode_ms = (t_all - t_first) / (args.gen_len - 1)
        print(json.dumps({"config": args.config, "batch": batch, "prompt_len": args.prompt_len, "gen_len": args.gen_len,
                          "prefill_ms": t_first, "first_token_ms_one_sequence": ttft,
                          "decode_tokens_per_s": 1000 / decode_ms, "total_tokens_per_s": batch * 1000 / decode_ms,
                          "transformers": transformers.__version__, "device": torch.cuda.get_device_name()}), flush=True)


if __name__ == "__main__":
    main()
