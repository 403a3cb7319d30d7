#!/usr/bin/env python3
"""Token ids, tokens and decoded text from Hugging Face transformers for the real tokenizers in
../shared/data/tokenizers over tests/data/tokenizer_corpus.json, and chat-template renderings.

Run where transformers is installed (the GPU machine):
    python3 tests/reference/make_tokenizer_goldens.py OUT_DIR
Writes OUT_DIR/tokenizer_<name>.json and OUT_DIR/chat_templates.json; copy them to tests/data/goldens/.

Each tokenizer is loaded twice: from its own folder (as `lumen-cli tokenize --model DIR` reads it) and
from a copy with the config.json of the model it ships with, because transformers picks the
tokenizer class from the model type and the class can change the pipeline.
"""
import json
import os
import shutil
import sys
import tempfile
import traceback

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data", "tokenizers")
CORPUS = json.load(open(os.path.join(ROOT, "tests", "data", "tokenizer_corpus.json"), encoding="utf-8"))

# The model type each tokenizer ships with. (InternLM2's tokenizer is remote code that this machine
# does not have; its ids are checked against Debian's spm_encode instead.)
MODEL_TYPES = {"llava15": "llava", "qwen3": "qwen3", "llama3": "llama", "internvl-qwen2": "internvl"}


def backend_pipeline(tok):
    """The Rust pipeline the tokenizer really runs, without the (large) vocabulary and merges."""
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    spec = json.loads(backend.to_str())
    spec.get("model", {}).pop("vocab", None)
    spec.get("model", {}).pop("merges", None)
    return spec


def encode(tok, text, **kw):
    return tok(text, **kw)["input_ids"]


def cases(tok):
    out = []
    for text in CORPUS:
        ids = encode(tok, text)
        case = {"text": text, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids),
                "ids_plain": encode(tok, text, add_special_tokens=False)}
        try:
            case["ids_no_special"] = encode(tok, text, add_special_tokens=False, split_special_tokens=True)
        except Exception as e:  # older APIs take it only at construction
            case["ids_no_special_error"] = repr(e)
        case["decode"] = tok.decode(ids)
        case["decode_skip"] = tok.decode(ids, skip_special_tokens=True)
        case["decode_plain"] = tok.decode(case["ids_plain"])
        out.append(case)
    return out


def load_variant(name, with_config):
    src = os.path.join(DATA, name)
    if not with_config:
        return AutoTokenizer.from_pretrained(src, trust_remote_code=True)
    tmp = tempfile.mkdtemp()
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), tmp)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump({"model_type": MODEL_TYPES[name]}, f)
    return AutoTokenizer.from_pretrained(tmp, trust_remote_code=True)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    import tokenizers
    versions = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    for name in MODEL_TYPES:
        result = {"versions": versions, "tokenizer": name, "variants": {}}
        for with_config in (False, True):
            key = "model_folder" if with_config else "tokenizer_folder"
            try:
                tok = load_variant(name, with_config)
                result["variants"][key] = {"class": type(tok).__name__, "pipeline": backend_pipeline(tok),
                                           "cases": cases(tok)}
            except Exception:
                result["variants"][key] = {"error": traceback.format_exc().strip().splitlines()[-1]}
        with open(os.path.join(out_dir, f"tokenizer_{name}.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
        print(name, {k: v.get("class", "ERROR") for k, v in result["variants"].items()}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
