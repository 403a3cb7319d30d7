#include "ui/chat_sampling.h"

#include <algorithm>

namespace lumen::ui {
namespace {

std::optional<double> number(const QJsonObject& json, const char* key) {
    const QJsonValue v = json.value(key);
    return v.isDouble() ? std::optional<double>(v.toDouble()) : std::nullopt;
}

// Whole-number fields are cut towards zero, as the values were read before they had types.
template <typename Int>
std::optional<Int> whole(const QJsonObject& json, const char* key) {
    const std::optional<double> v = number(json, key);
    return v ? std::optional<Int>(Int(*v)) : std::nullopt;
}

template <typename T>
void put(QJsonObject& json, const char* key, const std::optional<T>& value) {
    if (value) json.insert(key, *value);
}

}  // namespace

ChatSampling ChatSampling::from_json(const QJsonObject& json) {
    ChatSampling s;
    s.temperature = number(json, "temperature");
    s.top_p = number(json, "top_p");
    s.min_p = number(json, "min_p");
    s.top_k = whole<int>(json, "top_k");
    s.repetition_penalty = number(json, "repetition_penalty");
    s.max_new_tokens = whole<int>(json, "max_new_tokens");
    s.seed = whole<int64_t>(json, "seed");
    return s;
}

QJsonObject ChatSampling::to_json() const {
    QJsonObject json;
    put(json, "temperature", temperature);
    put(json, "top_p", top_p);
    put(json, "min_p", min_p);
    put(json, "top_k", top_k);
    put(json, "repetition_penalty", repetition_penalty);
    put(json, "max_new_tokens", max_new_tokens);
    if (seed) json.insert("seed", qint64(*seed));
    return json;
}

ChatSampling ChatSampling::model_defaults(const SamplingParams& generation_config, int64_t context) {
    const SamplingParams& g = generation_config;
    return {.temperature = g.temperature,
            .top_p = g.top_p,
            .min_p = g.min_p,
            .top_k = g.top_k,
            .repetition_penalty = g.repetition_penalty,
            .max_new_tokens = int(std::min<int64_t>(1024, std::max<int64_t>(1, context / 2))),
            .seed = std::nullopt};
}

ChatSampling ChatSampling::fallback() {
    return {.temperature = 0.7, .top_p = 1.0, .min_p = 0.0, .top_k = 0, .repetition_penalty = 1.0, .max_new_tokens = 1024,
            .seed = 0};
}

ChatSampling ChatSampling::over(const ChatSampling& defaults) const {
    return {.temperature = temperature ? temperature : defaults.temperature,
            .top_p = top_p ? top_p : defaults.top_p,
            .min_p = min_p ? min_p : defaults.min_p,
            .top_k = top_k ? top_k : defaults.top_k,
            .repetition_penalty = repetition_penalty ? repetition_penalty : defaults.repetition_penalty,
            .max_new_tokens = max_new_tokens ? max_new_tokens : defaults.max_new_tokens,
            .seed = seed ? seed : defaults.seed};
}

SamplingParams ChatSampling::params() const {
    const ChatSampling s = over(fallback());
    SamplingParams p;
    p.temperature = float(*s.temperature);
    p.top_p = float(*s.top_p);
    p.min_p = float(*s.min_p);
    p.top_k = int32_t(*s.top_k);
    p.repetition_penalty = float(*s.repetition_penalty);
    p.seed = uint64_t(*s.seed);
    return p;
}

int32_t ChatSampling::reply_limit() const { return int32_t(max_new_tokens.value_or(*fallback().max_new_tokens)); }

}  // namespace lumen::ui
