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
    // Loads the model folder (as Engine::create; throws lumen::Error) and binds host:port
    // (throws lumen::Error naming them where it cannot).
    OpenAiServer(const std::filesystem::path& model_dir, EngineOptions engine_options, const ServerOptions& options);
    ~OpenAiServer();
    OpenAiServer(const OpenAiServer&) = delete;
    OpenAiServer& operator=(const OpenAiServer&) = delete;

    int port() const;
    const std::string& model_id() const;
    // Serves until stop() (from another thread or a signal handler's thread).
    void run();
    void stop();

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace lumen::api
