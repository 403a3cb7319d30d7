#include "hub/hub_cache.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>

#include "engine/util/error.h"
#include "engine/util/text_file.h"

namespace fs = std::filesystem;

namespace lumen::hub {
namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

std::string trimmed(std::string s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
    std::size_t start = 0;
    while (start < s.size() && std::isspace(static_cast<unsigned char>(s[start]))) ++start;
    return s.substr(start);
}

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

constexpr FileKind kTokenFile{"a token file", 4096};

}  // namespace

std::string default_endpoint() {
    std::string e = env("HF_ENDPOINT");
    if (e.empty()) e = "https://huggingface.co";
    while (!e.empty() && e.back() == '/') e.pop_back();
    return e;
}

std::string default_token() {
    if (const std::string t = trimmed(env("HF_TOKEN")); !t.empty()) return t;
    fs::path file = env("HF_TOKEN_PATH");
    if (file.empty()) {
        const std::string home = env("HF_HOME");
        const std::string xdg = env("XDG_CACHE_HOME");
        file = !home.empty() ? fs::path(home) / "token"
               : !xdg.empty() ? fs::path(xdg) / "huggingface" / "token"
                              : fs::path(env("HOME")) / ".cache" / "huggingface" / "token";
    }
    try {
        return trimmed(read_text_file(file, kTokenFile).value_or(""));
    } catch (const Error&) {
        return {};  // unreadable: as if there were none (a gated model then says it needs one)
    }
}

bool valid_repo_id(const std::string& repo_id) {
    // The hub's rule: letters, digits, '-', '_', '.'; one optional '/'; no "--" or ".." and no
    // leading or trailing '-' or '.' in a part.
    if (repo_id.empty() || repo_id.size() > 96) return false;
    const auto slash = repo_id.find('/');
    if (slash != std::string::npos && repo_id.find('/', slash + 1) != std::string::npos) return false;
    auto part_ok = [](const std::string& p) {
        if (p.empty() || p.find("--") != std::string::npos || p.find("..") != std::string::npos) return false;
        if (p.front() == '-' || p.front() == '.' || p.back() == '-' || p.back() == '.') return false;
        return std::all_of(p.begin(), p.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
        });
    };
    if (slash == std::string::npos) return part_ok(repo_id);
    return part_ok(repo_id.substr(0, slash)) && part_ok(repo_id.substr(slash + 1));
}

bool wanted_file(const std::string& path) {
    std::string name = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (name.empty() || name.front() == '.') return false;
    for (const char* tail : {".safetensors", ".json", ".jinja", ".tiktoken"})
        if (ends_with(name, tail)) return true;
    // SentencePiece and BPE vocabularies under their usual names.
    for (const char* exact : {"tokenizer.model", "merges.txt", "vocab.txt", "spiece.model", "license", "license.txt", "license.md"})
        if (name == exact) return true;
    return false;
}

RepoCache::RepoCache(fs::path cache_dir, const std::string& repo_id) : cache_(std::move(cache_dir)) {
    if (!valid_repo_id(repo_id)) throw Error("'" + repo_id + "' is not a Hugging Face repository id (org/name)");
    folder_ = "models--" + repo_id;
    for (std::size_t at; (at = folder_.find('/')) != std::string::npos;) folder_.replace(at, 1, "--");
    dir_ = cache_ / folder_;
}

fs::path RepoCache::lock(const std::string& etag) const { return cache_ / ".locks" / folder_ / (etag + ".lock"); }

std::optional<std::string> RepoCache::ref(const std::string& branch) const {
    try {
        const auto text = read_text_file(dir_ / "refs" / branch, kTokenFile);
        if (!text) return std::nullopt;
        const std::string commit = trimmed(*text);
        return commit.empty() ? std::nullopt : std::optional<std::string>(commit);
    } catch (const Error&) {
        return std::nullopt;
    }
}

void RepoCache::link(const std::string& commit, const std::string& path, const std::string& etag) const {
    const fs::path where = snapshot(commit) / path;
    fs::create_directories(where.parent_path());
    std::error_code ec;
    fs::remove(where, ec);
    // ../../blobs/<etag> from snapshots/<commit>/, one more ../ per folder in `path`.
    fs::create_symlink(fs::relative(blob(etag), where.parent_path()), where);
}

void RepoCache::set_ref(const std::string& branch, const std::string& commit) const {
    const fs::path file = dir_ / "refs" / branch;
    fs::create_directories(file.parent_path());
    const fs::path temporary = file.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out << commit;  // no newline, as huggingface_hub writes it
        if (!out) throw Error("cannot write " + file.string());
    }
    fs::rename(temporary, file);
}

}  // namespace lumen::hub
