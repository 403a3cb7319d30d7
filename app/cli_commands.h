#pragma once
// The subcommands of lumen-cli; each takes the arguments after its name and returns an exit code.
#include <string>
#include <vector>

namespace lumen::cli {

int run_models(const std::vector<std::string>& args);
int run_tokenize(const std::vector<std::string>& args);
int run_devices(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);
int run_chat(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
class Args;
int run_bench_vision(const Args& args);  // bench --vision

// Formatting shared by the commands' tables.
std::string format_count(long long n);     // 1234567 -> "1,234,567"
std::string format_bytes(unsigned long long n);  // 1536 -> "1.5 KiB"

}  // namespace lumen::cli
