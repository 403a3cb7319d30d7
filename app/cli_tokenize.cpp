// `lumen-cli tokenize`: the ids a model's tokenizer gives a text, as Hugging Face does.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/cli_args.h"
#include "app/cli_commands.h"
#include "engine/util/error.h"
#include "engine/util/text_file.h"
#include "engine/text/tokenizer.h"

namespace lumen::cli {

int run_tokenize(const std::vector<std::string>& argv) {
    const Args args(argv, {"model", "text", "file"}, {"no-special", "json", "help"});
    if (args.flag("help")) {
        std::puts("Usage: lumen-cli tokenize --model DIR (--text TEXT | --file FILE) [--no-special] [--json]\n\n"
                  "Tokenizes TEXT as a user's prompt is tokenized: the BOS token if the model adds one, and\n"
                  "special-token strings such as <|im_start|> recognised. --no-special adds nothing and treats\n"
                  "special-token strings as plain text. DIR is a model folder or a tokenizer-only folder.\n"
                  "--json prints one JSON object as the last line: {\"ids\": [...], \"pieces\": [...]}.");
        return 0;
    }
    const std::string dir = args.required("model");
    std::string text;
    if (const auto t = args.value("text")) {
        text = *t;
    } else if (const auto f = args.value("file")) {
        const auto content = read_text_file(*f, kTextInput);
        if (!content) throw Error(*f + ": no such file");
        text = *content;
    } else {
        throw Error("give the text with --text or --file");
    }
    if (args.value("text") && args.value("file")) throw Error("give either --text or --file, not both");

    const auto tokenizer = Tokenizer::load(dir);
    EncodeOptions options;
    if (args.flag("no-special")) {
        options.add_special_tokens = false;
        options.split_special_tokens = true;
    }
    const auto ids = tokenizer->encode(text, options);
    if (args.flag("json")) {
        nlohmann::json pieces = nlohmann::json::array();
        for (int32_t id : ids) pieces.push_back(tokenizer->token(id));
        const nlohmann::json out{{"ids", ids}, {"pieces", pieces}};
        std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        return 0;
    }
    for (int32_t id : ids) std::printf("%8d  %s\n", id, tokenizer->token(id).c_str());
    std::printf("%zu tokens\n", ids.size());
    return 0;
}

}  // namespace lumen::cli
