#include "engine/model/weight_formats.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>

#include "engine/util/error.h"
#include "engine/util/json_file.h"
#include "engine/util/text_file.h"
#include "engine/util/thread_pool.h"

namespace lumen {
namespace {

using json = nlohmann::json;

constexpr const char* kSupported =
    "Lumen loads 4-bit AWQ (GEMM layout), 4-bit GPTQ and compressed-tensors pack-quantized (W4A16) checkpoints, "
    "FP8 E4M3 checkpoints (compressed-tensors float-quantized, transformers' fp8), "
    "and quantizes 16-bit folders at load (--weights int8, int4 or fp8)";

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string text_field(const json& j, const char* key, const std::string& fallback = "") {
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

int64_t int_field(const json& j, const char* key, int64_t fallback) {
    const auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : fallback;
}

bool bool_field(const json& j, const char* key, bool fallback) {
    const auto it = j.find(key);
    return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

[[noreturn]] void unsupported(const std::string& source, const std::string& what) {
    throw Error(source + ": " + what + " are not supported (" + kSupported + ")");
}

int32_t group_size_field(const json& q, const char* key, const std::string& source) {
    const int64_t g = int_field(q, key, -1);
    if (g == -1 || g == 0) return 0;
    if (g < 8 || g > (1 << 20) || g % 8 != 0) throw Error(source + ": quantization group size " + std::to_string(g) + " is not a multiple of 8");
    return int32_t(g);
}

// An FP8 block shape as a config gives it ([rows, inputs]); 0, 0 where absent.
std::pair<int32_t, int32_t> block_shape(const json& j, const char* key, const std::string& source) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return {0, 0};
    if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() || !(*it)[1].is_number_integer())
        throw Error(source + ": " + key + " must be two whole numbers (rows, inputs)");
    const int64_t r = (*it)[0].get<int64_t>(), c = (*it)[1].get<int64_t>();
    if (r < 1 || r > (1 << 20) || c < 16 || c > (1 << 20) || c % 16 != 0)
        unsupported(source, "FP8 blocks of " + std::to_string(r) + " x " + std::to_string(c) + " (rows, inputs; inputs a multiple of 16)");
    return {int32_t(r), int32_t(c)};
}

// compressed-tensors' "float" weights: 8-bit E4M3 per tensor, channel, group or block; activations
// quantized too or not (Lumen computes each token's scale on the fly either way).
void parse_float_weights(const json& weights, const json* input, Quantization& out, const std::string& source) {
    const int64_t bits = int_field(weights, "num_bits", 0);
    if (bits != 8) unsupported(source, std::to_string(bits) + "-bit floating-point weights");
    if (input && !input->is_null()) {
        if (!input->is_object() || lower(text_field(*input, "type", "float")) != "float" || int_field(*input, "num_bits", 8) != 8)
            unsupported(source, "FP8 weights with integer-quantized activations");
    }
    const std::string strategy = lower(text_field(weights, "strategy", "channel"));
    if (strategy == "group") {
        out.group_size = group_size_field(weights, "group_size", source);
    } else if (strategy == "block") {
        const auto [r, c] = block_shape(weights, "block_structure", source);
        out.block_rows = r, out.group_size = c;
    } else if (strategy != "tensor" && strategy != "channel") {
        unsupported(source, "compressed-tensors FP8 '" + strategy + "' quantization");
    }
    out.floating = true;
    out.bits = 8;
    out.symmetric = true;
}

Quantization parse_compressed_tensors(const json& q, const std::string& source) {
    const std::string format = lower(text_field(q, "format", "pack-quantized"));
    auto check_format = [&](const std::string& f) {
        if (f == "pack-quantized" || f == "float-quantized") return;
        if (f == "int-quantized" || f == "naive-quantized") unsupported(source, "8-bit compressed-tensors checkpoints (W8A8/W8A16)");
        unsupported(source, "compressed-tensors checkpoints in the '" + f + "' format");
    };
    check_format(format);
    if (const auto sp = q.find("sparsity_config"); sp != q.end() && sp->is_object() && !sp->empty()) {
        const std::string f = lower(text_field(*sp, "format", "dense"));
        if (f != "dense") unsupported(source, "sparse compressed-tensors checkpoints ('" + f + "')");
    }
    Quantization out;
    out.method = Quantization::Method::CompressedTensors;
    out.bits = 4;
    out.symmetric = true;
    const auto groups = q.find("config_groups");
    if (groups == q.end() || !groups->is_object() || groups->empty())
        throw Error(source + ": a compressed-tensors quantization_config needs config_groups");
    bool first = true;
    for (const auto& [name, group] : groups->items()) {
        if (!group.is_object()) throw Error(source + ": config_groups." + name + " is not an object");
        if (group.contains("format") && group["format"].is_string()) check_format(lower(group["format"].get<std::string>()));
        const auto input = group.find("input_activations");
        const auto weights = group.find("weights");
        if (weights == group.end() || !weights->is_object()) throw Error(source + ": config_groups." + name + " has no weights entry");
        const std::string type = lower(text_field(*weights, "type", "int"));
        if (type == "float") {
            if (!first && !out.floating) unsupported(source, "checkpoints mixing 4-bit and FP8 layers");
            parse_float_weights(*weights, input != group.end() ? &*input : nullptr, out, source);
            first = false;
            continue;
        }
        if (out.floating) unsupported(source, "checkpoints mixing 4-bit and FP8 layers");
        if (input != group.end() && !input->is_null()) unsupported(source, "quantized activations (W4A8, W8A8)");
        const int64_t bits = int_field(*weights, "num_bits", 0);
        if (type != "int") unsupported(source, "'" + type + "' quantized weights");
        if (bits != 4) unsupported(source, std::to_string(bits) + "-bit compressed-tensors weights");
        const std::string strategy = lower(text_field(*weights, "strategy", "group"));
        if (strategy != "group" && strategy != "channel") unsupported(source, "compressed-tensors '" + strategy + "' quantization");
        const int32_t g = strategy == "group" ? group_size_field(*weights, "group_size", source) : 0;
        const bool sym = bool_field(*weights, "symmetric", true);
        if (first) out.group_size = g, out.symmetric = sym;
        else if (g != out.group_size || sym != out.symmetric) out.group_size = -1;  // mixed: the tensors say per layer
        first = false;
    }
    if (out.group_size < 0) out.group_size = 0;
    return out;
}

// transformers' "fp8" quant_method (FineGrainedFP8, and AutoFP8's per-tensor checkpoints that
// vLLM reads under the same name): E4M3 weights, scales per block of weight_block_size or per tensor.
Quantization parse_fp8(const json& q, const std::string& source) {
    const std::string fmt = lower(text_field(q, "fmt", "e4m3"));
    if (fmt != "e4m3") unsupported(source, "FP8 checkpoints in the '" + fmt + "' format");
    const std::string scheme = lower(text_field(q, "activation_scheme", "dynamic"));
    if (scheme != "dynamic" && scheme != "static") unsupported(source, "FP8 activation scheme '" + scheme + "'");
    Quantization out;
    out.method = Quantization::Method::Fp8;
    out.bits = 8;
    out.floating = true;
    out.symmetric = true;
    const auto [r, c] = block_shape(q, "weight_block_size", source);
    out.block_rows = r, out.group_size = c;
    return out;
}

Quantization parse_method(const json& q, const std::string& source) {
    const std::string method = lower(text_field(q, "quant_method", q.contains("w_bit") ? "awq" : "gptq"));
    Quantization out;
    if (method == "awq") {
        out.method = Quantization::Method::Awq;
        out.bits = int32_t(int_field(q, "bits", int_field(q, "w_bit", 4)));
        if (out.bits != 4) unsupported(source, std::to_string(out.bits) + "-bit AWQ weights");
        const std::string version = lower(text_field(q, "version", "gemm"));
        if (version != "gemm") unsupported(source, "AWQ checkpoints in the '" + version + "' layout");
        out.group_size = group_size_field(q, q.contains("group_size") ? "group_size" : "q_group_size", source);
        out.symmetric = !bool_field(q, "zero_point", true);
        return out;
    }
    if (method == "gptq") {
        out.method = Quantization::Method::Gptq;
        out.bits = int32_t(int_field(q, "bits", 4));
        if (out.bits != 4) unsupported(source, std::to_string(out.bits) + "-bit GPTQ weights");
        const std::string format = lower(text_field(q, "checkpoint_format", text_field(q, "format", "gptq")));
        if (format != "gptq" && format != "gptq_v2") unsupported(source, "GPTQ checkpoints in the '" + format + "' layout");
        out.gptq_v2 = format == "gptq_v2";
        out.group_size = group_size_field(q, "group_size", source);
        out.symmetric = bool_field(q, "sym", true);
        return out;
    }
    if (method == "compressed-tensors") return parse_compressed_tensors(q, source);
    if (method == "fp8") return parse_fp8(q, source);
    unsupported(source, "checkpoints quantized with '" + method + "'");
}

}  // namespace

std::string Quantization::describe() const {
    std::string name;
    switch (method) {
    case Method::None: return "16-bit";
    case Method::Awq: name = "AWQ"; break;
    case Method::Gptq: name = "GPTQ"; break;
    case Method::CompressedTensors: name = "compressed-tensors"; break;
    case Method::Fp8: name = "FP8"; break;
    }
    if (floating) {
        if (method == Method::CompressedTensors) name += " FP8";
        if (block_rows > 0) return name + ", blocks of " + std::to_string(block_rows) + " x " + std::to_string(group_size);
        if (group_size > 0) return name + ", groups of " + std::to_string(group_size);
        return name;
    }
    name += " " + std::to_string(bits) + "-bit";
    if (group_size > 0) name += ", groups of " + std::to_string(group_size);
    return name;
}

std::string Quantization::label() const {
    if (method == Method::None) return "16-bit";
    if (floating) {
        const std::string name = method == Method::CompressedTensors ? "compressed-tensors FP8" : "FP8";
        return block_rows > 0 ? name + " b" + std::to_string(block_rows) + "x" + std::to_string(group_size) : name;
    }
    std::string name = method == Method::Awq ? "AWQ" : method == Method::Gptq ? "GPTQ" : "compressed-tensors";
    name += " " + std::to_string(bits) + "-bit";
    if (group_size > 0) name += " g" + std::to_string(group_size);
    return name;
}

Quantization parse_quantization(const json& config, const json* quantize_config, const std::string& source) {
    for (const char* wrapper : {"", "llm_config", "text_config"}) {
        const json* where = &config;
        if (*wrapper) {
            const auto it = config.find(wrapper);
            if (it == config.end() || !it->is_object()) continue;
            where = &*it;
        }
        const auto q = where->find("quantization_config");
        if (q == where->end() || q->is_null()) continue;
        if (!q->is_object()) throw Error(source + ": quantization_config is not an object");
        return parse_method(*q, source + " quantization_config");
    }
    if (quantize_config && quantize_config->is_object()) return parse_method(*quantize_config, "quantize_config.json");
    return {};
}

Quantization load_quantization(const std::filesystem::path& dir, const json& config) {
    std::optional<json> separate;
    if (std::filesystem::exists(dir / "quantize_config.json")) separate = read_json_file(dir / "quantize_config.json", kConfigFile);
    return parse_quantization(config, separate ? &*separate : nullptr, (dir / "config.json").string());
}

WeightChoice WeightChoice::parse(const std::string& name, int32_t group_size) {
    WeightChoice c;
    c.group_size = group_size;
    if (name == "auto" || name == "16") return c;
    if (name == "int8") c.kind = Kind::Int8;
    else if (name == "int4") c.kind = Kind::Int4;
    else if (name == "fp8") c.kind = Kind::Fp8;
    else throw Error("weights '" + name + "': choose auto (as stored), 16, int8, int4 or fp8");
    if (group_size < 32 || group_size % 32 != 0 || group_size > 4096)
        throw Error("group size " + std::to_string(group_size) + ": choose a multiple of 32 (32, 64, 128 ...)");
    return c;
}

std::string WeightChoice::describe() const {
    switch (kind) {
    case Kind::AsStored: return "as stored";
    case Kind::Int8: return "8-bit at load";
    case Kind::Int4: return "4-bit (groups of " + std::to_string(group_size) + ") at load";
    case Kind::Fp8: return "FP8 at load";
    }
    return {};
}

uint64_t HostWeight::bytes() const {
    if (format == Weight::Format::Dense) return uint64_t(rows * cols) * dtype_size(dtype);
    return values.size() + scales.size() + zeros.size() + input_order.size() * 4;
}

namespace {

const TensorInfo& tensor(const Checkpoint& c, const std::string& name, bool floats, const std::vector<int64_t>& shape) {
    const TensorInfo* t = c.find(name);
    if (!t) throw Error("the weights have no tensor '" + name + "'");
    if (floats ? !is_float_type(t->dtype) : t->dtype != DType::I32)
        throw Error("tensor '" + name + "' is " + std::string(dtype_name(t->dtype)) + "; the format stores " +
                    (floats ? "F32, F16 or BF16" : "I32") + " there");
    if (t->shape != shape)
        throw Error("tensor '" + name + "' has shape " + shape_text(t->shape) + " but config.json implies " + shape_text(shape));
    return *t;
}

uint32_t word(const TensorInfo& t, int64_t i) {
    uint32_t w;
    std::memcpy(&w, t.data.data() + i * 4, 4);
    return w;
}

float value(const TensorInfo& t, int64_t i) {
    float v;
    to_f32(t.data.data() + i * int64_t(dtype_size(t.dtype)), t.dtype, 1, &v);
    return v;
}

// The number of groups along the input, from a scale tensor's extent, checked against the width.
int64_t group_count(const std::string& name, int64_t groups, int64_t cols) {
    if (groups <= 0 || cols % groups != 0 || (cols / groups) % 8 != 0)
        throw Error("tensor '" + name + "' has " + std::to_string(groups) + " groups, which do not divide " + std::to_string(cols) +
                    " input columns into multiples of 8");
    return groups;
}

// Builds the canonical 4-bit layout from accessors of a stored format: code(o, k), zero(o, g) and
// scale(o, g), with an optional group index per input column (act-order). Regular act-order
// (every group of equal size) becomes an input order; anything else is dequantized to fp32.
// `ready`, when given, fills the canonical words of rows [begin, end) directly (the formats' fast
// paths; used when the columns keep their order).
using ReadyWords = std::function<void(int64_t begin, int64_t end, uint32_t* words)>;

template <class Code, class Zero, class Scale>
HostWeight build_int4(int64_t rows, int64_t cols, int64_t groups, Code code, Zero zero, Scale scale, const std::vector<int32_t>& g_idx,
                      const ReadyWords& ready = {}) {
    HostWeight w;
    w.rows = rows, w.cols = cols;
    const int64_t size = cols / groups;
    std::vector<int32_t> order;
    if (!g_idx.empty()) {
        bool trivial = true;
        std::vector<int64_t> counts(std::size_t(groups), 0);
        for (int64_t k = 0; k < cols; ++k) {
            trivial = trivial && g_idx[std::size_t(k)] == k / size;
            ++counts[std::size_t(g_idx[std::size_t(k)])];
        }
        if (!trivial) {
            if (std::all_of(counts.begin(), counts.end(), [&](int64_t n) { return n == size; })) {
                order.resize(std::size_t(cols));
                std::iota(order.begin(), order.end(), 0);
                std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return g_idx[std::size_t(a)] < g_idx[std::size_t(b)]; });
            } else {
                w.format = Weight::Format::Dense;
                w.dtype = DType::F32;
                w.values.resize(std::size_t(rows * cols) * 4);
                float* out = reinterpret_cast<float*>(w.values.data());
                ThreadPool::shared().parallel_for(std::size_t(rows), 16, [&](std::size_t b, std::size_t e) {
                    for (int64_t o = int64_t(b); o < int64_t(e); ++o)
                        for (int64_t k = 0; k < cols; ++k) {
                            const int64_t g = g_idx[std::size_t(k)];
                            out[o * cols + k] = (float(code(o, k)) - float(zero(o, g))) * scale(o, g);
                        }
                });
                return w;
            }
        }
    }
    w.format = Weight::Format::Int4;
    w.group_size = int32_t(size);
    w.dtype = DType::F32;
    w.values.resize(std::size_t(rows * cols / 2));
    w.scales.resize(std::size_t(rows * groups) * 4);
    w.zeros.resize(std::size_t(rows * groups));
    uint32_t* words = reinterpret_cast<uint32_t*>(w.values.data());
    float* scales = reinterpret_cast<float*>(w.scales.data());
    ThreadPool::shared().parallel_for(std::size_t(rows), std::size_t(std::max<int64_t>(1, 65536 / cols)), [&](std::size_t b, std::size_t e) {
        if (ready && order.empty()) ready(int64_t(b), int64_t(e), words + int64_t(b) * (cols / 8));
        for (int64_t o = int64_t(b); o < int64_t(e); ++o) {
            for (int64_t j = 0; j < cols && !(ready && order.empty()); j += 8) {
                uint32_t packed = 0;
                for (int64_t i = 0; i < 8; ++i) {
                    const int64_t k = order.empty() ? j + i : order[std::size_t(j + i)];
                    packed |= uint32_t(code(o, k)) << (4 * i);
                }
                words[o * (cols / 8) + j / 8] = packed;
            }
            for (int64_t g = 0; g < groups; ++g) {
                scales[o * groups + g] = scale(o, g);
                w.zeros[std::size_t(o * groups + g)] = uint8_t(zero(o, g));
            }
        }
    });
    if (!order.empty()) w.input_order = std::move(order);
    return w;
}

std::vector<int32_t> read_group_index(const Checkpoint& c, const std::string& name, int64_t cols, int64_t groups) {
    const TensorInfo* t = c.find(name);
    if (!t) return {};
    if ((t->dtype != DType::I32 && t->dtype != DType::I64) || t->shape != std::vector<int64_t>{cols})
        throw Error("tensor '" + name + "' must list one group per input column (" + std::to_string(cols) + " I32 values)");
    std::vector<int32_t> out(static_cast<std::size_t>(cols));
    for (int64_t k = 0; k < cols; ++k) {
        int64_t g;
        if (t->dtype == DType::I32) g = int32_t(word(*t, k));
        else std::memcpy(&g, t->data.data() + k * 8, 8);
        if (g < 0 || g >= groups) throw Error("tensor '" + name + "' names group " + std::to_string(g) + " of " + std::to_string(groups));
        out[std::size_t(k)] = int32_t(g);
    }
    return out;
}

// AutoAWQ's GEMM layout: qweight [in, out / 8], qzeros [groups, out / 8], scales [groups, out];
// within a word, nibble i holds output column 8c + kAwqOrder[i].
constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

HostWeight read_awq(const Checkpoint& c, const std::string& m, int64_t rows, int64_t cols) {
    if (rows % 8 != 0) throw Error("'" + m + "': " + std::to_string(rows) + " outputs do not pack into 4-bit words");
    const TensorInfo* s = c.find(m + ".scales");
    if (!s || s->shape.size() != 2) throw Error("the weights have no tensor '" + m + ".scales' of two dimensions");
    const int64_t groups = group_count(m + ".scales", s->shape[0], cols);
    const TensorInfo& scales = tensor(c, m + ".scales", true, {groups, rows});
    const TensorInfo& qweight = tensor(c, m + ".qweight", false, {cols, rows / 8});
    const TensorInfo& qzeros = tensor(c, m + ".qzeros", false, {groups, rows / 8});
    int inverse[8];
    for (int i = 0; i < 8; ++i) inverse[kAwqOrder[i]] = i;
    const int64_t words = rows / 8;
    auto nibble = [&](const TensorInfo& t, int64_t r, int64_t o) { return (word(t, r * words + o / 8) >> (4 * inverse[o % 8])) & 15u; };
    // Rows o..o+7 share qweight's word column o / 8: eight input rows at a time are one 8x8 block
    // of nibbles, transposed into the eight rows' words.
    const ReadyWords ready = [&](int64_t begin, int64_t end, uint32_t* out) {
        for (int64_t o0 = begin; o0 < end; o0 += 8 - (o0 % 8)) {
            const int64_t o_end = std::min(end, o0 - o0 % 8 + 8);
            for (int64_t k0 = 0; k0 < cols; k0 += 8) {
                uint32_t in_words[8];
                for (int i = 0; i < 8; ++i) in_words[i] = word(qweight, (k0 + i) * words + o0 / 8);
                for (int64_t o = o0; o < o_end; ++o) {
                    const int shift = 4 * inverse[o % 8];
                    uint32_t packed = 0;
                    for (int i = 0; i < 8; ++i) packed |= ((in_words[i] >> shift) & 15u) << (4 * i);
                    out[(o - begin) * (cols / 8) + k0 / 8] = packed;
                }
            }
        }
    };
    return build_int4(
        rows, cols, groups, [&](int64_t o, int64_t k) { return nibble(qweight, k, o); }, [&](int64_t o, int64_t g) { return nibble(qzeros, g, o); },
        [&](int64_t o, int64_t g) { return value(scales, g * rows + o); }, {}, ready);
}

// GPTQ: qweight [in / 8, out] packed along the input, qzeros [groups, out / 8] packed along the
// output (v1 stores zero - 1), scales [groups, out], g_idx [in] (the group of each input column).
HostWeight read_gptq(const Checkpoint& c, const Quantization& q, const std::string& m, int64_t rows, int64_t cols) {
    if (rows % 8 != 0 || cols % 8 != 0) throw Error("'" + m + "': its shape does not pack into 4-bit words");
    const TensorInfo* s = c.find(m + ".scales");
    if (!s || s->shape.size() != 2) throw Error("the weights have no tensor '" + m + ".scales' of two dimensions");
    const int64_t groups = group_count(m + ".scales", s->shape[0], cols);
    const TensorInfo& scales = tensor(c, m + ".scales", true, {groups, rows});
    const TensorInfo& qweight = tensor(c, m + ".qweight", false, {cols / 8, rows});
    const TensorInfo& qzeros = tensor(c, m + ".qzeros", false, {groups, rows / 8});
    const std::vector<int32_t> g_idx = read_group_index(c, m + ".g_idx", cols, groups);
    const uint32_t offset = q.gptq_v2 ? 0 : 1;
    // qweight's word (r, o) is already output o's word r.
    const ReadyWords ready = [&](int64_t begin, int64_t end, uint32_t* out) {
        for (int64_t r = 0; r < cols / 8; ++r)
            for (int64_t o = begin; o < end; ++o) out[(o - begin) * (cols / 8) + r] = word(qweight, r * rows + o);
    };
    return build_int4(
        rows, cols, groups, [&](int64_t o, int64_t k) { return (word(qweight, (k / 8) * rows + o) >> (4 * (k % 8))) & 15u; },
        [&](int64_t o, int64_t g) { return ((word(qzeros, g * (rows / 8) + o / 8) >> (4 * (o % 8))) + offset) & 15u; },
        [&](int64_t o, int64_t g) { return value(scales, g * rows + o); }, g_idx, ready);
}

// compressed-tensors pack-quantized: weight_packed [out, in / 8] with codes stored as value + 8,
// input column 8w + i in nibble i; weight_scale [out, groups]; weight_zero_point (asymmetric
// only) [out / 8, groups] packed along the output the same way; weight_g_idx optional.
HostWeight read_packed(const Checkpoint& c, const std::string& m, int64_t rows, int64_t cols) {
    if (cols % 8 != 0) throw Error("'" + m + "': " + std::to_string(cols) + " inputs do not pack into 4-bit words");
    const TensorInfo* s = c.find(m + ".weight_scale");
    if (!s || s->shape.size() != 2) throw Error("the weights have no tensor '" + m + ".weight_scale' of two dimensions");
    const int64_t groups = group_count(m + ".weight_scale", s->shape[1], cols);
    const TensorInfo& scales = tensor(c, m + ".weight_scale", true, {rows, groups});
    const TensorInfo& packed = tensor(c, m + ".weight_packed", false, {rows, cols / 8});
    if (const TensorInfo* shape = c.find(m + ".weight_shape")) {
        int64_t dims[2] = {0, 0};
        if (shape->shape == std::vector<int64_t>{2} && (shape->dtype == DType::I32 || shape->dtype == DType::I64))
            for (int i = 0; i < 2; ++i) {
                if (shape->dtype == DType::I32) dims[i] = int32_t(word(*shape, i));
                else std::memcpy(&dims[i], shape->data.data() + i * 8, 8);
            }
        if (dims[0] != rows || dims[1] != cols)
            throw Error("tensor '" + m + ".weight_shape' does not say [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    const TensorInfo* zp = c.find(m + ".weight_zero_point");
    if (zp) tensor(c, m + ".weight_zero_point", false, {(rows + 7) / 8, groups});
    const std::vector<int32_t> g_idx = read_group_index(c, m + ".weight_g_idx", cols, groups);
    // weight_packed's rows are the canonical words as they are.
    const ReadyWords ready = [&](int64_t begin, int64_t end, uint32_t* out) {
        std::memcpy(out, packed.data.data() + begin * (cols / 8) * 4, std::size_t((end - begin) * (cols / 8)) * 4);
    };
    return build_int4(
        rows, cols, groups, [&](int64_t o, int64_t k) { return (word(packed, o * (cols / 8) + k / 8) >> (4 * (k % 8))) & 15u; },
        [&](int64_t o, int64_t g) { return zp ? (word(*zp, (o / 8) * groups + g) >> (4 * (o % 8))) & 15u : 8u; },
        [&](int64_t o, int64_t g) { return value(scales, o * groups + g); }, g_idx, ready);
}

// FP8 E4M3 codes [out, in] in `.weight` with fp32/16-bit scales in `.weight_scale_inv`
// (transformers' fp8: the factor that multiplies the codes, despite its name) or `.weight_scale`
// (compressed-tensors, AutoFP8): one for the tensor, one per output channel, per group of inputs,
// or per block of rows x inputs (the edge blocks short). Re-laid as one scale per row and group.
HostWeight read_fp8(const Checkpoint& c, const Quantization& q, const std::string& m, int64_t rows, int64_t cols) {
    const TensorInfo& codes = *c.find(m + ".weight");
    if (codes.shape != std::vector<int64_t>{rows, cols})
        throw Error("tensor '" + m + ".weight' has shape " + shape_text(codes.shape) + " but config.json implies " + shape_text({rows, cols}));
    std::string scale_name = m + ".weight_scale_inv";
    if (!c.find(scale_name)) scale_name = m + ".weight_scale";
    const TensorInfo* st = c.find(scale_name);
    if (!st) throw Error("tensor '" + m + ".weight' holds FP8 codes, but the weights have no '" + m + ".weight_scale' or '" + m +
                         ".weight_scale_inv' to scale them");
    if (!is_float_type(st->dtype))
        throw Error("tensor '" + scale_name + "' is " + std::string(dtype_name(st->dtype)) + "; FP8 scales are F32, F16 or BF16");
    int64_t count = 1;
    for (int64_t d : st->shape) count *= d;
    const std::vector<int64_t>& shape = st->shape;
    const int64_t br = q.block_rows, bc = q.group_size;
    HostWeight w;
    w.format = Weight::Format::Fp8;
    w.rows = rows, w.cols = cols, w.dtype = DType::F32;
    // scale_of(o, g): the stored scale of row o's group g, with the layout the shape says.
    std::function<int64_t(int64_t, int64_t)> index_of;
    if (count == 1) {
        w.group_size = int32_t(cols);
        index_of = [](int64_t, int64_t) { return int64_t(0); };
    } else if (count == rows && (shape.size() == 1 || (shape.size() == 2 && shape[1] == 1))) {
        w.group_size = int32_t(cols);
        index_of = [](int64_t o, int64_t) { return o; };
    } else if (br > 0 && shape.size() == 2 && shape[0] == (rows + br - 1) / br && shape[1] == (cols + bc - 1) / bc) {
        w.group_size = int32_t(bc);
        const int64_t groups = shape[1];
        index_of = [br, groups](int64_t o, int64_t g) { return (o / br) * groups + g; };
    } else if (br == 0 && shape.size() == 2 && shape[0] == rows && shape[1] > 1 &&
               (bc > 0 ? (cols + bc - 1) / bc == shape[1] : cols % shape[1] == 0 && (cols / shape[1]) % 16 == 0)) {
        w.group_size = int32_t(bc > 0 ? bc : cols / shape[1]);
        const int64_t groups = shape[1];
        index_of = [groups](int64_t o, int64_t g) { return o * groups + g; };
    } else {
        throw Error("tensor '" + scale_name + "' has shape " + shape_text(shape) + ", which is not one scale, one per output channel (" +
                    std::to_string(rows) + "), or one per " + (br > 0 ? "block of " + std::to_string(br) + " x " + std::to_string(bc) : "group") +
                    " of '" + m + ".weight' " + shape_text({rows, cols}));
    }
    const int64_t groups = fp8_groups(cols, w.group_size);
    w.values.resize(std::size_t(rows * cols));
    w.scales.resize(std::size_t(rows * groups) * 4);
    float* scales = reinterpret_cast<float*>(w.scales.data());
    std::atomic<bool> bad_code{false}, bad_scale{false};
    ThreadPool::shared().parallel_for(std::size_t(rows), std::size_t(std::max<int64_t>(1, 65536 / cols)), [&](std::size_t b, std::size_t e) {
        const auto* src = reinterpret_cast<const uint8_t*>(codes.data.data());
        auto* dst = reinterpret_cast<uint8_t*>(w.values.data());
        for (int64_t o = int64_t(b); o < int64_t(e); ++o) {
            std::memcpy(dst + o * cols, src + o * cols, std::size_t(cols));
            for (int64_t k = 0; k < cols; ++k)
                if ((src[o * cols + k] & 0x7F) == 0x7F) bad_code = true;  // NaN
            for (int64_t g = 0; g < groups; ++g) {
                const float v = value(*st, index_of(o, g));
                if (!std::isfinite(v)) bad_scale = true;
                scales[o * groups + g] = v;
            }
        }
    });
    if (bad_code) throw Error("tensor '" + m + ".weight' holds FP8 codes that are NaN (0x7F or 0xFF): the file is damaged");
    if (bad_scale) throw Error("tensor '" + scale_name + "' holds a scale that is not a finite number: the file is damaged");
    return w;
}

}  // namespace

bool has_linear(const Checkpoint& c, const std::string& m) {
    return c.find(m + ".weight") || c.find(m + ".qweight") || c.find(m + ".weight_packed");
}

HostWeight read_linear(const Checkpoint& c, const Quantization& q, const std::string& m, int64_t rows, int64_t cols) {
    if (const TensorInfo* t = c.find(m + ".weight"); t && (t->dtype == DType::F8_E4M3 || t->dtype == DType::F8_E5M2)) {
        if (t->dtype == DType::F8_E5M2) unsupported("tensor '" + m + ".weight'", "FP8 E5M2 weights");
        if (!q.floating) throw Error("tensor '" + m + ".weight' holds FP8 codes, but config.json declares no FP8 quantization");
        return read_fp8(c, q, m, rows, cols);
    }
    if (c.find(m + ".weight")) {
        const TensorInfo& t = tensor(c, m + ".weight", true, {rows, cols});
        HostWeight w;
        w.rows = rows, w.cols = cols, w.dtype = t.dtype, w.mapped = t.data.data();
        return w;
    }
    if (c.find(m + ".qweight")) {
        if (q.method == Quantization::Method::Awq) return read_awq(c, m, rows, cols);
        if (q.method == Quantization::Method::Gptq) return read_gptq(c, q, m, rows, cols);
        throw Error("tensor '" + m + ".qweight' is packed 4-bit, but config.json declares no AWQ or GPTQ quantization");
    }
    if (c.find(m + ".weight_packed")) {
        if (q.method == Quantization::Method::CompressedTensors) return read_packed(c, m, rows, cols);
        throw Error("tensor '" + m + ".weight_packed' is packed 4-bit, but config.json declares no compressed-tensors quantization");
    }
    throw Error("the weights have no tensor '" + m + ".weight'");
}

std::vector<float> dequantize(const HostWeight& w) {
    std::vector<float> out(std::size_t(w.rows * w.cols));
    ThreadPool::shared().parallel_for(std::size_t(w.rows), 16, [&](std::size_t b, std::size_t e) {
        for (int64_t o = int64_t(b); o < int64_t(e); ++o) {
            float* row = out.data() + o * w.cols;
            switch (w.format) {
            case Weight::Format::Dense:
                to_f32(w.dense_data() + o * w.cols * int64_t(dtype_size(w.dtype)), w.dtype, std::size_t(w.cols), row);
                break;
            case Weight::Format::Int4: {
                const int64_t groups = w.cols / w.group_size;
                const uint32_t* words = reinterpret_cast<const uint32_t*>(w.values.data()) + o * (w.cols / 8);
                const float* scales = reinterpret_cast<const float*>(w.scales.data()) + o * groups;
                for (int64_t j = 0; j < w.cols; ++j) {
                    const int64_t g = j / w.group_size;
                    const float v = (float((words[j / 8] >> (4 * (j % 8))) & 15u) - float(w.zeros[std::size_t(o * groups + g)])) * scales[g];
                    row[w.input_order.empty() ? j : w.input_order[std::size_t(j)]] = v;
                }
                break;
            }
            case Weight::Format::Int8: {
                const float scale = reinterpret_cast<const float*>(w.scales.data())[o];
                const int8_t* q = reinterpret_cast<const int8_t*>(w.values.data()) + o * w.cols;
                for (int64_t j = 0; j < w.cols; ++j) row[j] = float(q[j]) * scale;
                break;
            }
            case Weight::Format::Fp8: {
                const int64_t groups = fp8_groups(w.cols, w.group_size);
                const float* scales = reinterpret_cast<const float*>(w.scales.data()) + o * groups;
                const uint8_t* q = reinterpret_cast<const uint8_t*>(w.values.data()) + o * w.cols;
                for (int64_t j = 0; j < w.cols; ++j) row[j] = e4m3_to_f32(q[j]) * scales[j / w.group_size];
                break;
            }
            }
        }
    });
    return out;
}

HostWeight concat_rows(const std::vector<RowRange>& parts) {
    const HostWeight& first = *parts.front().weight;
    HostWeight out;
    out.cols = first.cols;
    for (const auto& p : parts) out.rows += p.count;
    bool same = true;
    for (const auto& p : parts) {
        const HostWeight& w = *p.weight;
        same = same && w.format == first.format && w.group_size == first.group_size && w.input_order == first.input_order &&
               (w.format != Weight::Format::Dense || w.dtype == first.dtype);
    }
    if (!same) {
        // Mixed formats (a module left 16-bit beside quantized ones): fp32 rows.
        out.dtype = DType::F32;
        out.values.resize(std::size_t(out.rows * out.cols) * 4);
        std::byte* dst = out.values.data();
        for (const auto& p : parts) {
            const std::vector<float> all = dequantize(*p.weight);
            const std::size_t n = std::size_t(p.count * out.cols) * 4;
            std::memcpy(dst, all.data() + p.first * out.cols, n);
            dst += n;
        }
        return out;
    }
    out.format = first.format;
    out.group_size = first.group_size;
    out.dtype = first.dtype;
    out.input_order = first.input_order;
    // Bytes per row of each part: values, scales, zeros.
    auto append = [&](std::vector<std::byte>& dst, const std::byte* src, int64_t row_bytes, const RowRange& p) {
        dst.insert(dst.end(), src + p.first * row_bytes, src + (p.first + p.count) * row_bytes);
    };
    for (const auto& p : parts) {
        const HostWeight& w = *p.weight;
        switch (w.format) {
        case Weight::Format::Dense: append(out.values, w.dense_data(), w.cols * int64_t(dtype_size(w.dtype)), p); break;
        case Weight::Format::Int4: {
            const int64_t groups = w.cols / w.group_size;
            append(out.values, w.values.data(), w.cols / 2, p);
            append(out.scales, w.scales.data(), groups * 4, p);
            out.zeros.insert(out.zeros.end(), w.zeros.begin() + p.first * groups, w.zeros.begin() + (p.first + p.count) * groups);
            break;
        }
        case Weight::Format::Int8:
            append(out.values, w.values.data(), w.cols, p);
            append(out.scales, w.scales.data(), 4, p);
            break;
        case Weight::Format::Fp8:
            append(out.values, w.values.data(), w.cols, p);
            append(out.scales, w.scales.data(), fp8_groups(w.cols, w.group_size) * 4, p);
            break;
        }
    }
    return out;
}

HostWeight quantize_int4(const HostWeight& dense, int32_t group_size) {
    const int64_t rows = dense.rows, cols = dense.cols, groups = cols / group_size;
    HostWeight w;
    w.format = Weight::Format::Int4;
    w.rows = rows, w.cols = cols, w.group_size = group_size, w.dtype = DType::F32;
    w.values.resize(std::size_t(rows * cols / 2));
    w.scales.resize(std::size_t(rows * groups) * 4);
    w.zeros.resize(std::size_t(rows * groups));
    uint32_t* words = reinterpret_cast<uint32_t*>(w.values.data());
    float* scales = reinterpret_cast<float*>(w.scales.data());
    ThreadPool::shared().parallel_for(std::size_t(rows), std::size_t(std::max<int64_t>(1, 16384 / cols)), [&](std::size_t b, std::size_t e) {
        std::vector<float> row(static_cast<std::size_t>(cols));
        for (int64_t o = int64_t(b); o < int64_t(e); ++o) {
            to_f32(dense.dense_data() + o * cols * int64_t(dtype_size(dense.dtype)), dense.dtype, std::size_t(cols), row.data());
            for (int64_t g = 0; g < groups; ++g) {
                const float* v = row.data() + g * group_size;
                const auto [lo, hi] = std::minmax_element(v, v + group_size);
                // Scales are kept as fp16 values, as AutoAWQ writes them, so a folder written from
                // these weights dequantizes to exactly the same numbers.
                const float scale = f16_to_f32(f32_to_f16(std::max(*hi - *lo, 1e-5f) / 15.0f));
                const float zero = std::clamp(std::nearbyint(-*lo / scale), 0.0f, 15.0f);
                scales[o * groups + g] = scale;
                w.zeros[std::size_t(o * groups + g)] = uint8_t(zero);
                for (int64_t i = 0; i < group_size; i += 8) {
                    uint32_t packed = 0;
                    for (int64_t k = 0; k < 8; ++k)
                        packed |= uint32_t(std::clamp(std::nearbyint(v[i + k] / scale) + zero, 0.0f, 15.0f)) << (4 * k);
                    words[(o * cols + g * group_size + i) / 8] = packed;
                }
            }
        }
    });
    return w;
}

namespace {

// Symmetric per output channel: scale = max |w| / `largest` (the largest code's value), each value
// over its row's scale made one byte by `encode`.
template <class Encode>
HostWeight quantize_per_channel(const HostWeight& dense, Weight::Format format, float largest, Encode encode) {
    const int64_t rows = dense.rows, cols = dense.cols;
    HostWeight w;
    w.format = format;
    w.rows = rows, w.cols = cols, w.dtype = DType::F32;
    w.values.resize(std::size_t(rows * cols));
    w.scales.resize(std::size_t(rows) * 4);
    auto* codes = reinterpret_cast<uint8_t*>(w.values.data());
    float* scales = reinterpret_cast<float*>(w.scales.data());
    ThreadPool::shared().parallel_for(std::size_t(rows), std::size_t(std::max<int64_t>(1, 16384 / cols)), [&](std::size_t b, std::size_t e) {
        std::vector<float> row(static_cast<std::size_t>(cols));
        for (int64_t o = int64_t(b); o < int64_t(e); ++o) {
            to_f32(dense.dense_data() + o * cols * int64_t(dtype_size(dense.dtype)), dense.dtype, std::size_t(cols), row.data());
            float peak = 0;
            for (float v : row) peak = std::max(peak, std::fabs(v));
            const float scale = peak > 0 ? peak / largest : 1.0f;
            scales[o] = scale;
            for (int64_t k = 0; k < cols; ++k) codes[o * cols + k] = encode(row[std::size_t(k)] / scale);
        }
    });
    return w;
}

}  // namespace

HostWeight quantize_int8(const HostWeight& dense) {
    return quantize_per_channel(dense, Weight::Format::Int8, 127.0f,
                                [](float v) { return uint8_t(int8_t(std::clamp(std::nearbyint(v), -127.0f, 127.0f))); });
}

HostWeight quantize_fp8(const HostWeight& dense) {
    HostWeight w = quantize_per_channel(dense, Weight::Format::Fp8, 448.0f, f32_to_e4m3);
    w.group_size = int32_t(dense.cols);
    return w;
}

}  // namespace lumen
