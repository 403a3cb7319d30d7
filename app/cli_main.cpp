// lumen-cli: the engine at a terminal. Each subcommand lives in its own file.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "app/cli_commands.h"
#include "engine/util/error.h"

namespace {

constexpr const char* kUsage = R"(Usage: lumen-cli COMMAND [OPTIONS]

Commands:
  models [FOLDER...] [--json] [--no-hf-cache]
        List the models in FOLDERs and the Hugging Face cache, and whether Lumen can load them.
  tokenize --model DIR (--text TEXT | --file FILE) [--no-special] [--json]
        Token ids of a text as the model's tokenizer gives them. DIR may be a tokenizer-only folder.
  generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]
           [--min-p P] [--repetition-penalty R] [--seed S] [--device cpu|cuda|auto] [--quant-policy 0|8|4] [--json]
        Continue a text with a model (no chat template), streaming the reply.
  chat --model DIR [--system TEXT] [--prompt TEXT] [--template NAME] [--weights auto|16|int8|int4|fp8] [--quant-policy 0|8|4]
        Talk to a model through its chat template, multi-turn.
  bench (--model DIR | --config FILE --random-weights) [--batch 1,16,64] [--prompt-len N] [--gen-len N]
        [--dtype bf16|fp16|fp32] [--device cpu|cuda|auto] [--weights auto|16|int8|int4|fp8] [--group-size N]
        [--temperature T] [--top-k K] [--top-p P] [--json]
        Prefill and decode speed next to the memory-bandwidth floor.
  perplexity --model DIR --file TEXT [--context N] [--stride N] [--weights auto|16|int8|int4|fp8] [--json]
        How well a model predicts a text (sliding windows, as transformers' perplexity guide).
  quantize --model DIR --out DIR [--group-size 128] [--calib FILE] [--calib-samples N] [--calib-seqlen N]
        A 16-bit folder to 4 bits with AWQ, written as AutoAWQ writes it.
  serve --model DIR [--host 127.0.0.1] [--port 23333] [--api-key KEY] [--max-batch N] [--device cpu|cuda|auto]
        The OpenAI API (chat and completions, streamed or not, images as data: URLs) over the model.
  pull ORG/NAME[@REVISION] [--cache DIR]
        Download a model from the Hugging Face Hub into the Hugging Face cache, resumable and checked.
  devices
        The NVIDIA GPUs this build can use.

Run 'lumen-cli COMMAND --help' for the options of one command.
)";

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string command = argv[1];
    const std::vector<std::string> args(argv + 2, argv + argc);
    try {
        if (command == "models") return lumen::cli::run_models(args);
        if (command == "tokenize") return lumen::cli::run_tokenize(args);
        if (command == "devices") return lumen::cli::run_devices(args);
        if (command == "generate") return lumen::cli::run_generate(args);
        if (command == "chat") return lumen::cli::run_chat(args);
        if (command == "bench") return lumen::cli::run_bench(args);
        if (command == "perplexity") return lumen::cli::run_perplexity(args);
        if (command == "quantize") return lumen::cli::run_quantize(args);
        if (command == "serve") return lumen::cli::run_serve(args);
        if (command == "pull") return lumen::cli::run_pull(args);
        std::fprintf(stderr, "lumen-cli: unknown command '%s'\n\n%s", command.c_str(), kUsage);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "lumen-cli %s: %s\n", command.c_str(), lumen::user_message(e, "run '" + command + "'").c_str());
        return 1;
    }
}
