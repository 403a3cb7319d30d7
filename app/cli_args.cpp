#include "app/cli_args.h"
#include "app/cli_commands.h"

#include <cerrno>
#include <cmath>
#include <algorithm>
#include <cstdlib>

#include "engine/util/error.h"

namespace lumen::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
           const std::set<std::string>& flags, const std::set<std::string>& repeatable) {
    for (std::size_t i = 0; i < argv.size(); ++i) {
        const std::string& arg = argv[i];
        if (arg.rfind("--", 0) != 0 || arg == "--") {
            positional_.push_back(arg);
            continue;
        }
        std::string name = arg.substr(2);
        std::optional<std::string> inline_value;
        if (const auto eq = name.find('='); eq != std::string::npos) {
            inline_value = name.substr(eq + 1);
            name.resize(eq);
        }
        if (flags.count(name)) {
            if (inline_value) throw Error("option --" + name + " takes no value");
            flags_.insert(name);
        } else if (valued.count(name) || repeatable.count(name)) {
            std::string v;
            if (inline_value) {
                v = *inline_value;
            } else {
                if (i + 1 >= argv.size()) throw Error("option --" + name + " needs a value");
                v = argv[++i];
            }
            auto& slot = values_[name];
            if (!slot.empty() && !repeatable.count(name)) throw Error("option --" + name + " given twice");
            slot.push_back(std::move(v));
        } else {
            throw Error("unknown option --" + name + " (see --help)");
        }
    }
}

std::optional<std::string> Args::value(const std::string& name) const {
    const auto it = values_.find(name);
    if (it == values_.end() || it->second.empty()) return std::nullopt;
    return it->second.back();
}

const std::vector<std::string>& Args::values(const std::string& name) const {
    static const std::vector<std::string> none;
    const auto it = values_.find(name);
    return it == values_.end() ? none : it->second;
}

std::string Args::required(const std::string& name) const {
    if (auto v = value(name)) return *v;
    throw Error("option --" + name + " is required (see --help)");
}

double Args::number(const std::string& name, double fallback) const {
    const auto v = value(name);
    if (!v) return fallback;
    char* end = nullptr;
    errno = 0;
    const double d = std::strtod(v->c_str(), &end);
    if (v->empty() || *end != '\0' || errno != 0 || !std::isfinite(d))
        throw Error("option --" + name + " needs a number (got '" + *v + "')");
    return d;
}

namespace {

long long parse_integer(const std::string& text, const std::string& name, long long lo, long long hi) {
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(text.c_str(), &end, 10);
    const std::string range = "from " + std::to_string(lo) + " to " + std::to_string(hi);
    if (text.empty() || *end != '\0') throw Error("option --" + name + " needs a whole number " + range + " (got '" + text + "')");
    if (errno == ERANGE || n < lo || n > hi) throw Error("option --" + name + " must be " + range + " (got " + text + ")");
    return n;
}

}  // namespace

long long Args::integer(const std::string& name, long long fallback, long long lo, long long hi) const {
    const auto v = value(name);
    return v ? parse_integer(*v, name, lo, hi) : fallback;
}

std::vector<std::string> Args::list(const std::string& name, const std::string& fallback) const {
    const std::string text = value(name).value_or(fallback);
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at <= text.size()) {
        const std::size_t comma = std::min(text.find(',', at), text.size());
        out.push_back(text.substr(at, comma - at));
        at = comma + 1;
    }
    return out;
}

std::vector<long long> Args::integers(const std::string& name, const std::string& fallback, long long lo, long long hi) const {
    std::vector<long long> out;
    for (const std::string& item : list(name, fallback)) out.push_back(parse_integer(item, name, lo, hi));
    return out;
}

WeightChoice weight_choice(const Args& args) {
    return WeightChoice::parse(args.value("weights").value_or("auto"), int32_t(args.integer("group-size", 128, 1, 1 << 20)));
}

vision::TowerWeights vision_weights(const Args& args) {
    return vision::parse_tower_weights(args.value("vision-weights").value_or("auto"));
}

int32_t quant_policy(const Args& args) {
    const auto policy = int32_t(args.integer("quant-policy", 0, 0, 8));
    if (policy != 0 && policy != 4 && policy != 8) throw Error("--quant-policy takes 0 (16-bit), 8 or 4 (got " + std::to_string(policy) + ")");
    return policy;
}

}  // namespace lumen::cli
