#include "engine/model/safetensors.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/util/error.h"
#include "engine/util/json_file.h"

namespace lumen {

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

int64_t TensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

namespace {

uint64_t read_le64(const std::byte* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | uint64_t(p[i]);
    return v;
}

}  // namespace

SafetensorsHeader parse_safetensors(std::span<const std::byte> file, std::string_view source) {
    const std::string where(source);
    if (file.size() < 8)
        throw Error(where + ": file is " + std::to_string(file.size()) +
                    " bytes, too short for a safetensors header (truncated download?)");
    const uint64_t header_len = read_le64(file.data());
    if (header_len > kMaxSafetensorsHeader)
        throw Error(where + ": header claims " + std::to_string(header_len) +
                    " bytes, more than the " + std::to_string(kMaxSafetensorsHeader) +
                    "-byte limit (not a safetensors file, or corrupt)");
    if (header_len > file.size() - 8)
        throw Error(where + ": header claims " + std::to_string(header_len) + " bytes but the file has only " +
                    std::to_string(file.size() - 8) + " after the length field (truncated download?)");
    const char* text = reinterpret_cast<const char*>(file.data() + 8);
    if (header_len == 0 || text[0] != '{') throw Error(where + ": header is not a JSON object");

    const nlohmann::json header = parse_json(std::string_view(text, header_len), where + " (header)", DuplicateKeys::Refused);
    if (!header.is_object()) throw Error(where + ": header is not a JSON object");

    const std::span<const std::byte> data = file.subspan(8 + header_len);
    SafetensorsHeader out;
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) throw Error(where + ": __metadata__ is not an object");
            for (const auto& [k, v] : entry.items()) {
                if (!v.is_string()) throw Error(where + ": __metadata__ value '" + k + "' is not a string");
                out.metadata[k] = v.get<std::string>();
            }
            continue;
        }
        const std::string what = where + ": tensor '" + name + "'";
        if (!entry.is_object()) throw Error(what + " is not described by an object");
        const auto dt = entry.find("dtype");
        const auto shape = entry.find("shape");
        const auto offsets = entry.find("data_offsets");
        if (dt == entry.end() || !dt->is_string()) throw Error(what + " has no dtype");
        if (shape == entry.end() || !shape->is_array()) throw Error(what + " has no shape");
        if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2)
            throw Error(what + " has no data_offsets pair");

        TensorInfo t;
        t.name = name;
        const auto dtype = parse_safetensors_dtype(dt->get<std::string>());
        if (!dtype) throw Error(what + " has unknown dtype '" + dt->get<std::string>() + "'");
        t.dtype = *dtype;

        uint64_t bytes = dtype_size(t.dtype);
        for (const auto& d : *shape) {
            if (!d.is_number_integer() || d.get<int64_t>() < 0)
                throw Error(what + " has a shape entry that is not a non-negative integer");
            const auto dim = d.get<uint64_t>();
            if (__builtin_mul_overflow(bytes, dim, &bytes)) throw Error(what + " has a shape too large to address");
            t.shape.push_back(int64_t(dim));
        }
        for (const auto& o : *offsets)
            if (!o.is_number_integer() || o.get<int64_t>() < 0)
                throw Error(what + " has data_offsets that are not non-negative integers");
        const auto begin = (*offsets)[0].get<uint64_t>();
        const auto end = (*offsets)[1].get<uint64_t>();
        if (end < begin) throw Error(what + " has data_offsets that end before they begin");
        if (end > data.size())
            throw Error(what + " ends at byte " + std::to_string(end) + " of the data but the file holds only " +
                        std::to_string(data.size()) + " (truncated download?)");
        if (end - begin != bytes)
            throw Error(what + " spans " + std::to_string(end - begin) + " bytes but its shape and dtype need " +
                        std::to_string(bytes));
        t.data = data.subspan(begin, end - begin);
        out.tensors.push_back(std::move(t));
    }

    std::sort(out.tensors.begin(), out.tensors.end(),
              [](const TensorInfo& a, const TensorInfo& b) { return a.data.data() < b.data.data(); });
    for (std::size_t i = 1; i < out.tensors.size(); ++i) {
        const auto& prev = out.tensors[i - 1];
        const auto& cur = out.tensors[i];
        if (cur.data.data() < prev.data.data() + prev.data.size())
            throw Error(where + ": tensors '" + prev.name + "' and '" + cur.name + "' overlap in the file");
    }
    // As the safetensors library requires: the tensors fill the data exactly, so no byte of the
    // file goes unaccounted for (a gap is a tensor lost from the table, or a damaged header).
    std::size_t covered = 0;
    for (const auto& t : out.tensors) {
        const auto begin = std::size_t(t.data.data() - data.data());
        if (begin != covered && !t.data.empty())
            throw Error(where + ": bytes " + std::to_string(covered) + " to " + std::to_string(begin) +
                        " of the data belong to no tensor (a damaged header?)");
        covered = std::max(covered, begin + t.data.size());
    }
    if (covered != data.size())
        throw Error(where + ": the last " + std::to_string(data.size() - covered) +
                    " bytes belong to no tensor (a damaged header, or a file that was appended to)");
    return out;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path)
    : file_(std::make_unique<MappedFile>(path)), header_(parse_safetensors(file_->bytes(), path.string())) {
    for (const auto& t : header_.tensors) by_name_.emplace(t.name, &t);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const auto& t : tensors) {
        int64_t n = 1;
        for (int64_t d : t.shape) n *= d;
        if (uint64_t(n) * dtype_size(t.dtype) != t.data.size())
            throw Error(path.string() + ": tensor '" + t.name + "' has " + std::to_string(t.data.size()) + " bytes for its shape");
        header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
        offset += t.data.size();
    }
    std::string text = header.dump();
    while (text.size() % 8) text += ' ';
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    char length[8];
    for (int i = 0; i < 8; ++i) length[i] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
    out.write(length, 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size()));
    out.close();
    if (!out) throw Error(path.string() + ": could not be written (is the disk full?)");
}

}  // namespace lumen
