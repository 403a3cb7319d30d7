#!/usr/bin/env python3
"""Goldens for 4-bit checkpoints: the tiny models of tests/data/tiny_models.json (float16) with
their linear weights quantized (round to nearest) and packed as each published format lays them
out, and transformers' logits and greedy ids on the same weights dequantized.

    python3 tests/reference/make_quantized_goldens.py OUT_DIR
writes OUT_DIR/quantized_goldens.json, and per case OUT_DIR/<case>.safetensors (only the packed
linear tensors: the C++ test builds every other tensor itself, see tests/support/tiny_models.h)
and OUT_DIR/<case>.logits (float32, last position of the second prompt); copy them to
tests/data/goldens/quantized/.

The packing follows each format's published code, written again here from their descriptions:
- AutoAWQ's WQLinear_GEMM (also what LMDeploy's `lite auto_awq` writes): qweight [in, out/8] and
  qzeros [groups, out/8] int32 with the eight outputs of a word in the order 0,2,4,6,1,3,5,7;
  scales [groups, out] fp16; w = (q - z) * s.
- GPTQ (AutoGPTQ / GPTQModel QuantLinear.pack): qweight [in/8, out] packed along the input, qzeros
  [groups, out/8] packed along the output, storing z - 1 in the v1 format and z in gptq_v2;
  scales [groups, out]; g_idx [in] the group of each input column (act-order: permuted).
- compressed-tensors pack-quantized: weight_packed [out, in/8] holding q + 8 for q in [-8, 7],
  input column 8w + i in nibble i; weight_scale [out, groups]; weight_zero_point [out/8, groups]
  (asymmetric only) packed along the output; weight_shape.
- FP8 E4M3 (torch.float8_e4m3fn, values clamped to +-448 before the cast as llm-compressor and
  transformers do): compressed-tensors float-quantized keeps the codes in `weight` with
  weight_scale per tensor ([1]) or per output channel ([out, 1]); transformers' fp8
  (FineGrainedFP8) keeps them in `weight` with weight_scale_inv [ceil(out/br), ceil(in/bc)] float32,
  one per block of br rows x bc inputs, the edge blocks short; w = code * scale in both.
Each case is dequantized back from the packed tensors (not from the values before packing), so a
packing mistake here would show as a mismatch against transformers' own run of the originals.
"""
import json
import shutil
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tiny_goldens  # noqa: E402
import tiny_models  # noqa: E402

ROOT = make_tiny_goldens.ROOT
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]

# name, model, format, group size (0: per channel), symmetric, act-order
CASES = [
    ("llama_awq_g32", "llama", "awq", 32, False, False),
    ("llama_gptq_g32_actorder", "llama", "gptq", 32, False, True),
    ("llama_gptq_v2_sym_g32", "llama", "gptq_v2", 32, True, False),
    ("llama_ct_sym_g32", "llama", "compressed-tensors", 32, True, False),
    ("llama_ct_asym_channel", "llama", "compressed-tensors", 0, False, False),
    ("internlm2_awq_g64", "internlm2", "awq", 64, False, False),
    ("qwen2_awq_g32", "qwen2", "awq", 32, False, False),
    ("qwen2_gptq_g64_sym_actorder", "qwen2", "gptq", 64, True, True),
    # FP8: group 0 per output channel, -1 per tensor, (rows, inputs) blocks.
    ("llama_fp8_ct_channel", "llama", "ct-fp8", 0, True, False),
    ("qwen2_fp8_ct_tensor", "qwen2", "ct-fp8", -1, True, False),
    ("llama_fp8_blocks_24x48", "llama", "fp8", (24, 48), True, False),
    ("internlm2_fp8_blocks_32x64", "internlm2", "fp8", (32, 64), True, False),
]

FP8_MAX = 448.0


def fp8_codes(w, scale):
    """w / scale as E4M3 codes (clamped to the format's range, then cast: round to nearest even)."""
    return (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def pack_fp8(fmt, module, w, group):
    w = w.float()
    out_f, in_f = w.shape
    t = {}
    if fmt == "ct-fp8":
        if group == -1:
            s = (w.abs().amax() / FP8_MAX).reshape(1).to(torch.bfloat16)
            full = s.float().expand(out_f, in_f)
        else:
            s = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).to(torch.bfloat16)
            full = s.float().expand(out_f, in_f)
        t[module + ".weight"] = fp8_codes(w, full)
        t[module + ".weight_scale"] = s
        # A static activation scale, as llm-compressor writes for static schemes: Lumen computes
        # each token's own scale instead and must not trip over it.
        t[module + ".input_scale"] = torch.tensor([0.05], dtype=torch.bfloat16)
        full = t[module + ".weight_scale"].float().expand(out_f, in_f)
    else:
        br, bc = group
        rb, cb = -(-out_f // br), -(-in_f // bc)
        s = torch.empty(rb, cb)
        for i in range(rb):
            for j in range(cb):
                s[i, j] = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc].abs().amax() / FP8_MAX
        full = s.repeat_interleave(br, 0)[:out_f].repeat_interleave(bc, 1)[:, :in_f]
        t[module + ".weight"] = fp8_codes(w, full)
        t[module + ".weight_scale_inv"] = s
    dequantized = t[module + ".weight"].float() * full
    return t, dequantized


def linear_modules(config):
    """Module names of the linear weights the formats quantize (not embeddings or the output)."""
    arch = config["architectures"][0]
    out = []
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        if arch == "InternLM2ForCausalLM":
            out += [p + m for m in ("attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w3", "feed_forward.w2")]
        else:
            out += [p + m for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    return out


def quantize(w, group, symmetric, g_idx):
    """Round to nearest: codes q [out, in] in 0..15, zeros z [out, groups] in 0..15, scales s
    [out, groups] fp16, such that w ~ (q - z[g_idx]) * s[g_idx]."""
    w = w.float()
    out_f, in_f = w.shape
    groups = int(g_idx.max()) + 1
    s = torch.empty(out_f, groups)
    z = torch.empty(out_f, groups, dtype=torch.int32)
    for g in range(groups):
        cols = w[:, g_idx == g]
        if symmetric:
            s[:, g] = (cols.abs().amax(dim=1) / 7.5).clamp(min=1e-5)
            z[:, g] = 8
        else:
            lo, hi = cols.amin(dim=1), cols.amax(dim=1)
            s[:, g] = ((hi - lo) / 15).clamp(min=1e-5)
            z[:, g] = torch.clamp(torch.round(-lo / s[:, g].half().float()), 0, 15).int()
    s = s.half()
    q = torch.clamp(torch.round(w / s.float()[:, g_idx]) + z[:, g_idx], 0, 15).int()
    return q, z, s


def pack_along_rows(values):
    """[n, m] codes -> [n/8, m] int32, row 8i + j in nibble j (GPTQ's qweight)."""
    v = values.numpy().astype(np.uint32)
    out = np.zeros((v.shape[0] // 8, v.shape[1]), dtype=np.uint32)
    for j in range(8):
        out |= v[j::8, :] << np.uint32(4 * j)
    return torch.from_numpy(out.view(np.int32))


def pack_along_cols(values, order=range(8)):
    """[n, m] codes -> [n, m/8] int32, nibble i holding column 8c + order[i]."""
    v = values.numpy().astype(np.uint32)
    out = np.zeros((v.shape[0], v.shape[1] // 8), dtype=np.uint32)
    for i, col in enumerate(order):
        out |= v[:, col::8] << np.uint32(4 * i)
    return torch.from_numpy(out.view(np.int32))


def unpack_along_cols(packed, order=range(8)):
    p = packed.numpy().view(np.uint32)
    out = np.zeros((p.shape[0], p.shape[1] * 8), dtype=np.int64)
    for i, col in enumerate(order):
        out[:, col::8] = (p >> np.uint32(4 * i)) & 15
    return torch.from_numpy(out)


def unpack_along_rows(packed):
    p = packed.numpy().view(np.uint32)
    out = np.zeros((p.shape[0] * 8, p.shape[1]), dtype=np.int64)
    for j in range(8):
        out[j::8, :] = (p >> np.uint32(4 * j)) & 15
    return torch.from_numpy(out)


def pack(fmt, module, w, group, symmetric, act_order, rng):
    """The packed tensors of one module, and the weight dequantized back from them (fp32)."""
    if fmt in ("ct-fp8", "fp8"):
        return pack_fp8(fmt, module, w, group)
    out_f, in_f = w.shape
    size = group or in_f
    if act_order:
        # GPTQ quantizes columns in order of decreasing Hessian diagonal; here a seeded order.
        perm = torch.from_numpy(rng.permutation(in_f))
        g_idx = torch.empty(in_f, dtype=torch.int64)
        g_idx[perm] = torch.arange(in_f) // size
    else:
        g_idx = torch.arange(in_f) // size
    q, z, s = quantize(w, g_idx=g_idx, group=size, symmetric=symmetric)
    t = {}
    if fmt == "awq":
        t[module + ".qweight"] = pack_along_cols(q.t().contiguous(), AWQ_ORDER)
        t[module + ".qzeros"] = pack_along_cols(z.t().contiguous(), AWQ_ORDER)
        t[module + ".scales"] = s.t().contiguous()
        qq = unpack_along_cols(t[module + ".qweight"], AWQ_ORDER).t()
        zz = unpack_along_cols(t[module + ".qzeros"], AWQ_ORDER).t()
        ss = t[module + ".scales"].float().t()
        gi = torch.arange(in_f) // size
    elif fmt in ("gptq", "gptq_v2"):
        stored_zeros = z - 1 if fmt == "gptq" else z
        assert stored_zeros.min() >= 0, "v1 cannot store a zero point of 0"
        t[module + ".qweight"] = pack_along_rows(q.t().contiguous())
        t[module + ".qzeros"] = pack_along_cols(stored_zeros.t().contiguous())
        t[module + ".scales"] = s.t().contiguous()
        t[module + ".g_idx"] = g_idx.int()
        qq = unpack_along_rows(t[module + ".qweight"]).t()
        zz = unpack_along_cols(t[module + ".qzeros"]).t() + (1 if fmt == "gptq" else 0)
        ss = t[module + ".scales"].float().t()
        gi = t[module + ".g_idx"].long()
    else:  # compressed-tensors: signed values, stored + 8
        t[module + ".weight_packed"] = pack_along_cols(q)
        t[module + ".weight_scale"] = s
        t[module + ".weight_shape"] = torch.tensor([out_f, in_f], dtype=torch.int32)
        if not symmetric:
            t[module + ".weight_zero_point"] = pack_along_cols(z.t().contiguous()).t().contiguous()
        qq = unpack_along_cols(t[module + ".weight_packed"]) - 8
        zz = (unpack_along_cols(t[module + ".weight_zero_point"].t().contiguous()).t() - 8) if not symmetric else torch.zeros_like(z)
        ss = t[module + ".weight_scale"].float()
        gi = torch.arange(in_f) // size
    dequantized = (qq.float() - zz.float()[:, gi]) * ss[:, gi]
    return t, dequantized


def quantization_config(fmt, group, symmetric, act_order):
    if fmt == "fp8":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": list(group)}
    if fmt == "ct-fp8":
        weights = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor" if group == -1 else "channel",
                   "dynamic": False, "observer": "minmax"}
        inputs = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor" if group == -1 else "token",
                  "dynamic": group != -1}
        return {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
                "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": inputs,
                                              "output_activations": None}},
                "ignore": ["lm_head"]}
    if fmt == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm", "zero_point": not symmetric,
                "modules_to_not_convert": None}
    if fmt in ("gptq", "gptq_v2"):
        return {"quant_method": "gptq", "bits": 4, "group_size": group or -1, "desc_act": act_order, "sym": symmetric,
                "checkpoint_format": fmt}
    weights = {"num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group" if group else "channel",
               "group_size": group or None, "dynamic": False, "observer": "minmax"}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                          "output_activations": None}},
            "ignore": ["lm_head"]}


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    spec = tiny_models.load_spec(ROOT)
    models = {m["name"]: m for m in spec["models"]}
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "dtype": "float16", "cases": []}
    for name, model_name, fmt, group, symmetric, act_order in CASES:
        m = models[model_name]
        config = dict(m["config"], torch_dtype="float16")
        tensors = tiny_models.build_tensors(spec["seed"], config, torch.float16)
        rng = np.random.default_rng(len(result["cases"]) + 1)
        packed, dense = {}, dict(tensors)
        for module in linear_modules(config):
            t, dequantized = pack(fmt, module, tensors[module + ".weight"], group, symmetric, act_order, rng)
            packed.update(t)
            dense[module + ".weight"] = dequantized
        save_file(packed, os.path.join(out_dir, name + ".safetensors"), metadata={"format": "pt"})

        # transformers on the dequantized weights, in float32, exactly as make_tiny_goldens runs the originals.
        if model_name == "internlm2":
            model = make_tiny_goldens.internlm2_as_llama({k: v.float() for k, v in dense.items()}, config)
            prompt_ids = dict(zip(spec["prompts"], m["prompt_ids"]))
            encode = lambda text: prompt_ids[text]  # noqa: E731
        else:
            folder = os.path.join(out_dir, "_tmp_" + name)
            os.makedirs(folder, exist_ok=True)
            save_file({k: v.float().contiguous() for k, v in dense.items()}, os.path.join(folder, "model.safetensors"),
                      metadata={"format": "pt"})
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(dict(config, torch_dtype="float32"), f)
            src = os.path.join(make_tiny_goldens.TOKENIZERS, m["tokenizer"])
            for f in os.listdir(src):
                shutil.copy(os.path.join(src, f), folder)
            tok = transformers.AutoTokenizer.from_pretrained(folder)
            encode = lambda text: tok(text)["input_ids"]  # noqa: E731
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        case = {"name": name, "model": model_name, "format": fmt, "group_size": group if isinstance(group, int) else list(group),
                "symmetric": symmetric,
                "act_order": act_order, "quantization_config": quantization_config(fmt, group, symmetric, act_order),
                "modules": linear_modules(config),
                "runs": make_tiny_goldens.greedy_runs(model, encode, spec, os.path.join(out_dir, name + ".logits"))}
        result["cases"].append(case)
        print(name, [len(r["generated_ids"]) for r in case["runs"]], flush=True)
    with open(os.path.join(out_dir, "quantized_goldens.json"), "w") as f:
        json.dump(result, f, indent=1)
    for entry in os.listdir(out_dir):
        if entry.startswith("_tmp_"):
            shutil.rmtree(os.path.join(out_dir, entry))


if __name__ == "__main__":
    main(sys.argv[1])
