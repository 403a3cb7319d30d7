#pragma once
// How a conversation samples its replies, as the user chose it. A field left unset takes the
// model's default, and where the model says nothing either, the app's fallback. JSON is only the
// stored form (the history's sampling column, a model's new-chat preset): keys it does not know
// are ignored, so histories written by other versions open.
#include <QJsonObject>
#include <cstdint>
#include <optional>

#include "engine/backend/sampling.h"

namespace lumen::ui {

// Each field is initialized so that designated initializers may name only some of them.
struct ChatSampling {
    std::optional<double> temperature = {};         // 0: greedy
    std::optional<double> top_p = {};               // 1: off
    std::optional<double> min_p = {};               // 0: off
    std::optional<int> top_k = {};                  // 0: off
    std::optional<double> repetition_penalty = {};  // 1: off
    std::optional<int> max_new_tokens = {};         // the longest reply
    std::optional<int64_t> seed = {};               // 0: a fresh random seed each reply

    // The stored keys ("temperature", "top_p", "min_p", "top_k", "repetition_penalty",
    // "max_new_tokens", "seed"); a key that is missing or not a number leaves its field unset.
    static ChatSampling from_json(const QJsonObject& json);
    QJsonObject to_json() const;  // the fields that are set

    // What a model's replies use unless a conversation says otherwise: its generation_config.json
    // values, and a reply of at most half the context (1024 tokens at most), so that a
    // conversation has room to go on.
    static ChatSampling model_defaults(const SamplingParams& generation_config, int64_t context);
    // Where neither the conversation nor the model says: every field set.
    static ChatSampling fallback();

    // These values where they are set, `defaults`' elsewhere.
    ChatSampling over(const ChatSampling& defaults) const;
    // What the engine is asked for: unset fields take fallback()'s values.
    SamplingParams params() const;
    int32_t reply_limit() const;  // max_new_tokens

    bool operator==(const ChatSampling&) const = default;
};

}  // namespace lumen::ui
