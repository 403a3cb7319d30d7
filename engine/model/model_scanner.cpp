#include "engine/model/model_scanner.h"
#include "engine/model/weight_formats.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

#include "engine/model/checkpoint.h"
#include "engine/util/error.h"
#include "engine/model/model.h"
#include "engine/model/model_config.h"
#include "engine/util/text_file.h"

namespace lumen {
namespace fs = std::filesystem;

namespace {

uint64_t folder_size(const fs::path& dir) {
    uint64_t total = 0;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
         !ec && it != end; it.increment(ec)) {
        std::error_code size_ec;
        if (it->is_regular_file(size_ec)) {  // follows symlinks, as hub snapshots need
            const auto n = it->file_size(size_ec);
            if (!size_ec) total += n;
        }
    }
    return total;
}

std::string family_of(const ModelConfig& c) {
    const std::string text = text_family_name(c.text.family);
    switch (c.kind) {
    case ModelKind::Text: return text;
    case ModelKind::Llava: return "llava / " + text;
    case ModelKind::InternVLChat:
    case ModelKind::InternVLHf: return "internvl / " + text;
    }
    return text;
}

// A folder with a config.json of any kind: one that is a pipe or a folder is listed as broken
// (with the reason) rather than passed over.
bool is_model_folder(const fs::path& dir) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(dir / "config.json", ec)) && !ec;
}

void find_model_folders(const fs::path& dir, int depth, std::vector<fs::path>& out) {
    if (is_model_folder(dir)) {
        out.push_back(dir);
        return;
    }
    if (depth == 0) return;
    std::error_code ec;
    std::vector<fs::path> children;
    for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
         it.increment(ec)) {
        std::error_code type_ec;
        if (it->is_directory(type_ec) && it->path().filename().string().front() != '.') children.push_back(it->path());
    }
    std::sort(children.begin(), children.end());
    for (const auto& child : children) find_model_folders(child, depth - 1, out);
}

// The snapshot a hub cache repository resolves to: the one refs/main names, else the newest.
std::optional<fs::path> hub_snapshot(const fs::path& repo) {
    std::optional<std::string> ref;
    try {
        ref = read_text_file(repo / "refs" / "main", kConfigFile);
    } catch (const Error&) {  // not a file: look at the snapshots instead
    }
    if (ref) {
        std::string rev = *ref;
        while (!rev.empty() && std::isspace(static_cast<unsigned char>(rev.back()))) rev.pop_back();
        const fs::path snap = repo / "snapshots" / rev;
        if (!rev.empty() && is_model_folder(snap)) return snap;
    }
    std::optional<fs::path> newest;
    fs::file_time_type newest_time{};
    std::error_code ec;
    for (fs::directory_iterator it(repo / "snapshots", ec), end; !ec && it != end; it.increment(ec)) {
        if (!is_model_folder(it->path())) continue;
        std::error_code time_ec;
        const auto t = fs::last_write_time(it->path(), time_ec);
        if (!newest || t > newest_time) newest = it->path(), newest_time = t;
    }
    return newest;
}

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

}  // namespace

ModelEntry inspect_model(const fs::path& dir) {
    ModelEntry e;
    e.path = dir;
    e.name = dir.filename().string();
    e.size_bytes = folder_size(dir);
    try {
        const ModelConfig config = load_model_config(dir);
        e.architecture = config.architecture;
        e.family = family_of(config);
        e.vision = config.is_vision_language();
        const Checkpoint checkpoint(dir);
        e.parameters = checkpoint.parameter_count();
        try {
            check_weights(config, checkpoint);  // names, shapes and types against config.json, reading no weights
        } catch (const Error& ex) {
            throw Error(dir.string() + ": " + ex.what());
        }
        if (const auto dtype = checkpoint.main_dtype()) e.dtype = std::string(dtype_name(*dtype));
        const Quantization quantization = load_quantization(dir, config.raw);  // refuses what Lumen cannot read
        if (quantization.quantized()) e.dtype = quantization.label();
        if (!fs::exists(dir / "tokenizer.json") && !fs::exists(dir / "tokenizer.model"))
            throw Error(dir.string() + ": no tokenizer here (a model folder has tokenizer.json or tokenizer.model)");
        e.loadable = true;
    } catch (const std::exception& ex) {
        // The entry already names the folder; keep the message relative to it.
        e.problem = user_message(ex, "read this folder");
        for (const std::string& prefix : {dir.string() + "/", dir.string() + ": "})
            if (e.problem.rfind(prefix, 0) == 0) e.problem.erase(0, prefix.size());
    }
    return e;
}

fs::path hf_hub_cache_dir() {
    if (const auto hub = env("HF_HUB_CACHE"); !hub.empty()) return hub;
    if (const auto home = env("HF_HOME"); !home.empty()) return fs::path(home) / "hub";
    if (const auto xdg = env("XDG_CACHE_HOME"); !xdg.empty()) return fs::path(xdg) / "huggingface" / "hub";
    return fs::path(env("HOME")) / ".cache" / "huggingface" / "hub";
}

std::vector<ModelEntry> scan_models(const std::vector<fs::path>& folders, bool include_hf_cache) {
    std::vector<ModelEntry> out;
    std::set<fs::path> seen;
    auto add = [&](const fs::path& dir, const std::string& name, bool from_cache) {
        std::error_code ec;
        const fs::path key = fs::weakly_canonical(dir, ec);
        if (!seen.insert(ec ? dir : key).second) return;
        ModelEntry e = inspect_model(dir);
        if (!name.empty()) e.name = name;
        e.from_hf_cache = from_cache;
        out.push_back(std::move(e));
    };
    for (const auto& folder : folders) {
        std::vector<fs::path> found;
        find_model_folders(folder, 3, found);
        for (const auto& dir : found) add(dir, "", false);
    }
    if (include_hf_cache) {
        const fs::path cache = hf_hub_cache_dir();
        std::error_code ec;
        std::vector<fs::path> repos;
        for (fs::directory_iterator it(cache, ec), end; !ec && it != end; it.increment(ec)) {
            const std::string dirname = it->path().filename().string();
            if (dirname.rfind("models--", 0) == 0) repos.push_back(it->path());
        }
        std::sort(repos.begin(), repos.end());
        for (const auto& repo : repos) {
            // models--org--name: "--" separates the parts of the repository id.
            const std::string dirname = repo.filename().string();
            std::string id;
            for (std::size_t i = 8; i < dirname.size(); ++i) {
                if (dirname.compare(i, 2, "--") == 0) id += '/', ++i;
                else id += dirname[i];
            }
            if (const auto snap = hub_snapshot(repo)) add(*snap, id, true);
        }
    }
    std::stable_sort(out.begin(), out.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.name < b.name; });
    return out;
}

}  // namespace lumen
