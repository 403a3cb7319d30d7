// `lumen-cli serve`: the OpenAI-compatible API over one model (api/openai_server).
#include <csignal>
#include <cstdio>
#include <thread>

#include "api/openai_server.h"
#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/util/error.h"

namespace lumen::cli {
namespace {

api::OpenAiServer* g_server = nullptr;  // stopped by SIGINT / SIGTERM
extern "C" void on_stop_signal(int) {
    // httplib's stop() shuts its listening socket: safe from the signal's thread for this use.
    if (g_server) g_server->stop();
}

bool loopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

}  // namespace

int run_serve(const std::vector<std::string>& argv) {
    const Args args(argv, {"model", "host", "port", "api-key", "max-batch", "device", "dtype", "session-len", "cache-max-entry-count",
                           "weights", "group-size", "quant-policy", "vision-weights", "max-body-mb", "max-images", "max-messages", "threads"},
                    {"help", "allow-file-urls"});
    if (args.flag("help")) {
        std::printf("Usage: lumen-cli serve --model DIR [--host 127.0.0.1] [--port 23333] [--api-key KEY] [--max-batch N]\n"
                    "                       [--device cpu|cuda|auto] [--dtype auto|float32] [--session-len N]\n"
                    "                       [--cache-max-entry-count X] [--max-body-mb 32] [--max-images 16]\n"
                    "                       [--max-messages 512] [--threads 128] [--allow-file-urls]\n\n"
                    "Serves the model over the OpenAI API: GET /v1/models, POST /v1/chat/completions and\n"
                    "/v1/completions (\"stream\": true for server-sent events), GET /health, GET /metrics\n"
                    "(Prometheus). With --api-key every route but /health asks 'Authorization: Bearer KEY'.\n"
                    "Images come as base64 data: URLs (file:// ones with --allow-file-urls). Ctrl+C stops.\n\n%s%s%s",
                    kWeightsHelp, kVisionWeightsHelp, kQuantPolicyHelp);
        return 0;
    }
    EngineOptions engine;
    engine.device = args.value("device").value_or("auto");
    engine.dtype = args.value("dtype").value_or("auto");
    engine.session_len = args.integer("session-len", 0, 0, int64_t(1) << 28);
    engine.cache_max_entry_count = args.number("cache-max-entry-count", engine.cache_max_entry_count);
    engine.max_batch = int32_t(args.integer("max-batch", engine.max_batch, 1, 4096));
    engine.weights = weight_choice(args);
    engine.quant_policy = quant_policy(args);
    engine.image_encoder = vision::image_encoder_factory(vision_weights(args));
    api::ServerOptions options;
    options.host = args.value("host").value_or(options.host);
    options.port = int(args.integer("port", options.port, 0, 65535));
    options.api_key = args.value("api-key").value_or("");
    options.max_body_bytes = std::size_t(args.integer("max-body-mb", 32, 1, 4096)) << 20;
    options.max_images = int(args.integer("max-images", options.max_images, 0, 4096));
    options.max_messages = int(args.integer("max-messages", options.max_messages, 1, 1 << 20));
    options.threads = int(args.integer("threads", options.threads, 2, 4096));
    options.allow_file_urls = args.flag("allow-file-urls");
    if (!loopback(options.host) && options.api_key.empty())
        std::fprintf(stderr, "\n*** WARNING: serving on %s without --api-key: anyone who can reach this machine can use the model. ***\n\n",
                     options.host.c_str());
    const auto owned = api::OpenAiServer::with_own_engine(args.required("model"), engine, options);
    api::OpenAiServer& server = *owned;
    g_server = &server;
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    // The port line is what scripts and tests wait for (with --port 0 it says which port was free).
    std::printf("serving %s at http://%s:%d/v1\n", server.model_id().c_str(), options.host.c_str(), server.port());
    std::fflush(stdout);
    server.run();
    g_server = nullptr;
    return 0;
}

}  // namespace lumen::cli
