#include "tests/fuzz/fuzz_support.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

namespace lumen::fuzz {

const std::filesystem::path& scratch_dir() {
    static const std::filesystem::path dir = [] {
        auto d = std::filesystem::temp_directory_path() / ("lumen-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(scratch_dir(), ec);
        });
        return d;
    }();
    return dir;
}

void write_file(const std::filesystem::path& path, std::string_view bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
}

const std::string& tiny_tokenizer_json() {
    static const std::string text = [] {
        // GPT-2's printable stand-ins for bytes, as byte-level vocabularies spell them.
        nlohmann::json vocab = nlohmann::json::object();
        int extra = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + extra++);
            std::string utf8;
            if (cp < 0x80) utf8 += char(cp);
            else utf8 += char(0xC0 | (cp >> 6)), utf8 += char(0x80 | (cp & 0x3F));
            vocab[utf8] = b;
        }
        nlohmann::json added = nlohmann::json::array();
        int id = 256;
        for (const char* t : {"<s>", "</s>", "<image>"})
            added.push_back({{"id", id++}, {"content", t}, {"special", true}, {"normalized", false}});
        const nlohmann::json spec{{"added_tokens", added},
                                  {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                                  {"decoder", {{"type", "ByteLevel"}}},
                                  {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
        return spec.dump();
    }();
    return text;
}

bool mutate_json_structure(std::string& text, std::mt19937& rng) {
    if (text.empty()) return false;
    static const char* const kNumbers[] = {"0", "-1", "2147483648", "4294967297", "9223372036854775807",
                                           "18446744073709551615", "1e308", "-1e308", "1e-320", "100000"};
    const std::size_t at = rng() % text.size();
    switch (rng() % 4) {
    case 0: {  // wrap what follows a colon or a bracket in deep nesting
        const std::size_t p = text.find_first_of(":[,", at);
        if (p == std::string::npos) return false;
        const std::size_t depth = 1 + rng() % 5000;
        const std::size_t end = text.find_first_of(",}]", p + 1);
        if (end == std::string::npos) return false;
        text.insert(end, std::string(depth, ']'));
        text.insert(p + 1, std::string(depth, '['));
        return true;
    }
    case 1: {  // a number becomes an extreme one
        const std::size_t p = text.find_first_of("0123456789", at);
        if (p == std::string::npos) return false;
        std::size_t end = p;
        while (end < text.size() && std::string_view("0123456789.eE+-").find(text[end]) != std::string_view::npos) ++end;
        text.replace(p, end - p, kNumbers[rng() % std::size(kNumbers)]);
        return true;
    }
    case 2: {  // a string repeated into a long one
        const std::size_t p = text.find('"', at);
        if (p == std::string::npos) return false;
        const std::size_t end = text.find('"', p + 1);
        if (end == std::string::npos || end - p > 64) return false;
        const std::string inner = text.substr(p + 1, end - p - 1);
        std::string longer;
        for (std::size_t i = 0, n = 1 + rng() % 2000; i < n; ++i) longer += inner;
        text.replace(p + 1, end - p - 1, longer);
        return true;
    }
    default: {  // an array element repeated many times
        const std::size_t p = text.find('[', at);
        if (p == std::string::npos) return false;
        const std::size_t end = text.find_first_of(",]", p + 1);
        if (end == std::string::npos || end - p > 64) return false;
        const std::string element = text.substr(p + 1, end - p - 1);
        if (element.empty()) return false;
        std::string many;
        for (std::size_t i = 0, n = 1 + rng() % 1000; i < n; ++i) many += (i ? "," : "") + element;
        text.replace(p + 1, end - p - 1, many);
        return true;
    }
    }
}

}  // namespace lumen::fuzz
