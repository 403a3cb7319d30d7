#!/usr/bin/env python3
"""Perplexity of a model on a text with transformers, over sliding windows as transformers'
perplexity guide computes it (each token scored once, from the first window that reaches it; a
window's first token is never scored), in float32: the reference for `lumen-cli perplexity`.

    python3 tests/reference/perplexity_transformers.py MODEL_DIR TEXT_FILE [CONTEXT] [STRIDE] [--ids IDS_JSON]
prints {"perplexity": P, "tokens": N, "context": C, "stride": S}. With --ids the text is not
tokenized here: the ids come from IDS_JSON's last line ({"ids": [...]}, as `lumen-cli tokenize
--json` prints it), so that weights are compared on the same tokens whatever the tokenizers do.
"""
import json
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main(model_dir, text_file, context=512, stride=256, ids_file=None):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if ids_file:
        with open(ids_file, encoding="utf-8") as f:
            ids = json.loads(f.read().strip().splitlines()[-1])["ids"]
    else:
        tok = AutoTokenizer.from_pretrained(model_dir)
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
    args = sys.argv[1:]
    ids_file = None
    if "--ids" in args:
        at = args.index("--ids")
        ids_file = args[at + 1]
        del args[at:at + 2]
    main(args[0], args[1], *(int(a) for a in args[2:]), ids_file=ids_file)
