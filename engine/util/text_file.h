#pragma once
// Files read whole: configs, tokenizers, indexes, images. Only regular files are read (a FIFO
// would block, /dev/zero never ends) and each kind has a size limit, both checked before reading,
// so a stranger's folder can neither hang Lumen nor make it read gigabytes.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace lumen {

struct FileKind {
    const char* name;     // in messages: "larger than a configuration file can be"
    uint64_t max_bytes;
};

// The largest real files of each kind are far below these (tokenizer.json: 33 MB for Gemma 3's
// 262k vocabulary; tokenizer.model: 4.2 MB; a 200-shard index: 2 MB).
inline constexpr FileKind kConfigFile{"a configuration file", uint64_t(16) << 20};
inline constexpr FileKind kTokenizerFile{"a tokenizer file", uint64_t(256) << 20};
inline constexpr FileKind kIndexFile{"a shard index", uint64_t(64) << 20};
inline constexpr FileKind kImageFile{"an image file", uint64_t(512) << 20};
inline constexpr FileKind kTextInput{"a text file", uint64_t(256) << 20};

// The whole file, or nullopt when there is no such file. Throws lumen::Error naming the file when
// it is a folder, a pipe or a device, larger than the kind allows, or unreadable.
std::optional<std::string> read_text_file(const std::filesystem::path& path, const FileKind& kind);

// Checks, without opening it, that `path` is a regular file (following links); throws
// lumen::Error naming the file and what it is instead. For files opened by other libraries.
void require_regular_file(const std::filesystem::path& path);

// Checks that `path` is a folder; throws lumen::Error saying it does not exist or is a file.
void require_folder(const std::filesystem::path& path);

// "1.5 GB", "320 MB", "12 KB": sizes in messages.
std::string human_bytes(uint64_t bytes);

}  // namespace lumen
