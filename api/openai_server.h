#pragma once
// The OpenAI-compatible HTTP API over a local Engine (cpp-httplib): GET /v1/models,
// POST /v1/chat/completions and /v1/completions (server-sent events with "stream": true),
// GET /health and GET /metrics (Prometheus text). Requests join the engine's persistent batch; a
// client that goes away cancels its request. Errors come in OpenAI's JSON shape.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/runtime/engine.h"

namespace lumen::api {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 23333;                         // 0: any free port (port() says which)
    std::string api_key;                      // empty: none asked
    std::size_t max_body_bytes = 32u << 20;   // larger bodies: 413
    int max_messages = 512;
    int max_images = 16;                      // per request
    int64_t max_image_pixels = 50'000'000;    // per image, from its header
    bool allow_file_urls = false;             // image_url "file://..." read from this machine's disk
    int threads = 128;                        // connections served at once
};

class OpenAiServer {
public:
    // Serves `engine`, loaded from `model_dir`, and binds host:port (throws lumen::Error naming
    // them where it cannot). The engine's owner hands every event it gets to deliver(): the
    // server's requests carry tag().
    OpenAiServer(std::shared_ptr<Engine> engine, const std::filesystem::path& model_dir, const ServerOptions& options);
    // Loads the model folder (as Engine::create; throws lumen::Error) for a server of its own.
    static std::unique_ptr<OpenAiServer> with_own_engine(const std::filesystem::path& model_dir, EngineOptions engine_options,
                                                         const ServerOptions& options);
    // Stops listening and waits for the connections; the engine lives on with its other owners.
    ~OpenAiServer();
    OpenAiServer(const OpenAiServer&) = delete;
    OpenAiServer& operator=(const OpenAiServer&) = delete;

    int port() const;
    std::string url() const;  // http://HOST:PORT/v1
    const std::string& model_id() const;
    uint64_t tag() const;
    // True when `e` belongs to one of the server's requests (which it then takes); any thread.
    bool deliver(const GenerationEvent& e);
    // Serves on this thread until stop() (from another thread or a signal handler's).
    void run();
    // Serves on a thread of the server's own, until stop() or the server goes.
    void start();
    void stop();

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace lumen::api
