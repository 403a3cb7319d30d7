#!/usr/bin/env python3
"""A text tokenized by transformers' fast tokenizer, its slow (sentencepiece) one, and
sentencepiece itself, for comparing with `lumen-cli tokenize --file TEXT --json`:

    python3 tests/reference/tokenize_reference.py MODEL_DIR TEXT_FILE
prints {"fast": [...], "slow": [...], "sentencepiece": [...]} (each with the BOS the tokenizer adds;
a tokenizer that cannot load here gives its error instead of ids).
"""
import json
import os
import sys


def main(model_dir, text_file):
    with open(text_file, encoding="utf-8") as f:
        text = f.read()
    out = {}
    try:
        from transformers import AutoTokenizer
        out["fast"] = AutoTokenizer.from_pretrained(model_dir)(text)["input_ids"]
    except Exception as e:  # noqa: BLE001 (reported in the output)
        out["fast"] = f"error: {e}"
    try:
        from transformers import AutoTokenizer
        out["slow"] = AutoTokenizer.from_pretrained(model_dir, use_fast=False)(text)["input_ids"]
    except Exception as e:  # noqa: BLE001
        out["slow"] = f"error: {e}"
    try:
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
        out["sentencepiece"] = [sp.bos_id()] + sp.encode(text)
    except Exception as e:  # noqa: BLE001
        out["sentencepiece"] = f"error: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
