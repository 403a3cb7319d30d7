#!/usr/bin/env python3
"""`lumen-cli quantize`'s output read back by the packing code the goldens use
(make_quantized_goldens.py, written from AutoAWQ's WQLinear_GEMM): every qweight / qzeros / scales
triple unpacked and dequantized, w = (q - z) * s, into a plain 16-bit folder transformers loads
without any quantization support.

    python3 tests/reference/unpack_quantize_output.py QUANTIZED_DIR OUT_DIR

Then `perplexity_transformers.py OUT_DIR TEXT` scores the weights as this script reads them and
`lumen-cli perplexity --model QUANTIZED_DIR --file TEXT --dtype float32` as Lumen reads them: equal
perplexities (to float rounding) say the two read the same weights. The script also checks the
layout's invariants (codes in 0-15, one scale and zero per group of `group_size` inputs, every
output column covered) and prints what it unpacked as JSON.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_quantized_goldens import AWQ_ORDER, unpack_along_cols  # noqa: E402


def main(quantized_dir, out_dir):
    with open(os.path.join(quantized_dir, "config.json")) as f:
        config = json.load(f)
    q = config.pop("quantization_config")
    assert q["quant_method"] == "awq" and q["bits"] == 4 and q.get("version", "gemm").lower() == "gemm", q
    group = q["group_size"]
    tensors = {}
    for name in sorted(os.listdir(quantized_dir)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(quantized_dir, name)))
    out, unpacked = {}, []
    for name, t in tensors.items():
        if name.endswith((".qzeros", ".scales")):
            continue
        if not name.endswith(".qweight"):
            out[name] = t
            continue
        module = name[: -len(".qweight")]
        codes = unpack_along_cols(t, AWQ_ORDER)                                  # [in, out]
        zeros = unpack_along_cols(tensors[module + ".qzeros"], AWQ_ORDER)        # [groups, out]
        scales = tensors[module + ".scales"].float()                             # [groups, out]
        inputs, outputs = codes.shape
        assert inputs % group == 0 and zeros.shape == scales.shape == (inputs // group, outputs), (module, codes.shape, zeros.shape)
        assert int(codes.min()) >= 0 and int(codes.max()) <= 15
        g = torch.arange(inputs) // group
        w = (codes.float() - zeros[g].float()) * scales[g]                       # [in, out]
        out[module + ".weight"] = w.t().contiguous()  # float32: one rounding, as Lumen's fp32 CPU path
        unpacked.append({"module": module, "in": inputs, "out": outputs, "groups": inputs // group})
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    for name in os.listdir(quantized_dir):
        if not name.endswith(".safetensors") and name not in ("config.json", "model.safetensors.index.json"):
            path = os.path.join(quantized_dir, name)
            if os.path.isfile(path):
                shutil.copy(path, out_dir)
    print(json.dumps({"group_size": group, "modules": len(unpacked), "first": unpacked[:2]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
