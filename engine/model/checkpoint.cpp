#include "engine/model/checkpoint.h"

#include <nlohmann/json.hpp>
#include <set>

#include "engine/util/error.h"
#include "engine/util/json_file.h"

namespace lumen {
namespace fs = std::filesystem;

std::optional<std::string> pickle_checkpoint_error(const fs::path& dir) {
    for (const char* name : {"pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth",
                             "consolidated.00.pth"}) {
        if (fs::exists(dir / name))
            return dir.string() + " holds only a PyTorch pickle checkpoint (" + name +
                   "). Lumen does not load pickle files because unpickling can run arbitrary code. Convert it "
                   "to safetensors with transformers: python -c \"from transformers import AutoModel as A; "
                   "A.from_pretrained('DIR', trust_remote_code=True).save_pretrained('OUT', "
                   "safe_serialization=True)\", then copy the tokenizer files into OUT.";
    }
    return std::nullopt;
}

namespace {

nlohmann::json read_index(const fs::path& path) {
    const auto text = read_text_file(path, kIndexFile);
    if (!text) throw Error(path.string() + ": cannot open");
    return parse_json(*text, path.string(), DuplicateKeys::Refused);
}

}  // namespace

Checkpoint::Checkpoint(const fs::path& dir) : dir_(dir) {
    const fs::path index_path = dir / "model.safetensors.index.json";
    const fs::path single_path = dir / "model.safetensors";
    std::map<std::string, std::string> expected_shard;  // tensor -> shard file name, from the index

    if (fs::exists(index_path)) {
        const nlohmann::json index = read_index(index_path);
        const auto map = index.find("weight_map");
        if (!index.is_object() || map == index.end() || !map->is_object())
            throw Error(index_path.string() + ": has no weight_map object");
        std::set<std::string> shard_names;
        for (const auto& [tensor, shard] : map->items()) {
            if (!shard.is_string()) throw Error(index_path.string() + ": weight_map entry '" + tensor + "' is not a file name");
            const auto file = shard.get<std::string>();
            // A file name in this folder: no path, no NUL, not longer than file systems allow.
            if (file.empty() || file.size() > 255 || file.find_first_of(std::string("/\0", 2)) != std::string::npos ||
                file == "." || file == "..")
                throw Error(index_path.string() + ": weight_map names an invalid shard '" + file.substr(0, 80) + "'");
            expected_shard[tensor] = file;
            shard_names.insert(file);
        }
        for (const auto& name : shard_names) {
            const fs::path shard = dir / name;
            std::error_code ec;
            if (!fs::exists(shard, ec))
                throw Error(dir.string() + ": shard " + name +
                            " listed in model.safetensors.index.json is missing (incomplete download?)");
            files_.push_back(shard);
        }
    } else if (fs::exists(single_path)) {
        files_.push_back(single_path);
    } else if (auto pickle = pickle_checkpoint_error(dir)) {
        throw Error(*pickle);
    } else {
        throw Error(dir.string() + ": no weights found (expected model.safetensors or model.safetensors.index.json)");
    }

    for (const auto& file : files_) {
        shards_.push_back(std::make_unique<SafetensorsFile>(file));
        for (const auto& t : shards_.back()->tensors()) {
            if (!by_name_.emplace(t.name, &t).second)
                throw Error(dir.string() + ": tensor '" + t.name + "' appears in more than one shard");
            tensors_.push_back(&t);
        }
    }
    for (const auto& [tensor, shard] : expected_shard) {
        const auto* t = find(tensor);
        if (!t) throw Error(index_path.string() + ": lists tensor '" + tensor + "' in " + shard + ", which does not hold it");
    }
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& Checkpoint::get(std::string_view name) const {
    if (const auto* t = find(name)) return *t;
    throw Error(dir_.string() + ": the checkpoint has no tensor '" + std::string(name) + "'");
}

int64_t Checkpoint::parameter_count() const {
    int64_t n = 0;
    for (const auto* t : tensors_) {
        const std::string_view name = t->name;
        auto ends = [&](std::string_view suffix) { return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix; };
        // Packed 4-bit weights hold eight parameters a word; their scales, zeros and orders none.
        if (ends(".qweight") || ends(".weight_packed")) n += t->numel() * 8;
        else if (!(ends(".qzeros") || ends(".scales") || ends(".g_idx") || ends(".weight_scale") || ends(".weight_zero_point") ||
                   ends(".weight_g_idx") || ends(".weight_shape")))
            n += t->numel();
    }
    return n;
}

std::optional<DType> Checkpoint::main_dtype() const {
    std::map<DType, int64_t> counts;
    for (const auto* t : tensors_)
        if (t->dtype == DType::F32 || t->dtype == DType::F16 || t->dtype == DType::BF16) counts[t->dtype] += t->numel();
    std::optional<DType> best;
    int64_t most = -1;
    for (const auto& [dtype, n] : counts)
        if (n > most) best = dtype, most = n;
    return best;
}

}  // namespace lumen
