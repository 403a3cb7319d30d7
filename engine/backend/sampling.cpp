#include "engine/backend/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace lumen {

std::vector<int32_t> distinct_tokens(std::span<const int32_t> history) {
    std::vector<int32_t> out;
    std::unordered_set<int32_t> seen;
    for (int32_t id : history)
        if (seen.insert(id).second) out.push_back(id);
    return out;
}

std::vector<TokenLogprob> log_softmax_top(std::span<float> row, int32_t n) {
    if (row.empty()) return {};
    const float max = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (float v : row) sum += std::exp(double(v) - double(max));
    const double log_sum = double(max) + std::log(sum);
    for (float& v : row) v = float(double(v) - log_sum);
    std::vector<TokenLogprob> top;
    const std::size_t k = std::min(std::size_t(std::max(n, 0)), row.size());
    if (k == 0) return top;
    std::vector<int32_t> ids(row.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    auto better = [&](int32_t a, int32_t b) { return row[std::size_t(a)] > row[std::size_t(b)] || (row[std::size_t(a)] == row[std::size_t(b)] && a < b); };
    std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(k), ids.end(), better);
    for (std::size_t i = 0; i < k; ++i) top.push_back({ids[i], row[std::size_t(ids[i])]});
    return top;
}

std::vector<LoweredLogit> lowered_logits(std::span<const int32_t> reply, const SamplingParams& params) {
    std::vector<LoweredLogit> out;
    if (params.presence_penalty == 0.0f && params.frequency_penalty == 0.0f) return out;
    std::unordered_map<int32_t, std::size_t> at;
    for (int32_t id : reply) {
        const auto [it, fresh] = at.try_emplace(id, out.size());
        if (fresh) out.push_back({id, params.presence_penalty});
        out[it->second].by += params.frequency_penalty;
    }
    return out;
}

int32_t sample_logits(std::span<float> logits, const SamplingParams& params, std::span<const int32_t> penalized,
                      std::span<const LoweredLogit> lowered, double u) {
    if (params.repetition_penalty != 1.0f) {
        // Positive logits are divided, negative multiplied.
        for (int32_t id : penalized) {
            if (id < 0 || std::size_t(id) >= logits.size()) continue;
            float& l = logits[std::size_t(id)];
            l = l > 0 ? l / params.repetition_penalty : l * params.repetition_penalty;
        }
    }
    for (const LoweredLogit& t : lowered)
        if (t.id >= 0 && std::size_t(t.id) < logits.size()) logits[std::size_t(t.id)] -= t.by;
    if (params.greedy()) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());

    // Candidates as (logit / temperature, id). Vocabularies run to 150k entries: only the part
    // of the ranking a filter can reach is ever sorted.
    thread_local std::vector<std::pair<float, int32_t>> candidates;
    thread_local std::vector<double> p;
    candidates.clear();
    candidates.reserve(logits.size());
    for (std::size_t i = 0; i < logits.size(); ++i) candidates.emplace_back(logits[i] / params.temperature, int32_t(i));
    auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    // Puts the best `m` candidates first, in order.
    std::size_t sorted = 0;
    auto sort_best = [&](std::size_t m) {
        m = std::min(m, candidates.size());
        if (m <= sorted) return;
        std::nth_element(candidates.begin(), candidates.begin() + std::ptrdiff_t(m - 1), candidates.end(), by_logit);
        std::sort(candidates.begin(), candidates.begin() + std::ptrdiff_t(m), by_logit);
        sorted = m;
    };
    if (params.top_k > 0 && std::size_t(params.top_k) < candidates.size()) {
        sort_best(std::size_t(params.top_k));
        // transformers keeps every token tied with the k-th.
        const float kth = candidates[sorted - 1].first;
        const auto ties = std::partition(candidates.begin() + std::ptrdiff_t(sorted), candidates.end(),
                                         [&](const auto& c) { return c.first >= kth; });
        candidates.erase(ties, candidates.end());
        sort_best(candidates.size());
    }

    // Probabilities of the candidates in their current order (softmax in double).
    auto normalise = [&] {
        float max = -std::numeric_limits<float>::infinity();
        for (const auto& c : candidates) max = std::max(max, c.first);
        p.resize(candidates.size());
        double sum = 0;
        for (std::size_t i = 0; i < p.size(); ++i) sum += (p[i] = std::exp(double(candidates[i].first) - double(max)));
        for (auto& v : p) v /= sum;
    };
    if (params.top_p < 1.0f) {
        // As transformers: from the least likely up, drop tokens while their cumulative
        // probability stays at or below 1 - top_p; the most likely token always stays. The
        // ranking is sorted only as deep as the kept tokens reach.
        const double drop = 1.0 - double(params.top_p);
        for (std::size_t m = 256;; m *= 4) {
            sort_best(m);
            normalise();
            double outside = 0;  // everything below the sorted part, all dropped if this fits
            for (std::size_t i = sorted; i < p.size(); ++i) outside += p[i];
            if (outside > drop && sorted < candidates.size()) continue;
            double cumulative = outside;
            std::size_t n = sorted;
            while (n > 1) {
                cumulative += p[n - 1];
                if (cumulative > drop) break;
                --n;
            }
            candidates.resize(n);
            break;
        }
    }
    if (params.min_p > 0.0f) {
        // Relative to the most likely token: exp(logit - max) against min_p.
        float max = -std::numeric_limits<float>::infinity();
        for (const auto& c : candidates) max = std::max(max, c.first);
        std::size_t kept = 0;
        for (const auto& c : candidates)
            if (std::exp(double(c.first) - double(max)) >= double(params.min_p)) candidates[kept++] = c;
        candidates.resize(kept);
    }
    if (sorted > 0) std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    normalise();
    double cumulative = 0;
    for (std::size_t i = 0; i < p.size(); ++i) {
        cumulative += p[i];
        if (u < cumulative) return candidates[i].second;
    }
    return candidates.back().second;
}

}  // namespace lumen
