// `lumen-cli generate` (raw completion) and `lumen-cli chat` (the model's chat template, multi-turn).
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/model/chat_template_choice.h"
#include "engine/text/chat_template.h"
#include "engine/model/generation_config.h"
#include "engine/runtime/engine.h"
#include "engine/util/error.h"
#include "engine/text/tokenizer.h"
#include "vision/encoder.h"
#include "vision/prompt.h"

namespace lumen::cli {
namespace {

const std::set<std::string> kEngineOptions{"model", "device", "session-len", "cache-max-entry-count", "max-new-tokens",
                                           "temperature", "top-k", "top-p", "min-p", "repetition-penalty", "seed", "weights", "group-size",
                                           "quant-policy", "vision-weights"};

constexpr const char* kEngineHelp =
    "  --model DIR                   a Hugging Face model folder\n"
    "  --device cpu|cuda|auto        where to run (default auto)\n"
    "  --session-len N               context length (default: the model's max_position_embeddings)\n"
    "  --cache-max-entry-count X     KV cache: share of free memory (<1) or a number of blocks (>=1)\n"
    "  --max-new-tokens N            longest reply (default 256 for generate, 1024 for chat)\n"
    "  --temperature T               0 is greedy; default from the model's generation_config.json\n"
    "  --top-k K  --top-p P  --min-p P  --repetition-penalty R  --seed S\n"
    "  --image FILE                  an image (repeatable) for a vision-language model\n";

// The prompt's ids with the --image files in place of its image placeholders.
struct Prompt {
    std::vector<int32_t> ids;
    std::vector<PromptImage> images;
};
Prompt with_images(const Engine& engine, const std::filesystem::path& dir, const std::string& text,
                   const std::vector<std::string>& files, const EncodeOptions& options) {
    if (files.empty()) return {engine.tokenizer().encode(text, options), {}};
    if (!engine.image_encoder())
        throw Error(dir.filename().string() + " reads text only; --image needs a vision-language model (LLaVA, InternVL)");
    const vision::VisionConfig vc = vision::load_vision_config(dir, engine.model_config(), &engine.tokenizer());
    std::vector<vision::PreparedImage> images;
    for (const auto& f : files) {
        const std::vector<uint8_t> bytes = vision::load_image_bytes(f);  // its errors name the file
        try {
            images.push_back(vision::prepare_image(bytes, vc));
        } catch (const Error& e) {
            throw Error(f + ": " + e.what());
        }
    }
    auto prepared = vision::expand_prompt(text, images, vc, engine.tokenizer(), options);
    return {std::move(prepared.ids), std::move(prepared.images)};
}

EngineOptions engine_options(const Args& args) {
    EngineOptions o;
    o.image_encoder = vision::image_encoder_factory(vision_weights(args));
    o.device = args.value("device").value_or("auto");
    o.session_len = args.integer("session-len", 0, 0, int64_t(1) << 28);
    o.cache_max_entry_count = args.number("cache-max-entry-count", o.cache_max_entry_count);
    o.weights = weight_choice(args);
    o.quant_policy = quant_policy(args);
    return o;
}

SamplingParams sampling(const Args& args, const std::filesystem::path& dir) {
    SamplingParams p = load_generation_config(dir);
    p.temperature = float(args.number("temperature", p.temperature));
    p.top_k = int32_t(args.integer("top-k", p.top_k, 0, std::numeric_limits<int32_t>::max()));
    p.top_p = float(args.number("top-p", p.top_p));
    p.min_p = float(args.number("min-p", p.min_p));
    p.repetition_penalty = float(args.number("repetition-penalty", p.repetition_penalty));
    p.seed = uint64_t(args.integer("seed", 0, 0, std::numeric_limits<int64_t>::max()));
    if (p.temperature < 0 || p.top_p <= 0 || p.top_p > 1 || p.min_p < 0 || p.min_p > 1 || p.top_k < 0 ||
        p.repetition_penalty <= 0)
        throw Error("sampling options out of range (temperature >= 0, 0 < top-p <= 1, 0 <= min-p <= 1, top-k >= 0, "
                    "repetition-penalty > 0)");
    return p;
}

// Collects one request's events; wait() returns its final event.
class Reply {
public:
    explicit Reply(std::function<void(const std::string&)> on_text = {}) : on_text_(std::move(on_text)) {}

    void on_event(const GenerationEvent& e) {
        if (on_text_ && !e.text.empty()) on_text_(e.text);
        std::lock_guard lock(mutex_);
        text_ += e.text;
        ids_.insert(ids_.end(), e.ids.begin(), e.ids.end());
        if (e.finish != FinishReason::None) {
            final_ = e;
            done_.notify_all();
        }
    }
    // Waits for the end, calling `poll` every 50 ms (to notice Ctrl+C).
    GenerationEvent wait(const std::function<void()>& poll = {}) {
        std::unique_lock lock(mutex_);
        while (!done_.wait_for(lock, std::chrono::milliseconds(50), [&] { return final_.finish != FinishReason::None; }))
            if (poll) {
                lock.unlock();
                poll();
                lock.lock();
            }
        return final_;
    }
    void reset() {
        std::lock_guard lock(mutex_);
        text_.clear();
        ids_.clear();
        final_ = GenerationEvent{};
    }
    std::string text() const {
        std::lock_guard lock(mutex_);
        return text_;
    }
    std::vector<int32_t> ids() const {
        std::lock_guard lock(mutex_);
        return ids_;
    }

private:
    std::function<void(const std::string&)> on_text_;
    mutable std::mutex mutex_;
    std::condition_variable done_;
    std::string text_;
    std::vector<int32_t> ids_;
    GenerationEvent final_;
};

nlohmann::json timings_json(const Timings& t) {
    return {{"prompt_tokens", t.prompt_tokens},
            {"reused_tokens", t.reused_tokens},
            {"queue_ms", t.queue_ms},
            {"prefill_ms", t.prefill_ms},
            {"first_token_ms", t.first_token_ms},
            {"generated_tokens", t.generated_tokens},
            {"decode_ms", t.decode_ms},
            {"decode_tokens_per_second", t.decode_tokens_per_second}};
}

void write_out(const std::string& s) {
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
}

std::atomic<bool> g_interrupted{false};

extern "C" void on_sigint(int) { g_interrupted = true; }

void install_sigint() {
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a pending read returns so the prompt can react
    sigaction(SIGINT, &sa, nullptr);
}

}  // namespace

int run_generate(const std::vector<std::string>& argv) {
    std::set<std::string> valued = kEngineOptions;
    valued.insert({"prompt", "image"});
    const Args args(argv, valued, {"json", "help"}, {"image"});
    if (args.flag("help")) {
        std::printf("Usage: lumen-cli generate --model DIR --prompt TEXT [options] [--json]\n\n"
                    "Continues TEXT (no chat template; tokenized as a user's prompt: BOS as the tokenizer\n"
                    "config says, special-token strings recognised) and streams the text to stdout. --json\n"
                    "prints one JSON object as the last line instead: prompt_ids, generated_ids, text,\n"
                    "finish_reason and timings. Each <image> in TEXT takes the next --image.\n\n%s%s%s%s",
                    kEngineHelp, kWeightsHelp, kVisionWeightsHelp, kQuantPolicyHelp);
        return 0;
    }
    const std::filesystem::path dir = args.required("model");
    const std::string prompt = args.required("prompt");
    const bool json = args.flag("json");
    Reply reply(json ? std::function<void(const std::string&)>() : write_out);
    const auto engine = Engine::create(dir, engine_options(args), [&](const GenerationEvent& e) { reply.on_event(e); });
    GenerationRequest request;
    Prompt p = with_images(*engine, dir, prompt, args.values("image"), {});
    request.prompt = std::move(p.ids);
    request.images = std::move(p.images);
    request.sampling = sampling(args, dir);
    request.max_new_tokens = int32_t(args.integer("max-new-tokens", 256, 1, std::numeric_limits<int32_t>::max()));
    install_sigint();
    const RequestId id = engine->submit(request);
    const GenerationEvent end = reply.wait([&] {
        if (g_interrupted.exchange(false)) engine->cancel(id);
    });
    if (end.finish == FinishReason::Error) throw Error(end.error);
    if (json) {
        const nlohmann::json out{{"prompt_ids", request.prompt},
                                 {"generated_ids", reply.ids()},
                                 {"text", reply.text()},
                                 {"finish_reason", finish_reason_name(end.finish)},
                                 {"device", engine->device_name()},
                                 {"weights", engine->weights()},
                                 {"kv_cache", engine->kv_cache()},
                                 {"timings", timings_json(end.timings)}};
        std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
        write_out("\n");
    }
    return 0;
}

int run_chat(const std::vector<std::string>& argv) {
    std::set<std::string> valued = kEngineOptions;
    valued.insert({"system", "prompt", "template", "image"});
    const Args args(argv, valued, {"help"}, {"image"});
    if (args.flag("help")) {
        std::printf("Usage: lumen-cli chat --model DIR [--system TEXT] [--prompt TEXT] [--template NAME] [options]\n\n"
                    "A conversation with the model through its chat template, streamed to the terminal. Type a\n"
                    "message and press Enter; Ctrl+C stops a reply, /reset starts over, /exit or Ctrl+D quits.\n"
                    "--prompt answers one message and exits. --template overrides the chat template (%s).\n"
                    "--image files go with the first message, placed as the model's template places images.\n\n%s%s%s%s",
                    ChatTemplate::names().c_str(), kEngineHelp, kWeightsHelp, kVisionWeightsHelp, kQuantPolicyHelp);
        return 0;
    }
    const std::filesystem::path dir = args.required("model");
    Reply reply(write_out);
    const auto engine = Engine::create(dir, engine_options(args), [&](const GenerationEvent& e) { reply.on_event(e); });
    const Tokenizer& tok = engine->tokenizer();
    ChatTemplate chat = chat_template_for(engine->model_config(), tok);
    if (const auto name = args.value("template")) {
        const auto t = ChatTemplate::by_name(*name);
        if (!t) throw Error("unknown chat template '" + *name + "' (" + ChatTemplate::names() + ")");
        chat = *t;
    }
    const SamplingParams params = sampling(args, dir);
    const int32_t max_new = int32_t(args.integer("max-new-tokens", 1024, 1, std::numeric_limits<int32_t>::max()));
    std::vector<int32_t> stop_ids;
    for (const auto& s : chat.stop_tokens())
        if (const auto id = tok.token_id(s)) stop_ids.push_back(*id);

    std::vector<ChatMessage> messages;
    std::vector<std::string> images = args.values("image");
    if (const auto system = args.value("system")) messages.push_back({"system", *system, 0});
    const std::size_t first_turn = messages.size();
    const bool once = args.value("prompt").has_value();
    const bool tty = isatty(STDIN_FILENO);
    install_sigint();
    if (!once && tty)
        std::fprintf(stderr, "Lumen chat: %s (weights: %s; KV cache: %s) on %s, template %s. Ctrl+C stops a reply; /reset starts over; "
                     "/exit quits.\n",
                     dir.filename().c_str(), engine->weights().c_str(), engine->kv_cache().c_str(), engine->device_name().c_str(),
                     std::string(chat.name()).c_str());
    constexpr uint64_t kSession = 1;
    bool failed = false;  // a turn ended in an error: the exit status says so, as a script needs
    for (;;) {
        std::string line;
        if (once) {
            line = *args.value("prompt");
        } else {
            if (tty) std::fputs("\n> ", stderr);
            if (!std::getline(std::cin, line)) {
                if (g_interrupted.exchange(false)) {  // Ctrl+C at the prompt: not a way out
                    std::cin.clear();
                    std::fputs("\n(/exit or Ctrl+D quits)", stderr);
                    continue;
                }
                break;
            }
            if (line == "/exit" || line == "/quit") break;
            if (line == "/reset") {
                messages.resize(first_turn);
                images.clear();
                engine->close_session(kSession);
                std::fputs("(new conversation)\n", stderr);
                continue;
            }
            if (line.empty()) continue;
        }
        // The images stay with the message they came with; later turns reuse their cached tokens.
        const bool first_message = messages.size() == first_turn;
        messages.push_back({"user", line, first_message ? int(images.size()) : 0});
        GenerationRequest request;
        Prompt p;
        try {
            p = with_images(*engine, dir, chat.render(messages), images, {.add_special_tokens = chat.tokenize_with_special_tokens()});
        } catch (const Error& e) {
            if (once) throw;
            std::fprintf(stderr, "error: %s\n", e.what());
            failed = true;
            messages.pop_back();
            continue;
        }
        request.prompt = std::move(p.ids);
        request.images = std::move(p.images);
        request.sampling = params;
        request.max_new_tokens = max_new;
        request.stop_ids = stop_ids;
        request.session = kSession;
        reply.reset();
        const RequestId id = engine->submit(request);
        const GenerationEvent end = reply.wait([&] {
            if (g_interrupted.exchange(false)) engine->cancel(id);
        });
        write_out("\n");
        if (end.finish == FinishReason::Error) {
            std::fprintf(stderr, "error: %s\n", end.error.c_str());
            failed = true;
            messages.pop_back();
        } else {
            messages.push_back({"assistant", reply.text(), 0});
            if (end.finish == FinishReason::Cancelled) std::fputs("(stopped)\n", stderr);
        }
        if (once) return failed ? 1 : 0;
    }
    return failed ? 1 : 0;
}

}  // namespace lumen::cli
