#pragma once
// What the fuzz targets share: a scratch folder for parsers that read files by path, a small
// valid tokenizer, and the structure-aware mutation of JSON (deep nesting, extreme numbers) that
// byte-level mutators almost never produce, used by libFuzzer and by the CTest replay alike.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <algorithm>

namespace lumen::fuzz {

// A folder of this process's own (each target runs in its own process), made on first use and
// removed at exit; targets overwrite their files in it.
const std::filesystem::path& scratch_dir();
void write_file(const std::filesystem::path& path, std::string_view bytes);

// tokenizer.json of a byte-level BPE over the 256 bytes, with <s>, </s> and <image> (256-258).
const std::string& tiny_tokenizer_json();

// One structural change to JSON text: a value wrapped in deep nesting, a number replaced by an
// extreme one, a string or array repeated; returns false when none applied (no JSON found).
bool mutate_json_structure(std::string& text, std::mt19937& rng);

}  // namespace lumen::fuzz

// For targets whose input is JSON: libFuzzer's custom mutator applies mutate_json_structure a
// quarter of the time and its own byte mutations otherwise (the CTest replay mutates on its own).
#ifndef LUMEN_LIBFUZZER
#define LUMEN_FUZZ_JSON_MUTATOR
#else
#define LUMEN_FUZZ_JSON_MUTATOR                                                                           \
    extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);                      \
    extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) { \
        std::mt19937 rng(seed);                                                                           \
        if (rng() % 4 == 0) {                                                                             \
            std::string text(reinterpret_cast<const char*>(data), size);                                  \
            if (lumen::fuzz::mutate_json_structure(text, rng) && text.size() <= max_size) {               \
                std::copy(text.begin(), text.end(), data);                                                \
                return text.size();                                                                       \
            }                                                                                             \
        }                                                                                                 \
        return LLVMFuzzerMutate(data, size, max_size);                                                    \
    }
#endif
