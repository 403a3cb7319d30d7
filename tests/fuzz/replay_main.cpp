// Runs a fuzz target without libFuzzer: every file of the seed corpus, then deterministic
// mutations of each (truncations, byte flips, spliced bytes, and the structural JSON changes of
// fuzz_support: deep nesting, extreme numbers, long strings and arrays), so CI exercises the
// same entry points that `LUMEN_FUZZ=ON` builds feed to libFuzzer.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void run(const std::string& input) { LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size()); }

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR MUTATIONS_PER_SEED\n", argv[0]);
        return 2;
    }
    const int mutations = std::atoi(argv[2]);
    std::vector<std::string> seeds;
    for (const auto& entry : std::filesystem::directory_iterator(argv[1])) {
        std::ifstream f(entry.path(), std::ios::binary);
        seeds.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    if (seeds.empty()) {
        std::fprintf(stderr, "no seeds in %s\n", argv[1]);
        return 1;
    }
    std::mt19937 rng(12345);
    long runs = 0;
    for (const auto& seed : seeds) {
        run(seed);
        ++runs;
        for (int m = 0; m < mutations; ++m) {
            std::string s = seed;
            switch (rng() % 5) {
            case 0: s.resize(s.empty() ? 0 : rng() % s.size()); break;
            case 1:
                for (int k = 0, n = 1 + int(rng() % 4); k < n && !s.empty(); ++k) s[rng() % s.size()] ^= char(1 << (rng() % 8));
                break;
            case 2:
                if (!s.empty()) s[rng() % s.size()] = "{}[]\",:0-9e\\"[rng() % 12];
                break;
            case 3: {
                const std::string& other = seeds[rng() % seeds.size()];
                if (!other.empty() && !s.empty()) s.insert(rng() % s.size(), other.substr(rng() % other.size(), 16));
                break;
            }
            case 4: lumen::fuzz::mutate_json_structure(s, rng); break;
            }
            run(s);
            ++runs;
        }
    }
    std::printf("%ld inputs ran without a crash\n", runs);
    return 0;
}
