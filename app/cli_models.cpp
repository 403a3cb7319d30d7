// `lumen-cli models` and `lumen-cli devices`: what this machine has to run.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/model/model_scanner.h"
#include "engine/backend/device.h"

namespace lumen::cli {

std::string format_count(long long n) {
    const std::string digits = std::to_string(n < 0 ? -n : n);
    std::string out;
    if (n < 0) out.push_back('-');
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
        out.push_back(digits[i]);
    }
    return out;
}

std::string format_bytes(unsigned long long n) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(n);
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, ++u;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
    return buf;
}

int run_models(const std::vector<std::string>& argv) {
    const Args args(argv, {}, {"json", "no-hf-cache", "help"});
    if (args.flag("help")) {
        std::puts("Usage: lumen-cli models [FOLDER...] [--json] [--no-hf-cache]\n\n"
                  "Lists the model folders found in each FOLDER (a model folder itself, or a tree holding\n"
                  "model folders up to three levels down) and in the Hugging Face hub cache (HF_HUB_CACHE,\n"
                  "else HF_HOME/hub, else ~/.cache/huggingface/hub), with the exact parameter count read\n"
                  "from the safetensors headers and, for each folder Lumen cannot load, the reason.");
        return 0;
    }
    std::vector<std::filesystem::path> folders(args.positional().begin(), args.positional().end());
    const auto models = scan_models(folders, !args.flag("no-hf-cache"));

    if (args.flag("json")) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& m : models)
            out.push_back({{"name", m.name},
                           {"path", m.path.string()},
                           {"from_hf_cache", m.from_hf_cache},
                           {"architecture", m.architecture},
                           {"family", m.family},
                           {"parameters", m.parameters},
                           {"dtype", m.dtype},
                           {"size_bytes", m.size_bytes},
                           {"vision", m.vision},
                           {"loadable", m.loadable},
                           {"problem", m.problem}});
        std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        return 0;
    }
    if (models.empty()) {
        std::printf("No models found. Looked in:%s%s\n", folders.empty() ? "" : " the given folders and",
                    args.flag("no-hf-cache") ? "" : (" " + hf_hub_cache_dir().string()).c_str());
        return 0;
    }
    std::printf("%-36s %-18s %15s %-5s %10s %-6s %s\n", "NAME", "FAMILY", "PARAMETERS", "DTYPE", "SIZE", "KIND",
                "STATUS");
    for (const auto& m : models) {
        std::printf("%-36s %-18s %15s %-5s %10s %-6s %s\n", m.name.c_str(), m.family.empty() ? "-" : m.family.c_str(),
                    m.parameters ? format_count(m.parameters).c_str() : "-", m.dtype.empty() ? "-" : m.dtype.c_str(),
                    format_bytes(m.size_bytes).c_str(), m.vision ? "vision" : "text",
                    m.loadable ? "ok" : m.problem.c_str());
    }
    return 0;
}

int run_devices(const std::vector<std::string>& argv) {
    const Args args(argv, {}, {"help"});
    if (args.flag("help")) {
        std::puts("Usage: lumen-cli devices\n\nLists the NVIDIA GPUs this build of Lumen can use.");
        return 0;
    }
    std::string why;
    const auto gpus = list_gpus(&why);
    if (gpus.empty()) {
        std::printf("%s; Lumen will run on the CPU.\n", why.c_str());
        return 0;
    }
    for (const auto& d : gpus)
        std::printf("%s  %s  (compute %d.%d, %s total, %s free)\n", d.id.c_str(), d.name.c_str(), d.compute_major, d.compute_minor,
                    format_bytes(d.total_memory).c_str(), format_bytes(d.free_memory).c_str());
    return 0;
}

}  // namespace lumen::cli
