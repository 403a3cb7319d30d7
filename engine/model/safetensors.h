#pragma once
// The safetensors format: an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw data. Everything in the header is checked
// before any tensor is touched, so a damaged file gives a message instead of a crash.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/util/dtype.h"
#include "engine/util/mapped_file.h"

namespace lumen {

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::span<const std::byte> data;  // inside the mapped file

    int64_t numel() const;
};

// "[4096, 11008]", for messages.
std::string shape_text(const std::vector<int64_t>& shape);

struct SafetensorsHeader {
    std::vector<TensorInfo> tensors;  // in file order of their data
    std::map<std::string, std::string> metadata;
};

// Largest header accepted, as in the reference implementation.
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

// Parses and validates a whole file image. `source` names it in error messages.
SafetensorsHeader parse_safetensors(std::span<const std::byte> file, std::string_view source);

// A tensor to write: its bytes in `dtype`, row-major.
struct TensorToWrite {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::span<const std::byte> data;
};

// Writes a safetensors file: the header (names in the given order, 8-byte aligned), then the data.
// Throws lumen::Error naming the file when it cannot be written or a tensor's bytes do not match
// its shape.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::filesystem::path& path);

    const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
    const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
    const TensorInfo* find(std::string_view name) const;
    const std::filesystem::path& path() const { return file_->path(); }

private:
    std::unique_ptr<MappedFile> file_;
    SafetensorsHeader header_;
    std::map<std::string, const TensorInfo*, std::less<>> by_name_;
};

}  // namespace lumen
