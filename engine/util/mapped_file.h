#pragma once
// A read-only memory map of a whole file; weights are used in place, never copied to the heap.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace lumen {

class MappedFile {
public:
    explicit MappedFile(const std::filesystem::path& path);  // throws lumen::Error
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    std::span<const std::byte> bytes() const { return {data_, size_}; }
    std::size_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace lumen
