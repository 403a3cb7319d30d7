#!/usr/bin/env python3
"""Vision goldens from Hugging Face transformers (and PIL), for tests/data/goldens/vision/:

    python3 tests/reference/make_vision_goldens.py OUT_DIR

pixels.json: for each photo case of tests/data/tiny_vlms.json (a photo from ../shared/data/images,
maybe cropped), SHA-256 hashes of what the reference processors give, as 8-bit HWC squares
(before normalisation) and as the float32 NCHW pixel_values: CLIPImageProcessor's PIL backend
(shortest edge 336, center crop), LlavaImageProcessor's PIL backend with do_pad (LLaVA's pad to a
square), InternVL's tiles (GotOcr2ImageProcessor's PIL backend with crop_to_patches, checked equal
to InternVL's own dynamic_preprocess); and how far the default torchvision backends are from them.

vlm.json: for each tiny checkpoint of tiny_vlms.json and each case: the prompt ids the processor
gives, 24 greedy ids, and every 16th row of the image embeddings (the projector's output), in
float32 on the CPU.

The InternVL2 checkpoint (InternVLChatModel with InternLM2) ships remote code that transformers 5
does not include; it runs as InternVLForConditionalGeneration after the renames and the q/k/v
split transformers' own conversion script applies (InternLM2 becomes Llama), with prompt ids from
spm_encode (tiny_vlms.json) because Python's sentencepiece refuses that tokenizer.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from PIL import Image, ImageOps
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_models  # noqa: E402
import tiny_vlms  # noqa: E402
from internvl_grid import internvl_grid  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data")
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
NET_MEAN, NET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def load_photo(case):
    image = Image.open(os.path.join(DATA, "images", case["file"]))
    image = ImageOps.exif_transpose(image).convert("RGB")  # what transformers' load_image does
    if case.get("crop"):
        x, y, w, h = case["crop"]
        image = image.crop((x, y, x + w, y + h))
    return image


def sha(data):
    return hashlib.sha256(data).hexdigest()


def squares_u8(pixel_values, mean, std):
    """8-bit HWC squares behind normalised pixel_values, and whether they reproduce them exactly."""
    pv = pixel_values.float().numpy()
    m = np.array(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.array(std, dtype=np.float32).reshape(1, 3, 1, 1)
    u8 = np.clip(np.rint((pv * s + m) * 255.0), 0, 255).astype(np.uint8)
    again = ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - m) / s
    return u8, bool(np.array_equal(again.astype(np.float32), pv))


def summary(pixel_values, mean, std):
    u8, exact = squares_u8(pixel_values, mean, std)
    return {"tiles": int(pixel_values.shape[0]), "sha256_u8": sha(np.ascontiguousarray(u8.transpose(0, 2, 3, 1)).tobytes()),
            "sha256_f32": sha(pixel_values.float().numpy().astype("<f4").tobytes()), "u8_exact": exact}, u8


def max_diff(fast, slow, mean, std):
    a, _ = squares_u8(fast, mean, std)
    b, _ = squares_u8(slow, mean, std)
    if a.shape != b.shape:
        return None
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def internvl_dynamic_preprocess(image, min_num, max_num, size, thumbnail):
    """InternVL's own tiling (its model cards' dynamic_preprocess): grid, resize, crops, thumbnail."""
    best = internvl_grid(*image.size, min_num, max_num, size)
    resized = image.resize((size * best[0], size * best[1]))
    tiles = [resized.crop(((i % best[0]) * size, (i // best[0]) * size, (i % best[0] + 1) * size, (i // best[0] + 1) * size))
             for i in range(best[0] * best[1])]
    if thumbnail and len(tiles) != 1:
        tiles.append(image.resize((size, size)))
    arr = np.stack([np.asarray(t, dtype=np.uint8) for t in tiles]).transpose(0, 3, 1, 2)
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    m = np.array(NET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.array(NET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy((x - m) / s), best


def _class(name, module):
    """A class exported by transformers, or from its module when not at the top level."""
    import importlib
    if hasattr(transformers, name):
        return getattr(transformers, name)
    return getattr(importlib.import_module("transformers.models." + module), name)


def processors():
    CLIPImageProcessor = _class("CLIPImageProcessor", "clip.image_processing_clip")
    GotOcr2ImageProcessor = _class("GotOcr2ImageProcessor", "got_ocr2.image_processing_got_ocr2")
    CLIPImageProcessorPil = _class("CLIPImageProcessorPil", "clip.image_processing_pil_clip")
    GotOcr2ImageProcessorPil = _class("GotOcr2ImageProcessorPil", "got_ocr2.image_processing_pil_got_ocr2")
    LlavaImageProcessorPil = _class("LlavaImageProcessorPil", "llava.image_processing_pil_llava")
    clip_args = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, resample=3,
                     image_mean=CLIP_MEAN, image_std=CLIP_STD, do_center_crop=True)
    got_args = dict(size={"height": 448, "width": 448}, resample=3, image_mean=NET_MEAN, image_std=NET_STD,
                    crop_to_patches=True, min_patches=1, max_patches=12)
    return {"clip": CLIPImageProcessorPil(**clip_args), "clip_fast": CLIPImageProcessor(**clip_args),
            "llava_pad": LlavaImageProcessorPil(**clip_args, do_pad=True),
            "internvl": GotOcr2ImageProcessorPil(**got_args), "internvl_fast": GotOcr2ImageProcessor(**got_args)}


def pixel_goldens(spec):
    p = processors()
    out = []
    for case in spec["photos"]:
        image = load_photo(case)
        entry = {"file": case["file"], "crop": case.get("crop"), "size": list(image.size),
                 "sha256_rgb": sha(np.asarray(image, dtype=np.uint8).tobytes())}
        clip = p["clip"](image, return_tensors="pt")["pixel_values"]
        entry["clip"], _ = summary(clip, CLIP_MEAN, CLIP_STD)
        entry["clip"]["fast_max_diff"] = max_diff(p["clip_fast"](image, return_tensors="pt")["pixel_values"], clip, CLIP_MEAN, CLIP_STD)
        pad = p["llava_pad"](image, return_tensors="pt")["pixel_values"]
        entry["llava_pad"], _ = summary(pad, CLIP_MEAN, CLIP_STD)
        tiles = p["internvl"](image, return_tensors="pt")["pixel_values"]
        entry["internvl"], _ = summary(tiles, NET_MEAN, NET_STD)
        entry["internvl"]["fast_max_diff"] = max_diff(p["internvl_fast"](image, return_tensors="pt")["pixel_values"], tiles,
                                                      NET_MEAN, NET_STD)
        own, grid = internvl_dynamic_preprocess(image, 1, 12, 448, True)
        entry["internvl"]["grid"] = list(grid)
        entry["internvl"]["equals_dynamic_preprocess"] = bool(torch.equal(own, tiles.float()))
        out.append(entry)
        print(case["file"], case.get("crop"), entry["clip"]["fast_max_diff"], entry["internvl"]["tiles"],
              entry["internvl"]["fast_max_diff"], entry["internvl"]["equals_dynamic_preprocess"], flush=True)
    return out


def write_folder(model, spec, folder, tensors):
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    config = dict(model["config"], torch_dtype=spec["dtype"])
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    for name, content in model.get("files", {}).items():
        with open(os.path.join(folder, name), "w") as f:
            json.dump(content, f)
    src = os.path.join(DATA, "tokenizers", model["tokenizer"])
    for f in os.listdir(src):
        shutil.copy(os.path.join(src, f), folder)


def internvl_chat_as_hf(model, tensors):
    """The InternVLChatModel checkpoint as transformers' InternVLForConditionalGeneration."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, LlamaConfig
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig
    c = model["config"]
    v, t = c["vision_config"], c["llm_config"]
    d = v["hidden_size"]
    sd = {}
    for name, w in tensors.items():
        w = w.float()
        if name.startswith("vision_model."):
            n = name.replace("vision_model.", "model.vision_tower.").replace("encoder.layers.", "encoder.layer.")
            n = (n.replace("embeddings.class_embedding", "embeddings.cls_token")
                 .replace("embeddings.position_embedding", "embeddings.position_embeddings")
                 .replace("embeddings.patch_embedding", "embeddings.patch_embeddings.projection")
                 .replace(".ls1", ".lambda_1").replace(".ls2", ".lambda_2").replace("attn.proj", "attention.projection_layer")
                 .replace("norm1", "layernorm_before").replace("norm2", "layernorm_after"))
            if "attn.qkv" in n:
                for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
                    sd[n.replace("attn.qkv", "attention." + part)] = w[i * d:(i + 1) * d]
                continue
            sd[n] = w
        elif name.startswith("mlp1."):
            sd[name.replace("mlp1.0", "model.multi_modal_projector.layer_norm").replace("mlp1.1", "model.multi_modal_projector.linear_1")
               .replace("mlp1.3", "model.multi_modal_projector.linear_2")] = w
    heads, kv, h = t["num_attention_heads"], t["num_key_value_heads"], t["hidden_size"]
    hd, groups = h // heads, heads // kv
    lm = "language_model.model."
    sd["model.language_model.embed_tokens.weight"] = tensors[lm + "tok_embeddings.weight"].float()
    sd["model.language_model.norm.weight"] = tensors[lm + "norm.weight"].float()
    sd["lm_head.weight"] = tensors["language_model.output.weight"].float()
    for l in range(t["num_hidden_layers"]):
        p, q = f"{lm}layers.{l}.", f"model.language_model.layers.{l}."
        w = tensors[p + "attention.wqkv.weight"].float().view(kv, groups + 2, hd, h)
        sd[q + "self_attn.q_proj.weight"] = w[:, :groups].reshape(heads * hd, h)
        sd[q + "self_attn.k_proj.weight"] = w[:, groups].reshape(kv * hd, h)
        sd[q + "self_attn.v_proj.weight"] = w[:, groups + 1].reshape(kv * hd, h)
        sd[q + "self_attn.o_proj.weight"] = tensors[p + "attention.wo.weight"].float()
        sd[q + "input_layernorm.weight"] = tensors[p + "attention_norm.weight"].float()
        sd[q + "post_attention_layernorm.weight"] = tensors[p + "ffn_norm.weight"].float()
        sd[q + "mlp.gate_proj.weight"] = tensors[p + "feed_forward.w1.weight"].float()
        sd[q + "mlp.up_proj.weight"] = tensors[p + "feed_forward.w3.weight"].float()
        sd[q + "mlp.down_proj.weight"] = tensors[p + "feed_forward.w2.weight"].float()
    vision = InternVLVisionConfig(hidden_size=d, intermediate_size=v["intermediate_size"], num_hidden_layers=v["num_hidden_layers"],
                                  num_attention_heads=v["num_attention_heads"], attention_bias=v["qkv_bias"],
                                  use_qk_norm=v["qk_normalization"], norm_type=v["norm_type"], layer_norm_eps=v["layer_norm_eps"],
                                  image_size=v["image_size"], patch_size=v["patch_size"], hidden_act="gelu", use_mean_pooling=True)
    text = LlamaConfig(vocab_size=t["vocab_size"], hidden_size=h, intermediate_size=t["intermediate_size"],
                       num_hidden_layers=t["num_hidden_layers"], num_attention_heads=heads, num_key_value_heads=kv,
                       max_position_embeddings=t["max_position_embeddings"], rms_norm_eps=t["rms_norm_eps"],
                       rope_theta=float(t["rope_theta"]), attention_bias=False, tie_word_embeddings=False,
                       bos_token_id=1, eos_token_id=2)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=92546, downsample_ratio=c["downsample_ratio"],
                            vision_feature_layer=-1, projector_hidden_act="gelu", tie_word_embeddings=False)
    net = InternVLForConditionalGeneration(config)
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m or "inv_freq" in m for m in missing), (missing, unexpected)
    return net.float().eval()


def projector_of(net):
    inner = getattr(net, "model", net)
    return inner.multi_modal_projector


def vlm_goldens(spec):
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    p = processors()
    results = {}
    for model in spec["models"]:
        folder = tempfile.mkdtemp(prefix=model["name"])
        tensors = tiny_vlms.build_tensors(spec["seed"], model, torch.bfloat16)
        write_folder(model, spec, folder, tensors)
        name = model.get("layout", model["name"])
        if name == "internvl_chat":
            net = internvl_chat_as_hf(model, tensors)
        else:
            net = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
        captured = []
        projector_of(net).register_forward_hook(lambda _m, _i, out: captured.append(out.detach().float()))
        entry = {"checksums": {n: str(tiny_models.checksum(t)) for n, t in tensors.items()}, "cases": []}
        for i, case in enumerate(model["cases"]):
            images = [load_photo({"file": f}) for f in case["images"]]
            how = "processor"
            if name == "llava":
                pv = torch.cat([p["clip"](im, return_tensors="pt")["pixel_values"] for im in images])
                tok = AutoTokenizer.from_pretrained(folder)
                try:
                    proc = transformers.LlavaProcessor(image_processor=p["clip"], tokenizer=tok, patch_size=14,
                                                       vision_feature_select_strategy="default", num_additional_image_tokens=1)
                    got_inputs = proc(text=case["prompt"], images=images, return_tensors="pt")
                    ids = got_inputs["input_ids"][0].tolist()
                    assert torch.equal(got_inputs["pixel_values"], pv)
                except Exception as e:  # noqa: BLE001 - record and fall back to the documented expansion
                    how = "manual: " + repr(e)[:200]
                    ids = tok(case["prompt"].replace("<image>", "<image>" * 576))["input_ids"]
            elif name == "internvl_hf":
                got = p["internvl"]
                got.max_patches = model["files"]["preprocessor_config.json"]["max_patches"]
                parts = [got(im, return_tensors="pt")["pixel_values"] for im in images]
                pv = torch.cat(parts)
                tok = AutoTokenizer.from_pretrained(folder)
                try:
                    proc = transformers.InternVLProcessor(image_processor=got, tokenizer=tok, image_seq_length=256)
                    got_inputs = proc(text=case["prompt"].replace("<image>", "<IMG_CONTEXT>"), images=images, return_tensors="pt")
                    ids = got_inputs["input_ids"][0].tolist()
                    assert torch.equal(got_inputs["pixel_values"], pv)
                except Exception as e:  # noqa: BLE001
                    how = "manual: " + repr(e)[:200]
                    text = case["prompt"]
                    for part in parts:
                        text = text.replace("<image>", "<img>" + "<IMG_CONTEXT>" * (256 * part.shape[0]) + "</img>", 1)
                    ids = tok(text)["input_ids"]
            else:
                c = model["config"]
                parts = [internvl_dynamic_preprocess(im, c["min_dynamic_patch"], c["max_dynamic_patch"], 448, c["use_thumbnail"])[0]
                         for im in images]
                pv = torch.cat(parts)
                ids = case["prompt_ids"]
                how = "spm_encode"
            x = torch.tensor([ids])
            captured.clear()
            with torch.no_grad():
                out = net.generate(input_ids=x, pixel_values=pv, attention_mask=torch.ones_like(x), max_new_tokens=spec["new_tokens"],
                                   do_sample=False, pad_token_id=0)
            emb = captured[0].reshape(-1, captured[0].shape[-1])
            entry["cases"].append({"prompt_ids_from": how, "prompt_ids": ids, "generated_ids": out[0, len(ids):].tolist(), "tiles": int(pv.shape[0]),
                                   "embedding_rows": int(emb.shape[0]),
                                   "embeddings_every_16th_row": emb[::16].numpy().astype(np.float64).round(7).tolist()})
            print(model["name"], i, len(ids), int(pv.shape[0]), out[0, len(ids):].tolist()[:8], flush=True)
        results[model["name"]] = entry
        shutil.rmtree(folder)
    return results


def main(out_dir, parts=("pixels", "vlm")):
    import traceback
    os.makedirs(out_dir, exist_ok=True)
    spec = tiny_vlms.load_spec(ROOT)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "pillow": Image.__version__}
    try:
        import torchvision
        meta["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    # Each part on its own: one failing does not lose the other.
    for part, make in (("pixels", lambda: {"cases": pixel_goldens(spec)}), ("vlm", lambda: {"models": vlm_goldens(spec)})):
        if part not in parts:
            continue
        try:
            with open(os.path.join(out_dir, part + ".json"), "w") as f:
                json.dump(dict(meta, **make()), f, indent=None if part == "vlm" else 1)
        except Exception:  # noqa: BLE001
            traceback.print_exc()


if __name__ == "__main__":
    main(sys.argv[1], tuple(sys.argv[2:]) or ("pixels", "vlm"))
