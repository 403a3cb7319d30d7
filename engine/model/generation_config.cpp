#include "engine/model/generation_config.h"

#include <cstdio>
#include <limits>

#include "engine/util/error.h"
#include "engine/util/json_file.h"

namespace lumen {

SamplingParams load_generation_config(const std::filesystem::path& dir) {
    SamplingParams p;
    p.temperature = 0.0f;
    const std::filesystem::path path = dir / "generation_config.json";
    const auto g = read_json_file(path, kConfigFile);
    if (!g || !g->is_object()) return p;
    // A value outside [lo, hi] is refused by name rather than wrapped or cast into nonsense.
    auto number = [&](const char* key, double fallback, double lo, double hi) {
        if (!g->contains(key) || (*g)[key].is_null()) return fallback;
        const auto& v = (*g)[key];
        if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi)) {
            char range[64];
            std::snprintf(range, sizeof range, "%g to %g", lo, hi);
            throw Error(path.string() + ": '" + key + "' must be a number from " + range + " (got " + v.dump() + ")");
        }
        return v.get<double>();
    };
    constexpr double kIntMax = std::numeric_limits<int32_t>::max();
    if (g->contains("do_sample") && (*g)["do_sample"].is_boolean() && (*g)["do_sample"].get<bool>()) {
        p.temperature = float(number("temperature", 1.0, 0.0, 1e6));
        p.top_k = int32_t(number("top_k", 50, 0.0, kIntMax));
        p.top_p = float(number("top_p", 1.0, 0.0, 1.0));
        p.min_p = float(number("min_p", 0.0, 0.0, 1.0));
        if (p.top_p <= 0) throw Error(path.string() + ": 'top_p' must be above 0 (got 0)");
    }
    p.repetition_penalty = float(number("repetition_penalty", 1.0, 1e-6, 1e6));
    return p;
}

}  // namespace lumen
