#!/usr/bin/env python3
"""Prompts rendered by Hugging Face transformers' apply_chat_template with each family's published
Jinja template (from the tokenizer_config.json files in ../shared/data/tokenizers), for the
conversations in tests/data/chat_conversations.json.

    python3 tests/reference/make_chat_template_goldens.py OUT_DIR   ->  OUT_DIR/chat_templates.json

Images: templates that take structured content (llava-1.5-hf, InternVL -hf) get {"type": "image"}
items before the text; templates that take plain strings get "<image>\\n" per image before the
text, which is how InternVL's chat() and LMDeploy place them.
"""
import json
import os
import sys

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data", "tokenizers")
CONVERSATIONS = json.load(open(os.path.join(ROOT, "tests", "data", "chat_conversations.json"), encoding="utf-8"))

# family -> (tokenizer folder holding the template, tokenizer folder to render with, structured content?)
FAMILIES = {
    "internlm2": ("internlm2", "llava15", False),  # same "<s>" bos; InternLM2's tokenizer is remote code
    "llava": ("llava15", "llava15", True),
    "llama3": ("llama3", "llama3", False),
    "internvl-hf": ("internvl-qwen2", "internvl-qwen2", True),
}


def to_hf(messages, structured):
    out = []
    for m in messages:
        if structured:
            content = [{"type": "image"} for _ in range(m["images"])] + [{"type": "text", "text": m["text"]}]
        else:
            content = "<image>\n" * m["images"] + m["text"]
        out.append({"role": m["role"], "content": content})
    return out


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    result = {"transformers": transformers.__version__, "families": {}}
    for family, (template_dir, tok_dir, structured) in FAMILIES.items():
        template = json.load(open(os.path.join(DATA, template_dir, "tokenizer_config.json")))["chat_template"]
        tok = AutoTokenizer.from_pretrained(os.path.join(DATA, tok_dir))
        rendered = {}
        for conv in CONVERSATIONS:
            if family == "internlm2" and any(m["images"] for m in conv["messages"]):
                continue  # a text-only template
            rendered[conv["name"]] = tok.apply_chat_template(
                to_hf(conv["messages"], structured), chat_template=template, tokenize=False,
                add_generation_prompt=conv["add_generation_prompt"])
        result["families"][family] = rendered
        print(family, len(rendered), flush=True)
    with open(os.path.join(out_dir, "chat_templates.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
