#include "engine/backend/backend.h"

#include <cmath>
#include <string>

#include "engine/util/error.h"

namespace lumen {

Tensor Tensor::rows_view(int64_t first, int64_t count) const {
    Tensor t = *this;
    t.data = static_cast<std::byte*>(data) + first * stride * int64_t(dtype_size(dtype));
    t.rows = count;
    return t;
}

Tensor Tensor::cols_view(int64_t first, int64_t count) const {
    Tensor t = *this;
    t.data = static_cast<std::byte*>(data) + first * int64_t(dtype_size(dtype));
    t.cols = count;
    return t;
}

void check_patch_rows(const Tensor& planes, const Tensor& levels, int64_t patch, const Tensor& out, const char* who) {
    const int64_t size = planes.cols, channels = levels.rows;
    if (planes.dtype != DType::U8 || planes.stride != planes.cols || levels.cols != 256)
        throw Error(std::string(who) + ": patch_rows takes contiguous 8-bit planes and 256 levels a channel");
    if (patch <= 0 || channels <= 0 || size % patch != 0 || planes.rows % (channels * size) != 0 ||
        out.rows != planes.rows / (channels * size) * (size / patch) * (size / patch) || out.cols < channels * patch * patch)
        throw Error(std::string(who) + ": patch_rows shapes do not match");
}

void check_row_indices(std::span<const int32_t> values, int64_t rows, const char* who) {
    for (int32_t i : values)
        if (i < 0 || i >= rows) throw Error(std::string(who) + ": a row index is out of range");
}

double rope_base(const RopeConfig& rope, int32_t length) {
    if (rope.scaling.type != RopeScaling::Type::Dynamic || length <= rope.max_position_embeddings) return rope.theta;
    const double f = rope.scaling.factor, d = rope.head_dim;
    return rope.theta * std::pow(f * double(length) / double(rope.max_position_embeddings) - (f - 1), d / (d - 2));
}

void check_linear(const Tensor& x, const Weight& w, const Epilogue& e, const Tensor& out, const char* who) {
    check_weight(w, who);
    const int64_t n = w.out_features();
    const int64_t out_cols = e.kind == Epilogue::Kind::SiluMul ? n / 2 : n;
    if (x.cols != w.in_features() || out.rows != x.rows || out.cols != out_cols || (e.kind == Epilogue::Kind::SiluMul && n % 2 != 0))
        throw Error(std::string(who) + ": linear shapes do not match");
    if (!e.bias.empty() && e.bias.rows * e.bias.cols != n) throw Error(std::string(who) + ": a bias must have one value per output");
    if ((e.kind == Epilogue::Kind::SiluMul || e.kind == Epilogue::Kind::AddTo) && !e.scratch.empty() &&
        (e.scratch.rows < x.rows || e.scratch.cols != n))
        throw Error(std::string(who) + ": the scratch of a linear epilogue must hold the whole product");
    if (e.kind == Epilogue::Kind::RopeStoreKv &&
        int64_t(e.heads.num_heads + 2 * e.heads.num_kv_heads) * e.heads.head_dim != n)
        throw Error(std::string(who) + ": the q/k/v product does not match the attention heads");
    if (e.kind == Epilogue::Kind::AddTo && out.dtype != DType::F32) throw Error(std::string(who) + ": the residual stream is fp32");
}

Backend::OwnedWeight Backend::quantized_weight(const QuantizedParts& q) {
    OwnedWeight out;
    Weight& w = out.weight;
    w.format = q.format;
    const bool int4 = q.format == Weight::Format::Int4, fp8 = q.format == Weight::Format::Fp8;
    const int64_t groups = int4 ? q.cols / q.group_size : fp8 ? fp8_groups(q.cols, q.group_size) : 1;
    auto keep = [&](Buffer b) {
        out.buffers.push_back(std::move(b));
        return out.buffers.back().tensor();
    };
    const DType code_type = int4 ? DType::I32 : fp8 ? DType::F8_E4M3 : DType::I8;
    const int64_t code_cols = int4 ? q.cols / 8 : q.cols;
    if (q.codes) {
        w.values = keep(weight(q.codes, code_type, q.rows, code_cols));
        w.scales = keep(weight(q.scales, DType::F32, q.rows, groups));
        if (int4) w.zeros = keep(weight(q.zeros, DType::U8, q.rows, groups));
    } else {
        w.values = keep(random_weight(code_type, q.rows, code_cols, q.seed, 0, 0));
        w.scales = keep(random_weight(compute_dtype(), q.rows, groups, q.seed + 1, q.scale, 0));
        if (int4) {
            // Zeros of 8: a random weight of U8 would be random bits; these are made on the host.
            random_zeros_.emplace_back(std::size_t(q.rows * groups), uint8_t(8));
            w.zeros = keep(weight(random_zeros_.back().data(), DType::U8, q.rows, groups));
        }
    }
    if (int4 || fp8) w.group_size = fp8 && q.group_size <= 0 ? int32_t(q.cols) : q.group_size;
    if (q.input_order) w.input_order = keep(weight(q.input_order, DType::I32, 1, q.cols));
    return out;
}

void check_kv_cache_shape(const KvCacheShape& shape, const char* who) {
    if (shape.bits != 0 && shape.bits != 4 && shape.bits != 8)
        throw Error(std::string(who) + ": a KV cache holds 16-bit values or 8- or 4-bit codes (got " + std::to_string(shape.bits) + " bits)");
    if (shape.bits != 0 && shape.head_dim % 8 != 0)
        throw Error(std::string(who) + ": an " + std::to_string(shape.bits) + "-bit KV cache needs heads of a multiple of 8 (these have " +
                    std::to_string(shape.head_dim) + ")");
}

void check_weight(const Weight& w, const char* who) {
    const auto fail = [&](const char* what) { throw Error(std::string(who) + ": " + what); };
    const bool float_scales = w.scales.dtype == DType::F32 || w.scales.dtype == DType::F16 || w.scales.dtype == DType::BF16;
    const int64_t out = w.out_features(), in = w.in_features();
    switch (w.format) {
    case Weight::Format::Dense: break;
    case Weight::Format::Int4: {
        if (w.values.dtype != DType::I32 || w.group_size <= 0 || in % w.group_size != 0) fail("a 4-bit weight's codes or group size are malformed");
        const int64_t groups = in / w.group_size;
        if (!float_scales || w.scales.rows != out || w.scales.cols != groups || w.zeros.dtype != DType::U8 ||
            w.zeros.rows != out || w.zeros.cols != groups)
            fail("a 4-bit weight's scales or zeros do not match its codes");
        break;
    }
    case Weight::Format::Int8:
        if (w.values.dtype != DType::I8 || !float_scales || w.scales.rows != out || w.scales.cols != 1)
            fail("an 8-bit weight's scales do not match its codes");
        break;
    case Weight::Format::Fp8:
        if (w.values.dtype != DType::F8_E4M3 || w.group_size <= 0 || !float_scales || w.scales.rows != out ||
            w.scales.cols != fp8_groups(in, w.group_size))
            fail("an FP8 weight's scales do not match its codes");
        break;
    }
    if (!w.input_order.empty() && (w.input_order.dtype != DType::I32 || w.input_order.rows != 1 || w.input_order.cols != in))
        fail("a weight's input order must list each input column");
}

}  // namespace lumen
