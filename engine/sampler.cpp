#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "engine/error.h"
#include "engine/text_file.h"

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

Sampler::Sampler(const SamplingParams& params)
    : params_(params), rng_(params.seed ? params.seed : std::random_device{}()) {}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
    if (params_.repetition_penalty != 1.0f) {
        // Each distinct earlier token once: positive logits are divided, negative multiplied.
        std::unordered_set<int32_t> seen(history.begin(), history.end());
        for (int32_t id : seen) {
            if (id < 0 || std::size_t(id) >= logits.size()) continue;
            float& l = logits[std::size_t(id)];
            l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
        }
    }
    if (params_.greedy()) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

    // Candidates as (logit / temperature, id). Vocabularies run to 150k entries: only the part
    // of the ranking a filter can reach is ever sorted.
    candidates_.clear();
    candidates_.reserve(logits.size());
    for (std::size_t i = 0; i < logits.size(); ++i) candidates_.emplace_back(logits[i] / params_.temperature, int32_t(i));
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    // Puts the best `m` candidates first, in order.
    std::size_t sorted = 0;
    auto sort_best = [&](std::size_t m) {
        m = std::min(m, candidates_.size());
        if (m <= sorted) return;
        std::nth_element(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(m - 1), candidates_.end(), by_logit);
        std::sort(candidates_.begin(), candidates_.begin() + std::ptrdiff_t(m), by_logit);
        sorted = m;
    };
    if (params_.top_k > 0 && std::size_t(params_.top_k) < candidates_.size()) {
        sort_best(std::size_t(params_.top_k));
        // transformers keeps every token tied with the k-th.
        const float kth = candidates_[sorted - 1].first;
        const auto ties = std::partition(candidates_.begin() + std::ptrdiff_t(sorted), candidates_.end(),
                                         [&](const auto& c) { return c.first >= kth; });
        candidates_.erase(ties, candidates_.end());
        sort_best(candidates_.size());
    }

    // Probabilities of the candidates in their current order (softmax in double).
    std::vector<double>& p = probabilities_;
    auto normalise = [&] {
        float max = -std::numeric_limits<float>::infinity();
        for (const auto& c : candidates_) max = std::max(max, c.first);
        p.resize(candidates_.size());
        double sum = 0;
        for (std::size_t i = 0; i < p.size(); ++i) sum += (p[i] = std::exp(double(candidates_[i].first) - double(max)));
        for (auto& v : p) v /= sum;
    };
    if (params_.top_p < 1.0f) {
        // As transformers: from the least likely up, drop tokens while their cumulative
        // probability stays at or below 1 - top_p; the most likely token always stays. The
        // ranking is sorted only as deep as the kept tokens reach.
        const double drop = 1.0 - double(params_.top_p);
        for (std::size_t m = 256;; m *= 4) {
            sort_best(m);
            normalise();
            double outside = 0;  // everything below the sorted part, all dropped if this fits
            for (std::size_t i = sorted; i < p.size(); ++i) outside += p[i];
            if (outside > drop && sorted < candidates_.size()) continue;
            double cumulative = outside;
            std::size_t n = sorted;
            while (n > 1) {
                cumulative += p[n - 1];
                if (cumulative > drop) break;
                --n;
            }
            candidates_.resize(n);
            break;
        }
    }
    normalise();
    if (params_.min_p > 0.0f) {
        const double threshold = double(params_.min_p) * *std::max_element(p.begin(), p.end());
        std::size_t kept = 0;
        for (std::size_t i = 0; i < candidates_.size(); ++i)
            if (p[i] >= threshold) candidates_[kept++] = candidates_[i];
        candidates_.resize(kept);
        normalise();
    }
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    double cumulative = 0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        cumulative += p[i];
        if (u < cumulative) return candidates_[i].second;
    }
    return candidates_.back().second;
}

}  // namespace lumen
