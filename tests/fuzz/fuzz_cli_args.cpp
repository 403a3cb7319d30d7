// Fuzz target: lumen-cli's command line. The input is the arguments, separated by NUL bytes; every
// value is read as each kind of option (text, number, integer, list of integers).
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "app/cli_args.h"
#include "engine/util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string input(reinterpret_cast<const char*>(data), size);
    std::vector<std::string> argv;
    for (std::size_t at = 0; at <= input.size() && argv.size() < 64;) {
        const std::size_t end = std::min(input.find('\0', at), input.size());
        argv.push_back(input.substr(at, end - at));
        at = end + 1;
    }
    try {
        const lumen::cli::Args args(argv, {"model", "prompt", "max-new-tokens", "batch", "temperature"}, {"json", "help"},
                                    {"image"});
        for (const char* name : {"model", "prompt", "max-new-tokens", "batch", "temperature", "image"}) {
            try {
                (void)args.value(name);
                (void)args.values(name);
                (void)args.number(name, 1.0);
                (void)args.integer(name, 1, 1, 1 << 30);
                (void)args.integer(name, 0, std::numeric_limits<long long>::min(), std::numeric_limits<long long>::max());
                (void)args.integers(name, "1,16,64", 1, 4096);
            } catch (const lumen::Error&) {
            }
        }
        (void)args.positional();
        (void)args.flag("json");
    } catch (const lumen::Error&) {
    }
    return 0;
}
