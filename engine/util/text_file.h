#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace lumen {

// The whole file as bytes, or nullopt when it cannot be opened.
std::optional<std::string> read_text_file(const std::filesystem::path& path);

}  // namespace lumen
