#!/usr/bin/env python3
"""Perplexity of a model on a text with transformers, over sliding windows as transformers'
perplexity guide computes it (each token scored once, from the first window that reaches it; a
window's first token is never scored), in float32: the reference for `lumen-cli perplexity`.

    python3 tests/reference/perplexity_transformers.py MODEL_DIR TEXT_FILE [CONTEXT] [STRIDE]
prints {"perplexity": P, "tokens": N, "context": C, "stride": S}.
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(model_dir, text_file, context=512, stride=256):
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with open(text_file, encoding="utf-8") as f:
        ids = tok(f.read())["input_ids"]
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        window = torch.tensor([ids[begin:end]])
        with torch.no_grad():
            logits = model(window).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for t in range(max(prev_end, begin + 1), end):
            nll -= float(logp[t - begin - 1, ids[t]])
            count += 1
        prev_end = end
        if end == len(ids):
            break
    print(json.dumps({"perplexity": math.exp(nll / count), "tokens": count, "context": context, "stride": stride}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
