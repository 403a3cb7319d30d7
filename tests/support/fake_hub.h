#pragma once
// A Hugging Face Hub on the loopback for the downloader's tests (see FakeHub).
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lumen::test {

// A Hugging Face Hub on the loopback for tests: the parts of its HTTP API that huggingface_hub and
// Lumen's downloader use, serving repositories held in memory, with faults to inject.
//
// Routes: GET /api/models (search), GET /api/models/{id}[/revision/{rev}], GET
// /api/models/{id}/tree/{rev}[/{path}], HEAD/GET /{id}/resolve/{rev}/{path}, and HEAD/GET
// /cdn/{sha256}?repo=..&file=.. where LFS files redirect to (the query, like a signed CDN URL's,
// says which file the bytes belong to, so that equal contents in two repos are counted apart).
// Ranges: one "bytes=N-", "bytes=N-M" or "bytes=-N" gives 206; a start at or past the end 416;
// several ranges are ignored (200, whole body); a malformed header httplib answers 416 itself (unrecorded).
class FakeHub {
public:
    FakeHub();   // listening on 127.0.0.1, a free port, serving on its own thread
    ~FakeHub();  // stops and joins
    FakeHub(const FakeHub&) = delete;
    FakeHub& operator=(const FakeHub&) = delete;
    std::string endpoint() const;  // "http://127.0.0.1:PORT" (what HF_ENDPOINT would be)

    struct File {
        std::string path;   // in the repository, e.g. "config.json" or "sub/dir/x.json"
        std::string bytes;  // content
        bool lfs = false;   // stored with Git LFS (weights, tokenizer.model): resolved through a redirect
    };
    // A repository `repo_id` ("org/name") whose branch "main" points to commit `commit` (40 lowercase hex).
    // Adding a repo_id again replaces that repository.
    // gated: requests without the token (see require_token) get 401 with X-Error-Code: GatedRepo.
    void add_repo(const std::string& repo_id, const std::string& commit, std::vector<File> files,
                  const std::string& pipeline_tag = "text-generation", long downloads = 0);
    // Every file of `folder` (recursively); *.safetensors, *.model, *.bin and files over 10 MiB are LFS.
    void add_repo_from_folder(const std::string& repo_id, const std::string& commit, const std::filesystem::path& folder,
                              const std::string& pipeline_tag = "text-generation", long downloads = 0);
    // Faults (they may be set before or after the repository is added).
    // The next `times` content downloads of that file close the connection after `bytes` bytes of body (counted
    // from the start of what that response sends; a response shorter than that is sent whole).
    void cut_after(const std::string& repo_id, const std::string& path, std::size_t bytes, int times = 1);
    // Its content downloads send other bytes (same length) than the hash the API and headers announce.
    void corrupt(const std::string& repo_id, const std::string& path);
    // Gated: without "Authorization: Bearer <token>", 401 (X-Error-Code: GatedRepo); with a different
    // token, 403 (X-Error-Code: GatedRepo). Searching and the /cdn route need no token.
    // The revision API announces `size` bytes for the file (its content stays as it is).
    void announce_size(const std::string& repo_id, const std::string& path, std::size_t size);
    void require_token(const std::string& repo_id, const std::string& token);
    // What it was asked.
    // GETs that sent file content (200 or 206) for that file.
    int content_requests(const std::string& repo_id, const std::string& path) const;
    // Each content GET's Range header value ("" when none), in order; a GET answered 416 is listed too.
    std::vector<std::string> ranges_asked(const std::string& repo_id, const std::string& path) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace lumen::test
