#include "tests/support/fake_hub.h"

#include <httplib.h>
#include <openssl/evp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

namespace lumen::test {
namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

constexpr const char* kLastModified = "2024-01-01T00:00:00.000Z";
constexpr std::size_t kLfsThreshold = 10u * 1024 * 1024;
constexpr std::size_t kChunk = 64 * 1024;

std::string hex(const unsigned char* data, unsigned n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < n; ++i) {
        out += digits[data[i] >> 4];
        out += digits[data[i] & 15];
    }
    return out;
}

std::string digest(const EVP_MD* md, const std::string& bytes) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (EVP_Digest(bytes.data(), bytes.size(), out, &n, md, nullptr) != 1)
        throw std::runtime_error("FakeHub: EVP_Digest failed");
    return hex(out, n);
}

std::string sha256_hex(const std::string& bytes) { return digest(EVP_sha256(), bytes); }
std::string sha1_hex(const std::string& bytes) { return digest(EVP_sha1(), bytes); }

// The id git gives a blob of these bytes.
std::string git_blob_sha1(const std::string& bytes) {
    std::string object = "blob " + std::to_string(bytes.size());
    object += '\0';
    object += bytes;
    return sha1_hex(object);
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// For a query parameter's value: all but unreserved characters as %XX.
std::string percent_encode(const std::string& s) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += digits[c >> 4];
            out += digits[c & 15];
        }
    }
    return out;
}

std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const Json& body) {
    res.status = status;
    res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, const char* code, const std::string& message) {
    if (code) res.set_header("X-Error-Code", code);
    send_json(res, status, Json{{"error", message}});
}

// httplib would apply the request's ranges to whatever body a handler sets (even to an error's, and
// without bounds checks in 0.11); the hub answers ranges itself, so it takes them away. The Request
// httplib passes as const is its own non-const object, so this is well defined.
void own_ranges(const httplib::Request& req) { const_cast<httplib::Request&>(req).ranges.clear(); }

struct Blob {
    std::string path;
    std::shared_ptr<const std::string> bytes;  // shared with responses still streaming
    bool lfs = false;
    std::string git_sha1;  // of what git stores: the pointer for LFS, else the content
    std::string sha256;    // of the content (LFS only)
    std::size_t pointer_size = 0;
};

struct Repo {
    std::string id;
    std::string commit;
    std::string pipeline_tag;
    long downloads = 0;
    std::vector<Blob> files;  // sorted by path
};

struct Fault {
    std::size_t cut_bytes = 0;
    int cut_times = 0;
    bool corrupt = false;
    std::size_t announced_size = 0;  // the API's size for the file, when not 0
};

struct Stats {
    int content = 0;
    std::vector<std::string> ranges;
};

using Key = std::pair<std::string, std::string>;  // (repo id, path)

// One byte range of a body of `size` bytes: [start, start + length).
struct Span {
    std::size_t start = 0;
    std::size_t length = 0;
    bool partial = false;
    bool unsatisfiable = false;
};

Span parse_range(const std::string& header, std::size_t size) {
    Span whole{0, size, false, false};
    const std::string prefix = "bytes=";
    if (header.rfind(prefix, 0) != 0) return whole;
    const std::string spec = header.substr(prefix.size());
    const auto dash = spec.find('-');
    if (dash == std::string::npos || spec.find(',') != std::string::npos) return whole;  // several ranges: ignored
    const std::string first = spec.substr(0, dash), last = spec.substr(dash + 1);
    auto digits = [](const std::string& s) {
        return !s.empty() && s.size() < 19 &&
               std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
    };
    if (first.empty()) {  // suffix: the last N bytes
        if (!digits(last)) return whole;
        const std::size_t n = std::stoull(last);
        if (n == 0 || size == 0) return Span{0, 0, false, true};
        const std::size_t count = std::min(n, size);
        return Span{size - count, count, true, false};
    }
    if (!digits(first) || (!last.empty() && !digits(last))) return whole;
    const std::size_t start = std::stoull(first);
    if (!last.empty() && std::stoull(last) < start) return whole;  // invalid: ignored, as RFC 9110 says
    if (start >= size) return Span{0, 0, false, true};
    const std::size_t end = last.empty() ? size : std::min<std::size_t>(std::stoull(last) + 1, size);  // exclusive
    return Span{start, end - start, true, false};
}

Json model_summary(const Repo& repo, bool gated) {
    Json tags = Json::array({"safetensors"});
    if (repo.pipeline_tag == "image-text-to-text") tags.push_back("image-text-to-text");
    Json j;
    j["_id"] = sha1_hex("model " + repo.id).substr(0, 24);
    j["id"] = repo.id;
    j["modelId"] = repo.id;
    j["sha"] = repo.commit;
    j["pipeline_tag"] = repo.pipeline_tag;
    j["tags"] = tags;
    j["downloads"] = repo.downloads;
    j["likes"] = 0;
    j["gated"] = gated ? Json("manual") : Json(false);
    j["private"] = false;
    j["lastModified"] = kLastModified;
    return j;
}

bool has_tag(const Repo& repo, const std::string& tag) { return tag == "safetensors" || tag == repo.pipeline_tag; }

}  // namespace

struct FakeHub::Impl {
    httplib::Server server;
    std::thread thread;
    std::atomic<bool> finished{false};
    int port = 0;

    mutable std::mutex mutex;
    std::map<std::string, Repo> repos;
    std::map<std::string, std::string> tokens;  // gated repos
    std::map<Key, Fault> faults;
    std::map<Key, Stats> stats;

    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port); }

    void routes();

    // Under the lock: the repository, or nullptr with `res` filled where it is unknown or gated
    // without the right token.
    const Repo* admit(const httplib::Request& req, httplib::Response& res, const std::string& id) const {
        const auto it = repos.find(id);
        if (it == repos.end()) {
            send_error(res, 401, "RepoNotFound", "Repository not found");
            return nullptr;
        }
        const auto token = tokens.find(id);
        if (token != tokens.end()) {
            const std::string restricted = "Access to model " + id +
                                           " is restricted. You must have access to it and be authenticated to access "
                                           "it. Please log in.";
            if (!req.has_header("Authorization")) {
                send_error(res, 401, "GatedRepo", restricted);
                return nullptr;
            }
            if (req.get_header_value("Authorization") != "Bearer " + token->second) {
                send_error(res, 403, "GatedRepo", restricted);
                return nullptr;
            }
        }
        return &it->second;
    }

    static bool revision_ok(const Repo& repo, const std::string& rev, httplib::Response& res) {
        if (rev == "main" || rev == repo.commit) return true;
        send_error(res, 404, "RevisionNotFound", "Invalid rev id: " + rev);
        return false;
    }

    void model_info(const httplib::Request& req, httplib::Response& res, const std::string& id,
                    const std::string& rev) {
        std::lock_guard lock(mutex);
        const Repo* repo = admit(req, res, id);
        if (!repo || !revision_ok(*repo, rev, res)) return;
        Json j = model_summary(*repo, tokens.count(id) > 0);
        Json siblings = Json::array();
        std::size_t total = 0;
        for (const Blob& b : repo->files) {
            const auto fault = faults.find(Key{id, b.path});
            const std::size_t size = fault != faults.end() && fault->second.announced_size ? fault->second.announced_size : b.bytes->size();
            Json s;
            s["rfilename"] = b.path;
            s["size"] = size;
            s["blobId"] = b.git_sha1;
            if (b.lfs) s["lfs"] = Json{{"sha256", b.sha256}, {"size", size}, {"pointerSize", b.pointer_size}};
            siblings.push_back(std::move(s));
            total += size;
        }
        j["siblings"] = std::move(siblings);
        j["usedStorage"] = total;
        send_json(res, 200, j);
    }

    void tree(const httplib::Request& req, httplib::Response& res, const std::string& id, const std::string& rev,
              std::string under) {
        std::lock_guard lock(mutex);
        const Repo* repo = admit(req, res, id);
        if (!repo || !revision_ok(*repo, rev, res)) return;
        while (!under.empty() && under.back() == '/') under.pop_back();
        auto inside = [&](const std::string& p) { return under.empty() || p.rfind(under + "/", 0) == 0; };
        std::map<std::string, Json> entries;  // by path, so folders come before what they hold
        for (const Blob& b : repo->files) {
            if (!inside(b.path)) continue;
            Json f;
            f["type"] = "file";
            f["oid"] = b.git_sha1;
            f["size"] = b.bytes->size();
            f["path"] = b.path;
            if (b.lfs) f["lfs"] = Json{{"oid", b.sha256}, {"size", b.bytes->size()}, {"pointerSize", b.pointer_size}};
            entries[b.path] = std::move(f);
            for (auto slash = b.path.find('/'); slash != std::string::npos; slash = b.path.find('/', slash + 1)) {
                const std::string dir = b.path.substr(0, slash);
                if (!inside(dir)) continue;
                entries[dir] = Json{
                    {"type", "directory"}, {"oid", sha1_hex("tree " + id + "/" + dir)}, {"size", 0}, {"path", dir}};
            }
        }
        if (!under.empty() && entries.empty()) return send_error(res, 404, "EntryNotFound", "Entry not found");
        Json out = Json::array();
        for (auto& [path, entry] : entries) out.push_back(std::move(entry));
        send_json(res, 200, out);
    }

    void search(const httplib::Request& req, httplib::Response& res) {
        const std::string text = lower(req.get_param_value("search"));
        const std::string filter = req.get_param_value("filter");
        long limit = 20;
        if (req.has_param("limit")) {
            try {
                limit = std::stol(req.get_param_value("limit"));
            } catch (const std::exception&) {
                limit = 20;
            }
        }
        std::lock_guard lock(mutex);
        std::vector<const Repo*> found;
        for (const auto& [id, repo] : repos) {
            if (lower(id).find(text) == std::string::npos) continue;
            if (!filter.empty() && !has_tag(repo, filter)) continue;
            found.push_back(&repo);
        }
        std::stable_sort(found.begin(), found.end(),
                         [](const Repo* a, const Repo* b) { return a->downloads > b->downloads; });
        Json out = Json::array();
        for (const Repo* r : found) {
            if (static_cast<long>(out.size()) >= limit) break;
            Json j = model_summary(*r, tokens.count(r->id) > 0);
            j.erase("sha");  // the listing carries no commit
            out.push_back(std::move(j));
        }
        send_json(res, 200, out);
    }

    // Sends `content` (or its range), applying the faults set for `key`, and records the request.
    void send_content(const httplib::Request& req, httplib::Response& res, const Key& key,
                      std::shared_ptr<const std::string> content) {
        const bool get = req.method == "GET";
        const std::string range_header = req.get_header_value("Range");
        const Span span = req.has_header("Range") ? parse_range(range_header, content->size())
                                                  : Span{0, content->size(), false, false};
        res.set_header("Accept-Ranges", "bytes");
        std::optional<std::size_t> cut;
        bool corrupt = false;
        {
            std::lock_guard lock(mutex);
            if (get) {
                Stats& s = stats[key];
                s.ranges.push_back(range_header);
                if (!span.unsatisfiable) ++s.content;
                const auto f = faults.find(key);
                if (f != faults.end() && !span.unsatisfiable) {
                    corrupt = f->second.corrupt;
                    if (f->second.cut_times > 0) {
                        --f->second.cut_times;
                        cut = f->second.cut_bytes;
                    }
                }
            }
        }
        if (span.unsatisfiable) {
            res.status = 416;
            res.set_header("Content-Range", "bytes */" + std::to_string(content->size()));
            return;
        }
        res.status = span.partial ? 206 : 200;
        if (span.partial)
            res.set_header("Content-Range", "bytes " + std::to_string(span.start) + "-" +
                                                std::to_string(span.start + span.length - 1) + "/" +
                                                std::to_string(content->size()));
        if (span.length == 0) {  // an empty file: httplib would stream a provider of length 0 without a length
            res.set_header("Content-Type", "application/octet-stream");
            return;
        }
        const std::size_t limit = cut ? std::min(*cut, span.length) : span.length;
        // Stopping short (returning false) makes httplib close the connection with the body incomplete.
        res.set_content_provider(
            span.length, "application/octet-stream",
            [content, start = span.start, limit, corrupt](std::size_t offset, std::size_t, httplib::DataSink& sink) {
                if (offset >= limit) return false;
                const std::size_t n = std::min(kChunk, limit - offset);
                std::string chunk = content->substr(start + offset, n);
                if (corrupt)
                    for (char& c : chunk) c = static_cast<char>(c ^ 0x5a);
                return sink.write(chunk.data(), chunk.size());
            });
    }

    void resolve(const httplib::Request& req, httplib::Response& res, const std::string& id, const std::string& rev,
                 const std::string& path) {
        std::shared_ptr<const std::string> content;
        {
            std::lock_guard lock(mutex);
            const Repo* repo = admit(req, res, id);
            if (!repo || !revision_ok(*repo, rev, res)) return;
            const auto it =
                std::find_if(repo->files.begin(), repo->files.end(), [&](const Blob& b) { return b.path == path; });
            if (it == repo->files.end()) return send_error(res, 404, "EntryNotFound", "Entry not found");
            res.set_header("X-Repo-Commit", repo->commit);
            res.set_header("ETag", "\"" + it->git_sha1 + "\"");
            if (it->lfs) {
                const std::string location =
                    endpoint() + "/cdn/" + it->sha256 + "?repo=" + percent_encode(id) + "&file=" + percent_encode(path);
                res.status = 302;
                res.set_header("Location", location);
                res.set_header("X-Linked-Etag", "\"" + it->sha256 + "\"");
                res.set_header("X-Linked-Size", std::to_string(it->bytes->size()));
                res.set_content("Found. Redirecting to " + location, "text/plain; charset=utf-8");
                return;
            }
            content = it->bytes;
        }
        send_content(req, res, Key{id, path}, std::move(content));
    }

    void cdn(const httplib::Request& req, httplib::Response& res, const std::string& sha256) {
        const std::string want_repo = req.get_param_value("repo"), want_file = req.get_param_value("file");
        std::optional<Key> key;
        std::shared_ptr<const std::string> content;
        {
            std::lock_guard lock(mutex);
            for (const auto& [id, repo] : repos) {
                if (!want_repo.empty() && id != want_repo) continue;
                for (const Blob& b : repo.files) {
                    if (!b.lfs || b.sha256 != sha256 || (!want_file.empty() && b.path != want_file)) continue;
                    key = Key{id, b.path};
                    content = b.bytes;
                    break;
                }
                if (key) break;
            }
        }
        if (!key) return send_error(res, 404, nullptr, "Not found");
        res.set_header("ETag", "\"" + sha256 + "\"");
        send_content(req, res, *key, std::move(content));
    }
};

void FakeHub::Impl::routes() {
    using Req = httplib::Request;
    using Res = httplib::Response;
    // Every handler answers ranges itself (see own_ranges); HEAD comes to the Get handlers too.
    auto route = [this](const char* pattern, std::function<void(const Req&, Res&, const std::string&)> handle) {
        server.Get(pattern, [handle](const Req& req, Res& res) {
            own_ranges(req);
            handle(req, res, req.matches.size() > 2 ? req.matches[1].str() + "/" + req.matches[2].str() : "");
        });
    };
    route(R"(/api/models)", [this](const Req& req, Res& res, const std::string&) { search(req, res); });
    route(R"(/api/models/([^/]+)/([^/]+))",
          [this](const Req& req, Res& res, const std::string& id) { model_info(req, res, id, "main"); });
    route(R"(/api/models/([^/]+)/([^/]+)/revision/(.+))",
          [this](const Req& req, Res& res, const std::string& id) { model_info(req, res, id, req.matches[3].str()); });
    route(R"(/api/models/([^/]+)/([^/]+)/tree/([^/]+)(?:/(.*))?)",
          [this](const Req& req, Res& res, const std::string& id) {
              tree(req, res, id, req.matches[3].str(), req.matches[4].str());
          });
    route(R"(/cdn/([0-9a-f]{64}))",
          [this](const Req& req, Res& res, const std::string&) { cdn(req, res, req.matches[1].str()); });
    route(R"(/([^/]+)/([^/]+)/resolve/([^/]+)/(.+))", [this](const Req& req, Res& res, const std::string& id) {
        resolve(req, res, id, req.matches[3].str(), req.matches[4].str());
    });
}

FakeHub::FakeHub() : impl_(std::make_unique<Impl>()) {
    impl_->routes();
    // A short keep-alive so that stopping does not wait long on clients' idle connections.
    impl_->server.set_keep_alive_timeout(1);
    impl_->port = impl_->server.bind_to_any_port("127.0.0.1");
    if (impl_->port <= 0) throw std::runtime_error("FakeHub: cannot bind a port on 127.0.0.1");
    impl_->thread = std::thread([impl = impl_.get()] {
        impl->server.listen_after_bind();
        impl->finished = true;
    });
    // stop() does nothing before the server runs, so the destructor could hang: wait until it does.
    while (!impl_->server.is_running() && !impl_->finished) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!impl_->server.is_running()) {
        impl_->thread.join();
        throw std::runtime_error("FakeHub: the server did not start");
    }
}

FakeHub::~FakeHub() {
    impl_->server.stop();
    if (impl_->thread.joinable()) impl_->thread.join();
}

std::string FakeHub::endpoint() const { return impl_->endpoint(); }

void FakeHub::add_repo(const std::string& repo_id, const std::string& commit, std::vector<File> files,
                       const std::string& pipeline_tag, long downloads) {
    Repo repo{repo_id, commit, pipeline_tag, downloads, {}};
    for (File& f : files) {
        Blob b;
        b.path = f.path;
        b.lfs = f.lfs;
        if (f.lfs) {
            b.sha256 = sha256_hex(f.bytes);
            const std::string pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + b.sha256 +
                                        "\nsize " + std::to_string(f.bytes.size()) + "\n";
            b.git_sha1 = git_blob_sha1(pointer);
            b.pointer_size = pointer.size();
        } else {
            b.git_sha1 = git_blob_sha1(f.bytes);
        }
        b.bytes = std::make_shared<const std::string>(std::move(f.bytes));
        repo.files.push_back(std::move(b));
    }
    std::sort(repo.files.begin(), repo.files.end(), [](const Blob& a, const Blob& b) { return a.path < b.path; });
    std::lock_guard lock(impl_->mutex);
    impl_->repos[repo_id] = std::move(repo);
}

void FakeHub::add_repo_from_folder(const std::string& repo_id, const std::string& commit, const fs::path& folder,
                                   const std::string& pipeline_tag, long downloads) {
    std::vector<File> files;
    for (const auto& entry : fs::recursive_directory_iterator(folder)) {
        if (!entry.is_regular_file()) continue;
        std::ifstream in(entry.path(), std::ios::binary);
        if (!in) throw std::runtime_error("FakeHub: cannot read " + entry.path().string());
        std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        const std::string ext = entry.path().extension().string();
        const bool lfs = ext == ".safetensors" || ext == ".model" || ext == ".bin" || bytes.size() > kLfsThreshold;
        files.push_back(File{fs::relative(entry.path(), folder).generic_string(), std::move(bytes), lfs});
    }
    add_repo(repo_id, commit, std::move(files), pipeline_tag, downloads);
}

void FakeHub::cut_after(const std::string& repo_id, const std::string& path, std::size_t bytes, int times) {
    std::lock_guard lock(impl_->mutex);
    Fault& f = impl_->faults[Key{repo_id, path}];
    f.cut_bytes = bytes;
    f.cut_times = std::max(times, 0);
}

void FakeHub::corrupt(const std::string& repo_id, const std::string& path) {
    std::lock_guard lock(impl_->mutex);
    impl_->faults[Key{repo_id, path}].corrupt = true;
}

void FakeHub::announce_size(const std::string& repo_id, const std::string& path, std::size_t size) {
    std::lock_guard lock(impl_->mutex);
    impl_->faults[Key{repo_id, path}].announced_size = size;
}

void FakeHub::require_token(const std::string& repo_id, const std::string& token) {
    std::lock_guard lock(impl_->mutex);
    impl_->tokens[repo_id] = token;
}

int FakeHub::content_requests(const std::string& repo_id, const std::string& path) const {
    std::lock_guard lock(impl_->mutex);
    const auto it = impl_->stats.find(Key{repo_id, path});
    return it == impl_->stats.end() ? 0 : it->second.content;
}

std::vector<std::string> FakeHub::ranges_asked(const std::string& repo_id, const std::string& path) const {
    std::lock_guard lock(impl_->mutex);
    const auto it = impl_->stats.find(Key{repo_id, path});
    return it == impl_->stats.end() ? std::vector<std::string>{} : it->second.ranges;
}

}  // namespace lumen::test
