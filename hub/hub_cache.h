#pragma once
// The Hugging Face cache as huggingface_hub lays it out, so that Lumen, transformers, LMDeploy and
// vLLM share one copy of each model:
//   <cache>/models--<org>--<name>/blobs/<etag>            file contents, named by their hash
//   <cache>/models--<org>--<name>/snapshots/<commit>/<path>  relative links to the blobs
//   <cache>/models--<org>--<name>/refs/<branch>           the commit a branch pointed to
//   <cache>/.locks/models--<org>--<name>/<etag>.lock      held (flock) while a blob is written
// A blob's etag is the SHA-256 of its content for files kept in Git LFS, else its git blob SHA-1.
// Also where huggingface_hub looks for its settings: the hub's address and the user's token.
#include <filesystem>
#include <optional>
#include <string>

namespace lumen::hub {

// HF_ENDPOINT, else https://huggingface.co (no trailing slash).
std::string default_endpoint();
// HF_TOKEN, else the token file (HF_TOKEN_PATH, else <HF_HOME>/token, HF_HOME defaulting to
// ~/.cache/huggingface); empty when there is none.
std::string default_token();

// "org/name" or "name": true when it has the shape the hub accepts.
bool valid_repo_id(const std::string& repo_id);

// Whether Lumen fetches a repository's file: weights in safetensors, configs, tokenizer and
// processor files, chat templates. Never pickles (.bin, .pt, .pth, .ckpt, .pkl) or other formats.
bool wanted_file(const std::string& path);

class RepoCache {
public:
    RepoCache(std::filesystem::path cache_dir, const std::string& repo_id);

    const std::filesystem::path& dir() const { return dir_; }
    std::filesystem::path blob(const std::string& etag) const { return dir_ / "blobs" / etag; }
    std::filesystem::path incomplete(const std::string& etag) const { return blob(etag).string() + ".incomplete"; }
    std::filesystem::path lock(const std::string& etag) const;
    std::filesystem::path snapshot(const std::string& commit) const { return dir_ / "snapshots" / commit; }
    // The commit refs/<branch> names, if any.
    std::optional<std::string> ref(const std::string& branch) const;

    // Links snapshots/<commit>/<path> to its blob (relative, as huggingface_hub makes them),
    // replacing what was there.
    void link(const std::string& commit, const std::string& path, const std::string& etag) const;
    void set_ref(const std::string& branch, const std::string& commit) const;

private:
    std::filesystem::path cache_;
    std::filesystem::path dir_;
    std::string folder_;  // models--org--name
};

}  // namespace lumen::hub
