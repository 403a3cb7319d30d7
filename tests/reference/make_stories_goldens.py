#!/usr/bin/env python3
"""Greedy continuations of the real stories260K model (../shared/data/models/stories260K-hf) by
Hugging Face transformers, in fp32 on the CPU, for the prompts the engine tests use.

    python3 tests/reference/make_stories_goldens.py OUT_DIR   ->  OUT_DIR/stories260K.json
"""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "..", "shared", "data", "models", "stories260K-hf")
PROMPTS = ["", "There was a big", "Once upon a time, a little dog"]
NEW_TOKENS = 199


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    runs = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
            logits = model(ids).logits[0, -1].tolist()
        generated = out[0, ids.shape[1]:].tolist()
        runs.append({"prompt": prompt, "prompt_ids": ids[0].tolist(), "generated_ids": generated,
                     "text": tok.decode(generated),
                     "text_skip_special": tok.decode(generated, skip_special_tokens=True), "last_logits": logits})
    with open(os.path.join(out_dir, "stories260K.json"), "w", encoding="utf-8") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "runs": runs}, f,
                  ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
