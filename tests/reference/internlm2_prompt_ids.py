#!/usr/bin/python3
"""Prompt ids of the InternVL2 (InternLM2) cases of tests/data/tiny_vlms.json, as InternVL's chat()
builds them: each "<image>" becomes <img> + <IMG_CONTEXT> x 256 per tile + </img>, and the text
is tokenized as InternLM2Tokenizer does (added tokens split out, each piece of text through
sentencepiece, BOS first). Writes them into tiny_vlms.json as "prompt_ids".

Run with Debian's Python and its python3-sentencepiece (0.1.97): newer sentencepiece releases
refuse InternLM2's tokenizer.model, and transformers cannot load its remote-code tokenizer.
"""
import json
import os
import re
import struct

import sentencepiece as spm

from internvl_grid import internvl_grid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def tiles(width, height, min_num, max_num, size, thumbnail):
    """InternVL's dynamic_preprocess tile count."""
    best = internvl_grid(width, height, min_num, max_num, size)
    n = best[0] * best[1]
    return n + 1 if thumbnail and n != 1 else n


def main():
    path = os.path.join(ROOT, "tests", "data", "tiny_vlms.json")
    with open(path) as f:
        spec = json.load(f)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DATA, "tokenizers", "internlm2", "tokenizer.model"))
    model = next(m for m in spec["models"] if m["name"] == "internvl_chat")
    c = model["config"]
    added = {v: int(k) for k, v in model["added_tokens"].items()}
    added.update({"<s>": 1, "</s>": 2, "<|im_start|>": 92543, "<|im_end|>": 92542})
    pattern = re.compile("(" + "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)) + ")")
    for case in model["cases"]:
        text = case["prompt"]
        for image in case["images"]:
            n = tiles(*png_size(os.path.join(DATA, "images", image)), c["min_dynamic_patch"], c["max_dynamic_patch"],
                      c["force_image_size"], c["use_thumbnail"])
            text = text.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (256 * n) + "</img>", 1)
        ids = [1]
        for piece in pattern.split(text):
            if piece in added:
                ids.append(added[piece])
            elif piece:
                ids.extend(sp.encode(piece))
        case["prompt_ids"] = ids
        print(case["images"], len(ids))
    with open(path, "w") as f:
        json.dump(spec, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
