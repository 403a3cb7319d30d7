#include "engine/model/generation_config.h"

#include <nlohmann/json.hpp>

#include "engine/util/error.h"
#include "engine/util/text_file.h"

namespace lumen {

SamplingParams load_generation_config(const std::filesystem::path& dir) {
    SamplingParams p;
    p.temperature = 0.0f;
    const auto text = read_text_file(dir / "generation_config.json");
    if (!text) return p;
    nlohmann::json g;
    try {
        g = nlohmann::json::parse(*text);
    } catch (const nlohmann::json::exception& e) {
        throw Error((dir / "generation_config.json").string() + ": not valid JSON (" + e.what() + ")");
    }
    if (!g.is_object()) return p;
    auto number = [&](const char* key, double fallback) {
        return g.contains(key) && g[key].is_number() ? g[key].get<double>() : fallback;
    };
    if (g.contains("do_sample") && g["do_sample"].is_boolean() && g["do_sample"].get<bool>()) {
        p.temperature = float(number("temperature", 1.0));
        p.top_k = int32_t(number("top_k", 50));
        p.top_p = float(number("top_p", 1.0));
        p.min_p = float(number("min_p", 0.0));
    }
    p.repetition_penalty = float(number("repetition_penalty", 1.0));
    return p;
}

}  // namespace lumen
