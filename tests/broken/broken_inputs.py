#!/usr/bin/env python3
"""The broken-input corpus: model folders, configs, tokenizers, images and option values as a
careless or hostile stranger might hand them to Lumen, each run through lumen-cli as a user would.

Every case must end within 10 s, with a non-zero exit, under 1 GB of resident memory, and with a
message that contains the expected fragment and names the file or option at fault. The corpus is
generated here (tiny valid folders, then one fault each), so nothing large is committed.

    broken_inputs.py --cli build/app/lumen-cli [--work DIR] [--only NAME] [--list]
"""
import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

TIMEOUT_S = 10.0
MAX_RSS_BYTES = 1 << 30

# --------------------------------------------------------------------------------------------
# Small valid pieces: a byte-level BPE tokenizer, safetensors, a tiny Llama and a tiny LLaVA.


def byte_chars():
    """GPT-2's printable stand-ins for the 256 bytes, as byte-level BPE vocabularies spell them."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


SPECIALS = ["<s>", "</s>", "<image>"]  # ids 256, 257, 258
VOCAB = 259


def tokenizer_json():
    return {
        "version": "1.0",
        "added_tokens": [{"id": 256 + i, "content": t, "special": True, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False} for i, t in enumerate(SPECIALS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "vocab": {c: i for i, c in enumerate(byte_chars())}, "merges": []},
    }


def safetensors(tensors, dtype="F32"):
    """tensors: [(name, shape)], zeros of `dtype` (F32 or F16)."""
    size = {"F32": 4, "F16": 2}[dtype]
    header, offset = {}, 0
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n * size]}
        offset += n * size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(offset)


def llama_config(**changes):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": VOCAB,
         "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
         "tie_word_embeddings": False, "bos_token_id": 256, "eos_token_id": 257, "torch_dtype": "float32"}
    c.update(changes)
    return c


def llama_tensors(prefix="", hidden=16, inter=32, vocab=VOCAB):
    t = [(prefix + "model.embed_tokens.weight", [vocab, hidden])]
    p = prefix + "model.layers.0."
    t += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden])]
    t += [(p + "self_attn." + n + ".weight", [hidden, hidden]) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    t += [(p + "mlp.gate_proj.weight", [inter, hidden]), (p + "mlp.up_proj.weight", [inter, hidden]),
          (p + "mlp.down_proj.weight", [hidden, inter])]
    t += [(prefix + "model.norm.weight", [hidden]), (prefix + "lm_head.weight", [vocab, hidden])]
    return t


def llava_config(**vision_changes):
    vision = {"model_type": "clip_vision_model", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
              "num_attention_heads": 2, "patch_size": 14, "image_size": 336, "layer_norm_eps": 1e-5,
              "hidden_act": "quick_gelu"}
    vision.update(vision_changes)
    text = llama_config()
    del text["architectures"], text["torch_dtype"]
    return {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": 258,
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
            "tie_word_embeddings": False, "torch_dtype": "float32", "vision_config": vision, "text_config": text}


def llava_tensors(d=8, inter=16, layers=2, patch=14, size=336, hidden=16):
    t = "vision_tower.vision_model."
    n = (size // patch) ** 2
    out = [(t + "embeddings.class_embedding", [d]), (t + "embeddings.patch_embedding.weight", [d, 3, patch, patch]),
           (t + "embeddings.position_embedding.weight", [n + 1, d]), (t + "pre_layrnorm.weight", [d]),
           (t + "pre_layrnorm.bias", [d])]
    for layer in range(layers):
        q = t + "encoder.layers.%d." % layer
        for norm in ("layer_norm1", "layer_norm2"):
            out += [(q + norm + ".weight", [d]), (q + norm + ".bias", [d])]
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(q + "self_attn." + proj + ".weight", [d, d]), (q + "self_attn." + proj + ".bias", [d])]
        out += [(q + "mlp.fc1.weight", [inter, d]), (q + "mlp.fc1.bias", [inter]), (q + "mlp.fc2.weight", [d, inter]),
                (q + "mlp.fc2.bias", [d])]
    out += [(t + "post_layernorm.weight", [d]), (t + "post_layernorm.bias", [d])]
    out += [("multi_modal_projector.linear_1.weight", [hidden, d]), ("multi_modal_projector.linear_1.bias", [hidden]),
            ("multi_modal_projector.linear_2.weight", [hidden, hidden]), ("multi_modal_projector.linear_2.bias", [hidden])]
    return out + llama_tensors("language_model.")


PREPROCESSOR = {"crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_normalize": True,
                "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": {"shortest_edge": 336}}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def write_json(path, value):
    write(path, json.dumps(value))


def make_llama(d):
    write_json(os.path.join(d, "config.json"), llama_config())
    write(os.path.join(d, "model.safetensors"), safetensors(llama_tensors()))
    write_json(os.path.join(d, "tokenizer.json"), tokenizer_json())
    write_json(os.path.join(d, "tokenizer_config.json"), {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False})
    return d


def make_llava(d):
    write_json(os.path.join(d, "config.json"), llava_config())
    write(os.path.join(d, "model.safetensors"), safetensors(llava_tensors()))
    write_json(os.path.join(d, "tokenizer.json"), tokenizer_json())
    write_json(os.path.join(d, "tokenizer_config.json"), {"bos_token": "<s>", "eos_token": "</s>"})
    write_json(os.path.join(d, "preprocessor_config.json"), PREPROCESSOR)
    write_json(os.path.join(d, "processor_config.json"), {"image_token": "<image>"})
    return d


def png(width, height, rows=None, color_type=2, bit_depth=8):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    if rows is None:
        channels = {0: 1, 2: 3, 6: 4}[color_type]
        rows = b"".join(b"\0" + bytes(width * channels) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def gif(width, height, lzw, min_code_size=2):
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + bytes(6)  # two-colour global table
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + bytes([min_code_size])
    blocks = b"".join(bytes([len(lzw[i:i + 255])]) + lzw[i:i + 255] for i in range(0, len(lzw), 255))
    return head + image + blocks + b"\0;"


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def pb_bytes(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def pb_int(field, value):
    return varint(field << 3) + varint(value)


def sentencepiece_model(charsmap=None):
    """A unigram ModelProto: <unk>, <s>, </s> and the letters, with an optional normalizer charsmap."""
    pieces = b""
    for text, kind in [("<unk>", 2), ("<s>", 3), ("</s>", 3)] + [(c, 1) for c in "abcdefghijklmnopqrstuvwxyz\u2581"]:
        pieces += pb_bytes(1, pb_bytes(1, text.encode()) + varint(2 << 3 | 5) + struct.pack("<f", -1.0) + pb_int(3, kind))
    trainer = pb_bytes(2, pb_int(3, 1))  # model_type UNIGRAM
    normalizer = pb_bytes(1, b"custom") + (pb_bytes(2, charsmap) if charsmap is not None else b"")
    return pieces + trainer + pb_bytes(3, normalizer)


def nested(kind, depth):
    """A tokenizer.json part nested `depth` levels deep through Sequence."""
    key = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "decoder": "decoders"}[kind]
    leaf = {"normalizer": '{"type":"NFC"}', "pre_tokenizer": '{"type":"ByteLevel"}', "decoder": '{"type":"ByteLevel"}'}[kind]
    return ('{"type":"Sequence","%s":[' % key) * depth + leaf + "]}" * depth


# --------------------------------------------------------------------------------------------
# The cases. Each makes its input under `w` (the case's own folder, with a valid tiny Llama at
# w/m and a tiny LLaVA at w/v) and returns the lumen-cli arguments; `expect` must appear in the
# message and `names` (a file or option) too.

CASES = []


def case(name, expect, names):
    def register(fn):
        CASES.append((name, expect, names, fn))
        return fn
    return register


def gen(model, *extra):
    return ["generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "2", "--device", "cpu"] + list(extra)


def edit_json(path, fn):
    with open(path) as f:
        value = json.load(f)
    fn(value)
    write_json(path, value)


def replace_with_fifo(path):
    os.remove(path)
    os.mkfifo(path)


def config_case(name, expect, changes, names="config.json"):
    @case(name, expect, names)
    def _(w):
        edit_json(os.path.join(w, "m", "config.json"), lambda c: c.update(changes))
        return gen(os.path.join(w, "m"))


# Model folders and config.json.
@case("model folder missing", "no such folder", "nowhere")
def _(w):
    return gen(os.path.join(w, "nowhere"))


@case("model path is a file", "is a file", "config.json")
def _(w):
    return gen(os.path.join(w, "m", "config.json"))


@case("config.json missing", "no config.json", "m")
def _(w):
    os.remove(os.path.join(w, "m", "config.json"))
    return gen(os.path.join(w, "m"))


@case("config.json is a FIFO", "is a pipe", "config.json")
def _(w):
    replace_with_fifo(os.path.join(w, "m", "config.json"))
    return gen(os.path.join(w, "m"))


@case("config.json is a folder", "is a folder", "config.json")
def _(w):
    os.remove(os.path.join(w, "m", "config.json"))
    os.mkdir(os.path.join(w, "m", "config.json"))
    return gen(os.path.join(w, "m"))


@case("config.json is /dev/zero", "is a device", "config.json")
def _(w):
    os.remove(os.path.join(w, "m", "config.json"))
    os.symlink("/dev/zero", os.path.join(w, "m", "config.json"))
    return gen(os.path.join(w, "m"))


@case("config.json of 40 MB", "larger than a configuration file can be", "config.json")
def _(w):
    with open(os.path.join(w, "m", "config.json"), "ab") as f:
        f.truncate(40 << 20)
    return gen(os.path.join(w, "m"))


@case("config.json not JSON", "not valid JSON", "config.json")
def _(w):
    write(os.path.join(w, "m", "config.json"), '{"model_type": "llama",')
    return gen(os.path.join(w, "m"))


@case("config.json nested 100000 deep", "nested deeper than", "config.json")
def _(w):
    write(os.path.join(w, "m", "config.json"), '{"a":' + "[" * 100000 + "]" * 100000 + "}")
    return gen(os.path.join(w, "m"))


@case("config.json an array", "not a JSON object", "config.json")
def _(w):
    write(os.path.join(w, "m", "config.json"), "[1, 2]")
    return gen(os.path.join(w, "m"))


config_case("hidden_size 10^12", "'hidden_size' must be an integer from 1 to", {"hidden_size": 10**12})
config_case("hidden_size a string", "'hidden_size' must be an integer", {"hidden_size": "big"})
config_case("zero heads", "'num_attention_heads' must be an integer from 1", {"num_attention_heads": 0})
config_case("heads do not divide hidden", "not a multiple of num_attention_heads", {"num_attention_heads": 3})
config_case("rope factor 1e300", "'factor' must be a number from 1 to", {"rope_scaling": {"type": "linear", "factor": 1e300}})
config_case("negative rope_theta", "'rope_theta' must be a number from", {"rope_theta": -1})
config_case("max_position_embeddings 2^63-1", "'max_position_embeddings' must be an integer", {"max_position_embeddings": 2**63 - 1})
config_case("vocab_size 2^40", "'vocab_size' must be an integer from 1", {"vocab_size": 2**40})
config_case("unsupported architecture", "unsupported architecture 'MambaForCausalLM'", {"architectures": ["MambaForCausalLM"]})
config_case("layers 10^9", "'num_hidden_layers' must be an integer from 1", {"num_hidden_layers": 10**9})
config_case("rms_norm_eps NaN-like", "'rms_norm_eps' must be a number", {"rms_norm_eps": -5})
config_case("unsupported dtype", "dtype 'int4' is not supported", {"torch_dtype": "int4"})


def generation_case(name, expect, text):
    @case(name, expect, "generation_config.json")
    def _(w):
        write(os.path.join(w, "m", "generation_config.json"), text)
        return gen(os.path.join(w, "m"))


generation_case("generation top_k 1e300", "'top_k' must be a number from 0", '{"do_sample": true, "top_k": 1e300}')
generation_case("generation temperature -1", "'temperature' must be a number from 0", '{"do_sample": true, "temperature": -1}')
generation_case("generation not JSON", "not valid JSON", '{"do_sample": tru}')
generation_case("generation nested", "nested deeper than", "[" * 5000 + "]" * 5000)
generation_case("generation eos a string", "'eos_token_id' must be an integer", '{"eos_token_id": "x"}')


@case("generation_config.json is a FIFO", "is a pipe", "generation_config.json")
def _(w):
    os.mkfifo(os.path.join(w, "m", "generation_config.json"))
    return gen(os.path.join(w, "m"))


# Weights.
def weights_case(name, expect, make, names="model.safetensors"):
    @case(name, expect, names)
    def _(w):
        make(os.path.join(w, "m"))
        return gen(os.path.join(w, "m"))


def header_only(text, data=b""):
    text = text.encode()
    return struct.pack("<Q", len(text)) + text + data


def with_tensors(fn):
    def make(m):
        t = llama_tensors()
        fn(t)
        write(os.path.join(m, "model.safetensors"), safetensors(t))
    return make


weights_case("weights missing", "no weights found", lambda m: os.remove(os.path.join(m, "model.safetensors")), "m")
weights_case("weights a FIFO", "is a pipe", lambda m: replace_with_fifo(os.path.join(m, "model.safetensors")))
weights_case("weights 4 bytes", "too short for a safetensors header", lambda m: write(os.path.join(m, "model.safetensors"), b"\1\0\0\0"))
weights_case("header claims 2^60 bytes", "header claims", lambda m: write(os.path.join(m, "model.safetensors"), struct.pack("<Q", 2**60) + b"{}"))
weights_case("header not JSON", "not valid JSON", lambda m: write(os.path.join(m, "model.safetensors"), header_only('{"a": [}')))
weights_case("header nested deep", "nested deeper than", lambda m: write(os.path.join(m, "model.safetensors"), header_only('{"a":' + "[" * 20000 + "]" * 20000 + "}")))
weights_case("duplicate tensor names", "names 'model.norm.weight' twice", lambda m: write(
    os.path.join(m, "model.safetensors"),
    header_only('{"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                '"model.norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', bytes(16))))
weights_case("tensor with the wrong shape", "has shape [17] but config.json implies [16]",
             with_tensors(lambda t: t.__setitem__(1, (t[1][0], [17]))), "m")
weights_case("tensor missing", "have no tensor 'model.norm.weight'", with_tensors(lambda t: t.remove(("model.norm.weight", [16]))), "m")
weights_case("tensor of integers", "is I32", lambda m: write(
    os.path.join(m, "model.safetensors"),
    safetensors(llama_tensors()).replace(b'"model.norm.weight": {"dtype": "F32"', b'"model.norm.weight": {"dtype": "I32"')), "m")
weights_case("data past the end", "truncated download", lambda m: write(
    os.path.join(m, "model.safetensors"), header_only('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', bytes(8))))
weights_case("bytes no tensor covers", "belong to no tensor", lambda m: write(
    os.path.join(m, "model.safetensors"), header_only('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(64))))
weights_case("shape overflows 64 bits", "too large to address", lambda m: write(
    os.path.join(m, "model.safetensors"),
    header_only('{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', bytes(8))))
weights_case("unknown dtype", "unknown dtype 'Q4'", lambda m: write(
    os.path.join(m, "model.safetensors"), header_only('{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}', bytes(8))))


def swap_case(name, expect, remove, put, data):
    """The tiny Llama with `remove` deleted and `put` written (made a FIFO when data is None)."""
    @case(name, expect, put)
    def _(w):
        m = os.path.join(w, "m")
        os.remove(os.path.join(m, remove))
        if data is None:
            os.mkfifo(os.path.join(m, put))
        else:
            write(os.path.join(m, put), data)
        return gen(m)


def index_case(name, expect, text):
    swap_case(name, expect, "model.safetensors", "model.safetensors.index.json", text)


index_case("index nested deep", "nested deeper than", '{"weight_map":' + "[" * 10000 + "]" * 10000 + "}")
index_case("index without weight_map", "has no weight_map object", '{"metadata": {}}')
index_case("index names a missing shard", "model-00001-of-00002.safetensors", '{"weight_map": {"a": "model-00001-of-00002.safetensors"}}')
index_case("index escapes the folder", "invalid shard '../model.safetensors'", '{"weight_map": {"a": "../model.safetensors"}}')
index_case("index is a FIFO", "is a pipe", None)


@case("only a pickle checkpoint", "pickle", "pytorch_model.bin")
def _(w):
    m = os.path.join(w, "m")
    os.remove(os.path.join(m, "model.safetensors"))
    write(os.path.join(m, "pytorch_model.bin"), b"PK\3\4")
    return gen(m)


# Tokenizers.
def tokenizer_case(name, expect, make, names="tokenizer.json"):
    @case(name, expect, names)
    def _(w):
        make(os.path.join(w, "m"))
        return gen(os.path.join(w, "m"))


def set_tokenizer_part(part, text):
    def make(m):
        spec = json.dumps(tokenizer_json())
        spec = spec.replace('"%s": ' % part, '"%s": %s, "_old": ' % (part, text), 1)
        write(os.path.join(m, "tokenizer.json"), spec)
    return make


def edit_tokenizer(fn):
    return lambda m: edit_json(os.path.join(m, "tokenizer.json"), fn)


tokenizer_case("no tokenizer", "no tokenizer here", lambda m: os.remove(os.path.join(m, "tokenizer.json")), "m")
tokenizer_case("tokenizer.json a FIFO", "is a pipe", lambda m: replace_with_fifo(os.path.join(m, "tokenizer.json")))
tokenizer_case("normalizer Sequence 5000 deep", "nested deeper than", set_tokenizer_part("normalizer", nested("normalizer", 5000)))
tokenizer_case("pre_tokenizer Sequence 10000 deep", "nested deeper than", set_tokenizer_part("pre_tokenizer", nested("pre_tokenizer", 10000)))
tokenizer_case("decoder Sequence 2000 deep", "nested deeper than", set_tokenizer_part("decoder", nested("decoder", 2000)))
tokenizer_case("tokenizer.json not JSON", "not valid JSON", lambda m: write(os.path.join(m, "tokenizer.json"), '{"model": '))
tokenizer_case("unigram model", "model type 'Unigram' is not supported", edit_tokenizer(lambda t: t["model"].update(type="Unigram")))
tokenizer_case("vocab id 2^40", "is not a valid id", edit_tokenizer(lambda t: t["model"]["vocab"].update({"zz": 2**40})))
tokenizer_case("vocab id 2^24-1", "is not a valid id", edit_tokenizer(lambda t: t["model"]["vocab"].update({"zz": 2**24 - 1})))
tokenizer_case("pattern that does not compile", "does not compile", edit_tokenizer(lambda t: t.update(
    pre_tokenizer={"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": False})))
tokenizer_case("added_tokens_decoder id 10^11", "must be an integer from 0", lambda m: write_json(
    os.path.join(m, "tokenizer_config.json"), {"added_tokens_decoder": {"99999999999": {"content": "<x>", "special": True}}}),
    "tokenizer_config.json")
tokenizer_case("added_tokens.json id 2^40", "must be an integer from 0", lambda m: write_json(
    os.path.join(m, "added_tokens.json"), {"<x>": 2**40}), "added_tokens.json")
tokenizer_case("tokenizer_config.json nested deep", "nested deeper than", lambda m: write(
    os.path.join(m, "tokenizer_config.json"), "[" * 3000 + "]" * 3000), "tokenizer_config.json")
tokenizer_case("special_tokens_map.json a FIFO", "is a pipe", lambda m: os.mkfifo(
    os.path.join(m, "special_tokens_map.json")), "special_tokens_map.json")


def sentencepiece_case(name, expect, data):
    swap_case(name, expect, "tokenizer.json", "tokenizer.model", data)


# A trie whose root points far outside it (sentencepiece would follow it).
sentencepiece_case("charsmap root outside", "character map is damaged", sentencepiece_model(struct.pack("<I", 8) + struct.pack("<II", 0x7FFFFC00, 0) + b"a\0"))
# A trie size larger than the map.
sentencepiece_case("charsmap size too large", "character map is damaged", sentencepiece_model(struct.pack("<I", 4096) + bytes(16)))
# A 256-unit trie whose node for 'a' has a leaf whose value points past the strings.
_units = [0] * 512
_units[0] = 256 << 10        # root: children at 256 ^ c
_units[256 ^ ord("a")] = ord("a") | (1 << 8) | (0 << 10)  # label 'a', has a leaf, offset 0: the leaf is at 256^'a'... itself
sentencepiece_case("charsmap value outside", "character map is damaged", sentencepiece_model(
    struct.pack("<I", 2048) + struct.pack("<512I", *_units) + b"x\0"))
sentencepiece_case("tokenizer.model garbage", "not a sentencepiece model", b"\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01garbage")
sentencepiece_case("tokenizer.model length overflows", "not a sentencepiece model", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\x7f")
sentencepiece_case("tokenizer.model a FIFO", "is a pipe", None)


# Option values.
def option_case(name, expect, option, *args):
    @case(name, expect, option)
    def _(w):
        return ["generate", "--model", os.path.join(w, "m"), "--prompt", "hi"] + list(args)


option_case("max-new-tokens 10^12", "--max-new-tokens must be from 1 to", "--max-new-tokens", "--max-new-tokens", "1000000000000")
option_case("max-new-tokens 2^32+1", "--max-new-tokens must be from 1 to", "--max-new-tokens", "--max-new-tokens", "4294967297")
option_case("max-new-tokens 0", "--max-new-tokens must be from 1 to", "--max-new-tokens", "--max-new-tokens", "0")
option_case("session-len -5", "--session-len must be from 0 to", "--session-len", "--session-len", "-5")
option_case("top-k text", "--top-k needs a whole number", "--top-k", "--top-k", "abc")
option_case("temperature nan", "--temperature needs a number", "--temperature", "--temperature", "nan")
option_case("top-p 2", "top-p", "top-p", "--top-p", "2")
option_case("seed -1", "--seed must be from 0 to", "--seed", "--seed", "-1")
option_case("unknown device", "unknown device 'tpu'", "tpu", "--device", "tpu")
option_case("cache share 1e300", "cache_max_entry_count must be", "cache", "--cache-max-entry-count", "1e300", "--device", "cpu")
option_case("cache share -1", "cache_max_entry_count must be positive", "cache", "--cache-max-entry-count", "-1", "--device", "cpu")


@case("chat with a broken model", "not valid JSON", "config.json")
def _(w):
    write(os.path.join(w, "m", "config.json"), "{")
    return ["chat", "--model", os.path.join(w, "m"), "--prompt", "hi", "--device", "cpu"]


@case("tokenize with a tokenizer FIFO", "is a pipe", "tokenizer.json")
def _(w):
    replace_with_fifo(os.path.join(w, "m", "tokenizer.json"))
    return ["tokenize", "--model", os.path.join(w, "m"), "--text", "hi"]


@case("tokenize --file a FIFO", "is a pipe", "text.txt")
def _(w):
    os.mkfifo(os.path.join(w, "text.txt"))
    return ["tokenize", "--model", os.path.join(w, "m"), "--file", os.path.join(w, "text.txt")]


# Images, through a tiny LLaVA (CLIP at 336 pixels, as the real one).
def image_case(name, expect, data, names="photo-under-test.png", config=None):
    @case(name, expect, names)
    def _(w):
        v = os.path.join(w, "v")
        if config:
            config(v)
        path = os.path.join(w, "photo-under-test.png")
        if callable(data):
            data(path)
        else:
            write(path, data)
        return image_args(v, path)


def image_args(model, image):
    return ["generate", "--model", model, "--prompt", "<image>hi", "--image", image, "--max-new-tokens", "2", "--device", "cpu"]


image_case("image missing", "no such file", lambda p: None)
image_case("image a FIFO", "is a pipe", os.mkfifo)
image_case("image a folder", "is a folder", os.mkdir)
image_case("image empty", "", b"")
image_case("image 600 MB (sparse)", "larger than an image file can be", lambda p: open(p, "wb").truncate(600 << 20))
image_case("1x20000 PNG", "more than Lumen allows", png(1, 20000, color_type=0))
image_case("PNG header 100000x100000", "MP", png(100000, 100000, rows=b"\0" * 64))
image_case("PNG truncated", "", png(64, 64)[:60])
image_case("PNG bad checksum", "fails its checksum", png(8, 8).replace(b"IDAT", b"IDAX"))
image_case("PNG without image data", "no image data", png(8, 8)[:33] + png(8, 8)[-12:])
image_case("JPEG truncated", "", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01")
image_case("JPEG 65500x65500 header", "", b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xdc\xff\xdc\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01\xff\xd9")
image_case("GIF with broken LZW", "", gif(4, 4, b"\xff\xff\xff\xff\xff"))
image_case("GIF canvas 65535x65535", "", gif(65535, 65535, b"\x44\x01"))
image_case("GIF without image", "", b"GIF89a\x04\x00\x04\x00\x00\x00\x00;")
image_case("WebP garbage", "", b"RIFF\x20\x00\x00\x00WEBPVP8 \x14\x00\x00\x00" + bytes(24))
image_case("BMP 2^31 rows", "", b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 4, -2**31, 1, 24, 0, 0, 0, 0, 0, 0))
image_case("not an image", "", b"hello, this is text and not a picture")
image_case("EXIF loop", "", b"\xff\xd8\xff\xe1\x00\x1eExif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x08\x00\xff\xd9")


def preprocessor_case(name, expect, changes, names="preprocessor_config.json"):
    image_case(name, expect, png(16, 16), names, lambda v: edit_json(
        os.path.join(v, "preprocessor_config.json"), lambda p: p.update(changes)))


def vision_config_case(name, expect, changes, names="config.json"):
    image_case(name, expect, png(16, 16), names, lambda v: edit_json(
        os.path.join(v, "config.json"), lambda c: c["vision_config"].update(changes)))


preprocessor_case("image_std 0", "'image_std' must be three positive numbers", {"image_std": [0, 0, 0]})
preprocessor_case("image_mean strings", "'image_mean' must be three numbers", {"image_mean": ["a", "b", "c"]})
preprocessor_case("shortest edge 10^9", "must be an integer from 1 to", {"size": {"shortest_edge": 10**9}})
preprocessor_case("crop size 0", "must be an integer from 1 to", {"crop_size": {"height": 0, "width": 0}})
preprocessor_case("preprocessor nested", "nested deeper than", {"x": json.loads("[" * 100 + "]" * 100)})
vision_config_case("vision hidden 10^12", "'hidden_size' must be an integer from 1 to", {"hidden_size": 10**12})
vision_config_case("vision patch 0", "'patch_size' must be an integer from 1 to", {"patch_size": 0})
vision_config_case("vision image size 10^9", "'image_size' must be an integer from 1 to", {"image_size": 10**9})
vision_config_case("vision 4 channels", "'num_channels' must be an integer from 3 to 3", {"num_channels": 4})


# --------------------------------------------------------------------------------------------


def run_case(cli, args, env):
    start = time.monotonic()
    proc = subprocess.Popen([cli] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > TIMEOUT_S:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    out, err = proc.stdout.read().decode(errors="replace"), proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, err, usage.ru_maxrss * 1024, time.monotonic() - start, timed_out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--work")
    ap.add_argument("--only")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for name, expect, names, _ in CASES:
            print("%-40s %s" % (name, expect))
        return 0
    work = a.work or tempfile.mkdtemp(prefix="lumen-broken-")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    base_m, base_v = make_llama(os.path.join(work, "base-m")), make_llava(os.path.join(work, "base-v"))
    env = dict(os.environ, HOME=work, HF_HUB_CACHE=os.path.join(work, "no-cache"), QT_QPA_PLATFORM="offscreen")

    # The valid folders must work, or every case below would pass for the wrong reason.
    write(os.path.join(work, "ok.png"), png(40, 30))
    for label, args in [("tiny Llama", gen(base_m)), ("tiny LLaVA", image_args(base_v, os.path.join(work, "ok.png")))]:
        code, out, err, rss, secs, timed_out = run_case(a.cli, args, env)
        if code != 0:
            print("the valid %s does not run (exit %d): %s" % (label, code, err.strip()))
            return 1

    failures = ran = 0
    for i, (name, expect, names, make) in enumerate(CASES):
        if a.only and a.only not in name:
            continue
        ran += 1
        w = os.path.join(work, "case%03d" % i)
        shutil.copytree(base_m, os.path.join(w, "m"))
        shutil.copytree(base_v, os.path.join(w, "v"))
        args = make(w)
        code, out, err, rss, secs, timed_out = run_case(a.cli, args, env)
        message = err.strip().splitlines()[-1] if err.strip() else ""
        problems = []
        if timed_out:
            problems.append("no answer within %.0f s" % TIMEOUT_S)
        elif code < 0:
            problems.append("killed by signal %d" % -code)
        elif code == 0:
            problems.append("exit status 0")
        if rss > MAX_RSS_BYTES:
            problems.append("%.1f GB resident" % (rss / 2**30))
        if expect and expect not in err:
            problems.append("message lacks '%s'" % expect)
        if names not in err:
            problems.append("message does not name '%s'" % names)
        if "std::" in err or "basic_" in err or "json.exception" in err:
            problems.append("library text in the message")
        status = "ok  " if not problems else "FAIL"
        failures += bool(problems)
        print("%s %-36s %5.2fs %6.0f MB  %s" % (status, name, secs, rss / 2**20, message[:150]))
        for p in problems:
            print("       " + p)
    print("%d of %d broken inputs handled as they should be" % (ran - failures, ran))
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
