#include "api/openai_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "engine/model/chat_template_choice.h"
#include "engine/model/generation_config.h"
#include "engine/text/chat_template.h"
#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "vision/encoder.h"
#include "vision/image.h"
#include "vision/prompt.h"
#include "vision/vision_config.h"

namespace lumen::api {
namespace {

using nlohmann::json;

// A request the handler could not take, with the HTTP status and OpenAI's error fields.
struct RequestError {
    RequestError(int status_, std::string message_, std::string param_ = {}, std::string type_ = "invalid_request_error",
                 std::string code_ = {})
        : status(status_), message(std::move(message_)), param(std::move(param_)), type(std::move(type_)), code(std::move(code_)) {}
    int status;
    std::string message, param, type, code;
};

json error_body(const RequestError& e) {
    json error{{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
    if (!e.param.empty()) error["param"] = e.param;
    if (!e.code.empty()) error["code"] = e.code;
    return json{{"error", error}};
}

void send_error(httplib::Response& res, const RequestError& e) {
    res.status = e.status;
    res.set_content(error_body(e).dump(), "application/json");
}

// One choice's token log-probabilities in OpenAI's two shapes: chat's list of entries (token,
// logprob, bytes, top_logprobs) and completions' parallel arrays (tokens, token_logprobs,
// top_logprobs, text_offset). A token's text is what it adds after the token before it (alone, a
// SentencePiece token would lose its leading space).
class LogprobsOut {
public:
    LogprobsOut(const Tokenizer& tokenizer, int32_t previous, bool chat) : tokenizer_(tokenizer), previous_(previous), chat_(chat) {}

    void add(const TokenLogprobs& lp) {
        // The token before, decoded once for the chosen token and every alternative.
        const std::string before = previous_ < 0 ? std::string() : tokenizer_.decode(std::span(&previous_, 1));
        const std::string text = text_of(before, lp.chosen.id);
        if (chat_) {
            json top = json::array();
            for (const TokenLogprob& t : lp.top) top.push_back(entry(text_of(before, t.id), t.logprob));
            json e = entry(text, lp.chosen.logprob);
            e["top_logprobs"] = std::move(top);
            content_.push_back(std::move(e));
        } else {
            json top = json::object();
            for (const TokenLogprob& t : lp.top) top[text_of(before, t.id)] = t.logprob;
            tokens_.push_back(text);
            token_logprobs_.push_back(lp.chosen.logprob);
            top_.push_back(std::move(top));
            offsets_.push_back(offset_);
            offset_ += text.size();
        }
        previous_ = lp.chosen.id;
        ++pending_;
    }
    bool pending() const { return pending_ > 0; }
    // What was added since the last take.
    json take() {
        pending_ = 0;
        if (chat_) return json{{"content", std::exchange(content_, json::array())}, {"refusal", nullptr}};
        return json{{"tokens", std::exchange(tokens_, json::array())},
                    {"token_logprobs", std::exchange(token_logprobs_, json::array())},
                    {"top_logprobs", std::exchange(top_, json::array())},
                    {"text_offset", std::exchange(offsets_, json::array())}};
    }

private:
    static json entry(const std::string& text, float logprob) {
        return json{{"token", text}, {"logprob", logprob}, {"bytes", std::vector<uint8_t>(text.begin(), text.end())}};
    }
    std::string text_of(const std::string& before, int32_t id) const {
        if (previous_ < 0) return tokenizer_.decode(std::span(&id, 1));
        const std::array<int32_t, 2> pair{previous_, id};
        const std::string both = tokenizer_.decode(pair);
        if (both.compare(0, before.size(), before) == 0) return both.substr(before.size());
        return tokenizer_.decode(std::span(&id, 1));
    }

    const Tokenizer& tokenizer_;
    int32_t previous_;
    bool chat_;
    json content_ = json::array(), tokens_ = json::array(), token_logprobs_ = json::array(), top_ = json::array(),
         offsets_ = json::array();
    std::size_t offset_ = 0;
    int pending_ = 0;
};

// The events of the requests in flight, routed from the engine's one callback to each request's
// handler. Events of a request whose handler has not registered yet wait for it. Each channel has
// its own condition variable: an event wakes only its request's handler (one shared one woke every
// handler for every event, 64 x 64 wake-ups a step at 64 clients, each taking the lock the engine's
// thread needs for the next event).
class EventRouter {
public:
    struct Channel {
        std::deque<GenerationEvent> events;
        std::condition_variable ready;
    };

    void deliver(const GenerationEvent& e) {
        std::shared_ptr<Channel> waiting;
        {
            std::lock_guard lock(mutex_);
            if (auto it = open_.find(e.request); it != open_.end()) {
                waiting = it->second;
                waiting->events.push_back(e);
            } else {
                early_[e.request].push_back(e);
            }
        }
        if (waiting) waiting->ready.notify_one();
    }
    std::shared_ptr<Channel> open(RequestId id) {
        std::lock_guard lock(mutex_);
        auto c = std::make_shared<Channel>();
        if (auto it = early_.find(id); it != early_.end()) {
            c->events = std::move(it->second);
            early_.erase(it);
        }
        open_[id] = c;
        return c;
    }
    void close(RequestId id) {
        std::lock_guard lock(mutex_);
        open_.erase(id);
        early_.erase(id);
    }
    // The events that arrived, waiting up to `timeout` for one.
    std::deque<GenerationEvent> take(Channel& c, std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        c.ready.wait_for(lock, timeout, [&] { return !c.events.empty(); });
        return std::exchange(c.events, {});
    }

private:
    std::mutex mutex_;
    std::map<RequestId, std::shared_ptr<Channel>> open_;
    std::map<RequestId, std::deque<GenerationEvent>> early_;
};

// Prometheus counters and histograms of what the server did.
class Metrics {
public:
    static constexpr std::array<double, 12> kBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};  // seconds

    void request(const std::string& route, int status) {
        std::lock_guard lock(mutex_);
        ++requests_[route + "\",status=\"" + std::to_string(status)];
    }
    void finished(const Timings& t) {
        std::lock_guard lock(mutex_);
        prompt_tokens_ += t.prompt_tokens;
        cached_tokens_ += t.reused_tokens;
        generated_tokens_ += t.generated_tokens;
        if (t.generated_tokens > 0) ttft_.add(t.first_token_ms / 1000);
        if (t.generated_tokens > 1) itl_.add(t.decode_ms / 1000 / (t.generated_tokens - 1));
    }
    void running(int delta) { running_ += delta; }
    std::string text(const EngineStats& engine) {
        std::lock_guard lock(mutex_);
        std::ostringstream o;
        o << "# TYPE lumen_engine_steps_total counter\nlumen_engine_steps_total " << engine.steps << "\n";
        o << "# TYPE lumen_engine_step_sequences_total counter\nlumen_engine_step_sequences_total " << engine.step_sequences << "\n";
        o << "# TYPE lumen_batch_size gauge\nlumen_batch_size " << engine.last_batch << "\n";
        o << "# TYPE lumen_kv_cache_blocks_used gauge\nlumen_kv_cache_blocks_used " << engine.kv_blocks_used << "\n";
        o << "# TYPE lumen_kv_cache_blocks gauge\nlumen_kv_cache_blocks " << engine.kv_blocks << "\n";
        o << "# TYPE lumen_requests_total counter\n";
        for (const auto& [key, n] : requests_) o << "lumen_requests_total{route=\"" << key << "\"} " << n << "\n";
        o << "# TYPE lumen_requests_running gauge\nlumen_requests_running " << running_.load() << "\n";
        o << "# TYPE lumen_prompt_tokens_total counter\nlumen_prompt_tokens_total " << prompt_tokens_ << "\n";
        o << "# TYPE lumen_prompt_tokens_cached_total counter\nlumen_prompt_tokens_cached_total " << cached_tokens_ << "\n";
        o << "# TYPE lumen_generation_tokens_total counter\nlumen_generation_tokens_total " << generated_tokens_ << "\n";
        ttft_.write(o, "lumen_time_to_first_token_seconds");
        itl_.write(o, "lumen_inter_token_latency_seconds");
        return o.str();
    }

private:
    struct Histogram {
        std::array<uint64_t, kBuckets.size()> counts{};
        uint64_t count = 0;
        double sum = 0;
        void add(double v) {
            for (std::size_t i = 0; i < kBuckets.size(); ++i)
                if (v <= kBuckets[i]) ++counts[i];
            ++count;
            sum += v;
        }
        void write(std::ostringstream& o, const char* name) const {
            o << "# TYPE " << name << " histogram\n";
            for (std::size_t i = 0; i < kBuckets.size(); ++i) o << name << "_bucket{le=\"" << kBuckets[i] << "\"} " << counts[i] << "\n";
            o << name << "_bucket{le=\"+Inf\"} " << count << "\n" << name << "_sum " << sum << "\n" << name << "_count " << count << "\n";
        }
    };
    std::mutex mutex_;
    std::map<std::string, uint64_t> requests_;
    std::atomic<int> running_{0};
    uint64_t prompt_tokens_ = 0, cached_tokens_ = 0, generated_tokens_ = 0;
    Histogram ttft_, itl_;
};

// OpenAI's finish_reason: "length" at max_tokens or the context's end, "stop" otherwise.
const char* finish_name(FinishReason r) { return r == FinishReason::Length ? "length" : "stop"; }

std::string base64_decode(std::string_view in) {
    static const std::array<int, 256> table = [] {
        std::array<int, 256> t{};
        t.fill(-1);
        const char* chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; ++i) t[uint8_t(chars[i])] = i;
        return t;
    }();
    std::string out;
    out.reserve(in.size() / 4 * 3);
    uint32_t bits = 0;
    int count = 0;
    for (const char ch : in) {
        if (ch == '=' || ch == '\n' || ch == '\r') continue;
        const int v = table[uint8_t(ch)];
        if (v < 0) throw std::runtime_error("not base64");
        bits = bits << 6 | uint32_t(v);
        if (++count == 4) {
            out.push_back(char(bits >> 16)), out.push_back(char(bits >> 8 & 0xff)), out.push_back(char(bits & 0xff));
            bits = 0, count = 0;
        }
    }
    if (count == 1) throw std::runtime_error("truncated base64");
    if (count == 2) out.push_back(char(bits >> 4));
    if (count == 3) out.push_back(char(bits >> 10)), out.push_back(char(bits >> 2 & 0xff));
    return out;
}

// A sampling field of the request: absent or null keeps `fallback`; a value of another type is a 400.
template <class T>
T field(const json& body, const char* name, T fallback) {
    const auto it = body.find(name);
    if (it == body.end() || it->is_null()) return fallback;
    if constexpr (std::is_same_v<T, bool>) {
        if (!it->is_boolean()) throw RequestError{400, std::string("'") + name + "' must be true or false", name};
    } else {
        if (!it->is_number()) throw RequestError{400, std::string("'") + name + "' must be a number", name};
    }
    return it->get<T>();
}

}  // namespace

struct OpenAiServer::State {
    ServerOptions options;
    std::filesystem::path dir;
    std::string model_id;
    EventRouter router;
    Metrics metrics;
    std::shared_ptr<Engine> engine;
    std::shared_ptr<std::atomic<OpenAiServer*>> own_engine_slot;  // with_own_engine: where its callback finds the server
    std::thread listener;
    std::atomic<bool> stopping{false};  // the connections end their requests and close
    std::optional<ChatTemplate> chat;
    std::optional<vision::VisionConfig> vision;
    SamplingParams defaults;
    std::vector<int32_t> stop_ids;
    httplib::Server http;
    int port = 0;
    std::atomic<uint64_t> next_id{1};
    std::time_t created = std::time(nullptr);

    // The request's images, decoded and prepared for the model.
    vision::PreparedImage image(const std::string& url) {
        std::vector<uint8_t> bytes;
        const vision::DecodeLimits limits{options.max_image_pixels};
        if (url.rfind("data:", 0) == 0) {
            const auto comma = url.find(',');
            if (comma == std::string::npos || url.substr(0, comma).find(";base64") == std::string::npos)
                throw RequestError{400, "an image data: URL must be base64 (data:image/png;base64,...)", "messages"};
            std::string raw;
            try {
                raw = base64_decode(std::string_view(url).substr(comma + 1));
            } catch (const std::exception&) {
                throw RequestError{400, "the image's data: URL is not valid base64", "messages"};
            }
            bytes.assign(raw.begin(), raw.end());
        } else if (url.rfind("file://", 0) == 0) {
            if (!options.allow_file_urls)
                throw RequestError{400, "file:// image URLs are off on this server (lumen-cli serve --allow-file-urls turns them on)",
                                   "messages"};
            try {
                bytes = vision::load_image_bytes(url.substr(7));
            } catch (const Error& e) {
                throw RequestError{400, e.what(), "messages"};
            }
        } else {
            throw RequestError{400, "images must come as data: URLs (base64); this server fetches nothing from the network",
                               "messages"};
        }
        try {
            return vision::prepare_image(bytes, *vision, limits);
        } catch (const Error& e) {
            throw RequestError{400, std::string("the image could not be read: ") + e.what(), "messages"};
        }
    }

    // The sampling, limits and stops every completion request takes.
    void common(const json& body, GenerationRequest& r, std::size_t prompt_tokens) {
        if (const int64_t n = field<int64_t>(body, "n", 1); n < 1 || n > 16) throw RequestError{400, "n must be between 1 and 16", "n"};
        r.sampling = defaults;
        r.sampling.presence_penalty = float(field<double>(body, "presence_penalty", 0));
        r.sampling.frequency_penalty = float(field<double>(body, "frequency_penalty", 0));
        for (const char* name : {"presence_penalty", "frequency_penalty"})
            if (const double v = field<double>(body, name, 0); !(v >= -2 && v <= 2))
                throw RequestError{400, std::string(name) + " must be in [-2, 2]", name};
        r.sampling.temperature = float(field<double>(body, "temperature", r.sampling.temperature));
        r.sampling.top_p = float(field<double>(body, "top_p", r.sampling.top_p));
        r.sampling.top_k = int32_t(field<int64_t>(body, "top_k", r.sampling.top_k));
        r.sampling.min_p = float(field<double>(body, "min_p", r.sampling.min_p));
        r.sampling.repetition_penalty = float(field<double>(body, "repetition_penalty", r.sampling.repetition_penalty));
        r.sampling.seed = uint64_t(field<int64_t>(body, "seed", 0));
        r.ignore_eos = field<bool>(body, "ignore_eos", false);  // vLLM's extension, for benchmarks
        if (r.sampling.temperature < 0 || r.sampling.temperature > 100) throw RequestError{400, "temperature must be in [0, 100]", "temperature"};
        if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1)) throw RequestError{400, "top_p must be in (0, 1]", "top_p"};
        if (r.sampling.top_k < 0) throw RequestError{400, "top_k must not be negative", "top_k"};
        const int64_t room = engine->session_len() - int64_t(prompt_tokens);
        if (room < 1)
            throw RequestError{400, "the prompt has " + std::to_string(prompt_tokens) + " tokens; this model's context is " +
                                        std::to_string(engine->session_len()), "messages", "invalid_request_error",
                               "context_length_exceeded"};
        int64_t max_tokens = field<int64_t>(body, "max_completion_tokens", field<int64_t>(body, "max_tokens", room));
        if (max_tokens < 1) throw RequestError{400, "max_tokens must be at least 1", "max_tokens"};
        if (max_tokens > room)
            throw RequestError{400, "max_tokens is " + std::to_string(max_tokens) + " but the context leaves room for " +
                                        std::to_string(room) + " tokens after the prompt", "max_tokens"};
        r.max_new_tokens = int32_t(max_tokens);
        if (const auto it = body.find("stop"); it != body.end() && !it->is_null()) {
            if (it->is_string()) r.stop_strings.push_back(it->get<std::string>());
            else if (it->is_array() && it->size() <= 16)
                for (const auto& s : *it) {
                    if (!s.is_string() || s.get<std::string>().empty()) throw RequestError{400, "each stop must be a non-empty string", "stop"};
                    r.stop_strings.push_back(s.get<std::string>());
                }
            else throw RequestError{400, "stop must be a string or up to 16 strings", "stop"};
        }
        r.stop_ids = stop_ids;
    }

    // Chat: "logprobs": true with "top_logprobs": 0-20; completions: "logprobs": 0-20.
    static int32_t logprobs_wanted(const json& body, bool chat_kind) {
        const auto top = [&](const char* name) {
            const int64_t n = field<int64_t>(body, name, 0);
            if (n < 0 || n > kMaxTopLogprobs)
                throw RequestError{400, std::string(name) + " must be between 0 and " + std::to_string(kMaxTopLogprobs), name};
            return int32_t(n);
        };
        if (!chat_kind) return body.contains("logprobs") && !body["logprobs"].is_null() ? top("logprobs") : -1;
        if (field<bool>(body, "logprobs", false)) return top("top_logprobs");
        if (body.contains("top_logprobs") && !body["top_logprobs"].is_null())
            throw RequestError{400, "top_logprobs needs \"logprobs\": true", "top_logprobs"};
        return -1;
    }

    // A request for another model than this server's is refused as OpenAI and vLLM refuse it, so
    // that a client whose model went away is told so; no "model" at all takes this one.
    void check_model(const json& body) const {
        const auto it = body.find("model");
        if (it == body.end() || it->is_null()) return;
        if (!it->is_string()) throw RequestError{400, "'model' must be a string", "model"};
        if (it->get<std::string>() != model_id)
            throw RequestError{404, "the model '" + it->get<std::string>() + "' does not exist here; this server serves '" + model_id + "'",
                               "model", "invalid_request_error", "model_not_found"};
    }

    GenerationRequest chat_request(const json& body) {
        check_model(body);
        const auto messages = body.find("messages");
        if (messages == body.end() || !messages->is_array() || messages->empty())
            throw RequestError{400, "'messages' must be a non-empty array", "messages"};
        if (int(messages->size()) > options.max_messages)
            throw RequestError{400, "at most " + std::to_string(options.max_messages) + " messages", "messages"};
        std::vector<ChatMessage> turns;
        std::vector<vision::PreparedImage> images;
        int image_parts = 0;
        for (const auto& m : *messages) {
            if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) throw RequestError{400, "each message needs a role", "messages"};
            std::string role = m["role"].get<std::string>();
            if (role == "developer") role = "system";
            if (role != "system" && role != "user" && role != "assistant")
                throw RequestError{400, "role '" + role + "' is not supported (system, user, assistant)", "messages"};
            ChatMessage turn{role, "", 0};
            const json content = m.value("content", json());
            if (content.is_string()) {
                turn.text = content.get<std::string>();
            } else if (content.is_array()) {
                for (const auto& part : content) {
                    const std::string type = part.value("type", "");
                    if (type == "text") {
                        turn.text += part.value("text", "");
                    } else if (type == "image_url") {
                        if (++image_parts > options.max_images)
                            throw RequestError{400, "at most " + std::to_string(options.max_images) + " images a request", "messages"};
                        if (!vision)
                            throw RequestError{400, model_id + " reads text only; send the image to a vision-language model", "messages"};
                        const json& u = part.contains("image_url") ? part["image_url"] : json();
                        const std::string url = u.is_string() ? u.get<std::string>() : u.is_object() ? u.value("url", "") : "";
                        images.push_back(image(url));
                        ++turn.images;
                    } else {
                        throw RequestError{400, "content parts of type '" + type + "' are not supported (text, image_url)", "messages"};
                    }
                }
            } else if (!content.is_null()) {
                throw RequestError{400, "a message's content must be a string or an array of parts", "messages"};
            }
            turns.push_back(std::move(turn));
        }
        const EncodeOptions encode{.add_special_tokens = chat->tokenize_with_special_tokens()};
        GenerationRequest r;
        const std::string text = chat->render(turns);
        if (images.empty()) {
            r.prompt = engine->tokenizer().encode(text, encode);
        } else {
            auto prepared = vision::expand_prompt(text, images, *vision, engine->tokenizer(), encode);
            r.prompt = std::move(prepared.ids);
            r.images = std::move(prepared.images);
        }
        common(body, r, r.prompt.size());
        r.logprobs = logprobs_wanted(body, true);
        return r;
    }

    GenerationRequest completion_request(const json& body) {
        check_model(body);
        const auto prompt = body.find("prompt");
        std::string text;
        if (prompt != body.end() && prompt->is_string()) text = prompt->get<std::string>();
        else if (prompt != body.end() && prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) text = (*prompt)[0].get<std::string>();
        else throw RequestError{400, "'prompt' must be a string (one prompt a request)", "prompt"};
        if (field<bool>(body, "echo", false)) throw RequestError{400, "echo is not supported", "echo"};
        GenerationRequest r;
        r.prompt = engine->tokenizer().encode(text);
        common(body, r, r.prompt.size());
        r.logprobs = logprobs_wanted(body, false);
        r.stop_ids.clear();  // a plain completion stops at the model's end of text only
        return r;
    }

    json usage(const Timings& t) const {
        return json{{"prompt_tokens", t.prompt_tokens},
                    {"completion_tokens", t.generated_tokens},
                    {"total_tokens", t.prompt_tokens + t.generated_tokens},
                    {"prompt_tokens_details", {{"cached_tokens", t.reused_tokens}}}};
    }

    // Runs `r` and answers: one JSON object, or server-sent events with "stream": true.
    // Runs `r` (n times, for n choices) and answers: one JSON object, or server-sent events with
    // "stream": true.
    void serve(const json& body, GenerationRequest r, bool chat_kind, httplib::Response& res) {
        const bool stream = field<bool>(body, "stream", false);
        const bool include_usage = stream && body.contains("stream_options") && body["stream_options"].is_object() &&
                                   body["stream_options"].value("include_usage", false);
        const auto n = std::size_t(field<int64_t>(body, "n", 1));
        const std::string id = (chat_kind ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
        const std::time_t now = std::time(nullptr);
        const char* object = chat_kind ? (stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
        // One engine request per choice; a fixed seed gives each its own stream (seed, seed + 1, ...).
        struct Choice {
            RequestId rid;
            std::shared_ptr<EventRouter::Channel> channel;
            std::string text;
            GenerationEvent end;
            bool done = false;
            std::optional<LogprobsOut> logprobs;
        };
        auto choices = std::make_shared<std::vector<Choice>>();
        r.tag = tag();
        for (std::size_t i = 0; i < n; ++i) {
            GenerationRequest copy = r;
            if (copy.sampling.seed != 0) copy.sampling.seed += i;
            const RequestId rid = engine->submit(std::move(copy));
            choices->push_back({rid, router.open(rid), {}, {}, false, {}});
            if (r.logprobs >= 0) choices->back().logprobs.emplace(engine->tokenizer(), r.prompt.empty() ? -1 : r.prompt.back(), chat_kind);
        }
        metrics.running(1);
        auto cancel_all = [this, choices] {
            for (const Choice& c : *choices) {
                engine->cancel(c.rid);
                router.close(c.rid);
            }
            metrics.running(-1);
        };
        auto total = [choices] {
            Timings t;
            for (const Choice& c : *choices) {
                t.prompt_tokens = c.end.timings.prompt_tokens;
                t.reused_tokens = c.end.timings.reused_tokens;
                t.generated_tokens += c.end.timings.generated_tokens;
            }
            return t;
        };
        if (!stream) {
            for (std::size_t left = n; left > 0;) {
                if (stopping) {
                    cancel_all();
                    throw RequestError{503, "the server is shutting down", "", "server_error"};
                }
                for (Choice& c : *choices)
                    for (auto& e : router.take(*c.channel, std::chrono::milliseconds(c.done ? 0 : 20))) {
                        c.text += e.text;
                        if (c.logprobs)
                            for (const TokenLogprobs& lp : e.logprobs) c.logprobs->add(lp);
                        if (e.finish != FinishReason::None) c.end = std::move(e), c.done = true, --left;
                    }
            }
            cancel_all();  // all finished: only closes their channels
            json out_choices = json::array();
            for (std::size_t i = 0; i < n; ++i) {
                Choice& c = (*choices)[i];
                if (c.end.finish == FinishReason::Error) throw RequestError{500, c.end.error, "", "server_error"};
                metrics.finished(c.end.timings);
                json choice{{"index", i}, {"finish_reason", finish_name(c.end.finish)}, {"logprobs", nullptr}};
                if (c.logprobs) choice["logprobs"] = c.logprobs->take();
                if (chat_kind) choice["message"] = {{"role", "assistant"}, {"content", c.text}};
                else choice["text"] = c.text;
                out_choices.push_back(std::move(choice));
            }
            const json out{{"id", id}, {"object", object}, {"created", now}, {"model", model_id},
                           {"choices", out_choices}, {"usage", usage(total())}};
            res.set_content(out.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
            return;
        }
        auto chunk = [=, this](json choice) {
            json c{{"id", id}, {"object", object}, {"created", now}, {"model", model_id}, {"choices", json::array()}};
            if (!choice.is_null()) c["choices"].push_back(std::move(choice));
            if (include_usage) c["usage"] = nullptr;
            return c;
        };
        auto started = std::make_shared<bool>(false);
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider(
            "text/event-stream",
            [this, choices, chat_kind, include_usage, chunk, started, total](std::size_t, httplib::DataSink& sink) {
                auto send = [&](const json& j) {
                    const std::string line = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
                    return sink.write(line.data(), line.size());
                };
                if (!*started && chat_kind) {
                    *started = true;
                    for (std::size_t i = 0; i < choices->size(); ++i)
                        if (!send(chunk({{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}})))
                            return false;
                }
                if (!sink.is_writable() || stopping) return false;  // the client went: the releaser cancels
                std::size_t left = 0;
                for (std::size_t i = 0; i < choices->size(); ++i) {
                    Choice& c = (*choices)[i];
                    if (c.done) continue;
                    for (auto& e : router.take(*c.channel, std::chrono::milliseconds(50 / choices->size()))) {
                        if (e.finish == FinishReason::Error) {
                            send(error_body({500, e.error, "", "server_error"}));
                            sink.done();
                            return true;
                        }
                        // A token's log-probabilities go with the chunk that first carries its text.
                        if (c.logprobs)
                            for (const TokenLogprobs& lp : e.logprobs) c.logprobs->add(lp);
                        if (!e.text.empty()) {
                            json choice{{"index", i}, {"finish_reason", nullptr}, {"logprobs", nullptr}};
                            if (c.logprobs) choice["logprobs"] = c.logprobs->take();
                            if (chat_kind) choice["delta"] = {{"content", e.text}};
                            else choice["text"] = e.text;
                            if (!send(chunk(choice))) return false;
                        }
                        if (e.finish != FinishReason::None) {
                            metrics.finished(e.timings);
                            json choice{{"index", i}, {"finish_reason", finish_name(e.finish)}, {"logprobs", nullptr}};
                            if (c.logprobs && c.logprobs->pending()) choice["logprobs"] = c.logprobs->take();
                            if (chat_kind) choice["delta"] = json::object();
                            else choice["text"] = "";
                            send(chunk(choice));
                            c.end = std::move(e), c.done = true;
                        }
                    }
                    if (!c.done) ++left;
                }
                if (left > 0) return true;
                if (include_usage) {
                    json u = chunk(nullptr);
                    u["usage"] = usage(total());
                    send(u);
                }
                const std::string done = "data: [DONE]\n\n";
                sink.write(done.data(), done.size());
                sink.done();
                return true;
            },
            // Finished or not (a client that went away), the requests leave the engine's batch.
            [cancel_all](bool) { cancel_all(); });
    }

    uint64_t tag() const { return uint64_t(reinterpret_cast<uintptr_t>(this)); }

    // Wraps a route: the body parsed, errors answered in OpenAI's shape, the outcome counted.
    httplib::Server::Handler route(const std::string& name, std::function<void(const json&, httplib::Response&)> handle) {
        return [this, name, handle](const httplib::Request& req, httplib::Response& res) {
            try {
                json body;
                if (!req.body.empty()) {
                    body = json::parse(req.body, nullptr, false);
                    if (body.is_discarded() || !body.is_object()) throw RequestError{400, "the request body is not a JSON object"};
                }
                handle(body, res);
            } catch (const RequestError& e) {
                send_error(res, e);
            } catch (const json::exception& e) {
                send_error(res, {400, std::string("a field has the wrong type: ") + e.what()});
            } catch (const Error& e) {
                send_error(res, {400, e.what()});
            }
            metrics.request(name, res.status == -1 ? 200 : res.status);
        };
    }
};

std::unique_ptr<OpenAiServer> OpenAiServer::with_own_engine(const std::filesystem::path& model_dir, EngineOptions engine_options,
                                                            const ServerOptions& options) {
    if (!engine_options.image_encoder) engine_options.image_encoder = vision::make_image_encoder;
    // Only the server submits, and only once it exists: the callback finds it in the slot.
    auto slot = std::make_shared<std::atomic<OpenAiServer*>>(nullptr);
    std::shared_ptr<Engine> engine = Engine::create(model_dir, engine_options, [slot](const GenerationEvent& e) {
        if (OpenAiServer* server = slot->load()) server->deliver(e);
    });
    auto server = std::make_unique<OpenAiServer>(std::move(engine), model_dir, options);
    server->state_->own_engine_slot = slot;
    slot->store(server.get());
    return server;
}

OpenAiServer::OpenAiServer(std::shared_ptr<Engine> engine, const std::filesystem::path& model_dir, const ServerOptions& options)
    : state_(std::make_unique<State>()) {
    State& s = *state_;
    s.options = options;
    s.dir = model_dir;
    s.model_id = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (s.model_id.empty()) s.model_id = std::filesystem::path(model_dir).lexically_normal().parent_path().filename().string();
    s.engine = std::move(engine);
    s.chat = chat_template_for(s.engine->model_config(), s.engine->tokenizer());
    for (const auto& name : s.chat->stop_tokens())
        if (const auto id = s.engine->tokenizer().token_id(name)) s.stop_ids.push_back(*id);
    s.defaults = load_generation_config(model_dir);
    if (s.engine->image_encoder()) s.vision = vision::load_vision_config(model_dir, s.engine->model_config(), &s.engine->tokenizer());

    httplib::Server& http = s.http;
    http.new_task_queue = [threads = options.threads] { return new httplib::ThreadPool(std::size_t(std::max(2, threads))); };
    http.set_payload_max_length(options.max_body_bytes);
    http.set_pre_routing_handler([&s](const httplib::Request& req, httplib::Response& res) {
        if (s.options.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
        if (req.get_header_value("Authorization") == "Bearer " + s.options.api_key) return httplib::Server::HandlerResponse::Unhandled;
        send_error(res, {401, "Incorrect or missing API key (send 'Authorization: Bearer KEY')", "", "invalid_request_error", "invalid_api_key"});
        s.metrics.request(req.path, 401);
        return httplib::Server::HandlerResponse::Handled;
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return;
        const std::string message = res.status == 404 ? "no route " + req.method + " " + req.path
                                    : res.status == 413 ? "the request body is larger than this server takes"
                                                        : "the request could not be served";
        send_error(res, {res.status, message});
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
            std::rethrow_exception(ep);
        } catch (const std::exception& e) {
            message = e.what();
        } catch (...) {
        }
        send_error(res, {500, message, "", "server_error"});
    });
    http.Get("/health", [](const httplib::Request&, httplib::Response& res) { res.set_content("{\"status\":\"ok\"}", "application/json"); });
    http.Get("/metrics", [&s](const httplib::Request&, httplib::Response& res) {
        res.set_content(s.metrics.text(s.engine->stats()), "text/plain; version=0.0.4");
    });
    http.Get("/v1/models", s.route("/v1/models", [&s](const json&, httplib::Response& res) {
        const json model{{"id", s.model_id}, {"object", "model"}, {"created", s.created}, {"owned_by", "lumen"},
                         {"max_model_len", s.engine->session_len()}};
        res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(), "application/json");
    }));
    http.Post("/v1/chat/completions", s.route("/v1/chat/completions", [&s](const json& body, httplib::Response& res) {
        s.serve(body, s.chat_request(body), true, res);
    }));
    http.Post("/v1/completions", s.route("/v1/completions", [&s](const json& body, httplib::Response& res) {
        s.serve(body, s.completion_request(body), false, res);
    }));
    // The listening socket takes SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which
    // a second server would quietly share a port in use instead of saying so.
    socket_t listening = -1;
    http.set_socket_options([&listening](socket_t sock) {
        const int yes = 1;
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        listening = sock;
    });
    s.port = options.port == 0 ? http.bind_to_any_port(options.host) : (http.bind_to_port(options.host, options.port) ? options.port : -1);
    // Debian's httplib library listens with a backlog of 5: clients connecting together beyond
    // that lost their SYNs and waited out TCP's 1 s retransmission (measured on an H100: time to
    // first token p90 1,050 ms at 64 clients, p50 29 ms). Listening again deepens the queue.
    if (s.port > 0 && listening >= 0) ::listen(listening, 1024);
    if (s.port <= 0)
        throw Error("cannot listen on " + options.host + ":" + std::to_string(options.port) + " (in use, or not an address of this machine)");
}

OpenAiServer::~OpenAiServer() {
    stop();
    if (state_->listener.joinable()) state_->listener.join();
    // A server with its own engine: the engine's last events (requests cut short) find no server.
    if (state_->own_engine_slot) state_->own_engine_slot->store(nullptr);
}

int OpenAiServer::port() const { return state_->port; }
std::string OpenAiServer::url() const { return "http://" + state_->options.host + ":" + std::to_string(state_->port) + "/v1"; }
const std::string& OpenAiServer::model_id() const { return state_->model_id; }
uint64_t OpenAiServer::tag() const { return state_->tag(); }
bool OpenAiServer::deliver(const GenerationEvent& e) {
    if (e.tag != state_->tag()) return false;
    state_->router.deliver(e);
    return true;
}
void OpenAiServer::run() { state_->http.listen_after_bind(); }
void OpenAiServer::start() {
    if (!state_->listener.joinable()) state_->listener = std::thread([this] { state_->http.listen_after_bind(); });
}
void OpenAiServer::stop() {
    state_->stopping = true;
    state_->http.stop();
}

}  // namespace lumen::api
