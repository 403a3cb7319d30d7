#pragma once
// Finds model folders (in given folders and the Hugging Face hub cache) and says for each what it
// is and whether Lumen can load it. Used by `lumen-cli models` and the app's model picker.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lumen {

struct ModelEntry {
    std::filesystem::path path;
    std::string name;          // folder name, or "org/name" for a hub cache snapshot
    bool from_hf_cache = false;
    std::string architecture;  // empty when config.json could not be read
    std::string family;        // e.g. "internlm2", "llava / llama", "internvl / qwen2"
    int64_t parameters = 0;    // counted from the safetensors headers
    std::string dtype;         // the type holding most parameters, e.g. "BF16"
    uint64_t size_bytes = 0;   // files of the folder (symlinks followed)
    bool vision = false;
    bool loadable = false;
    std::string problem;  // why it cannot be loaded
};

// Describes one model folder; never throws.
ModelEntry inspect_model(const std::filesystem::path& dir);

// The hub cache folder as huggingface_hub resolves it: HF_HUB_CACHE, else HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::filesystem::path hf_hub_cache_dir();

// Every model under `folders` (each a model folder itself or a tree holding some, searched three
// levels deep) and, when asked, in the hub cache; sorted by name.
std::vector<ModelEntry> scan_models(const std::vector<std::filesystem::path>& folders, bool include_hf_cache);

}  // namespace lumen
