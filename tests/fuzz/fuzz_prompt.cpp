// Fuzz target: a conversation with hostile content rendered by every chat template, tokenized,
// and its <image> placeholders expanded into image tokens. The input is the messages' texts,
// separated by NUL bytes (roles alternate user, assistant; a leading one may be the system's).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/text/chat_template.h"
#include "engine/text/tokenizer.h"
#include "engine/util/error.h"
#include "tests/fuzz/fuzz_support.h"
#include "vision/prompt.h"
#include "vision/vision_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace lumen;
    static const std::unique_ptr<Tokenizer> tokenizer = [] {
        const auto dir = fuzz::scratch_dir();
        fuzz::write_file(dir / "tokenizer.json", fuzz::tiny_tokenizer_json());
        return Tokenizer::load(dir);
    }();
    static const vision::VisionConfig vision = [] {
        vision::VisionConfig v;
        v.tokens_per_tile = 3;
        v.image_token = "<image>";
        v.image_token_id = 258;
        v.image_start = "<s>";
        v.image_end = "</s>";
        return v;
    }();
    const std::string input(reinterpret_cast<const char*>(data), size);
    std::vector<ChatMessage> messages;
    std::size_t at = 0;
    const bool system = !input.empty() && input[0] == 'S';
    while (at <= input.size() && messages.size() < 64) {
        const std::size_t end = std::min(input.find('\0', at), input.size());
        const char* role = system && messages.empty() ? "system" : (messages.size() - (system ? 1 : 0)) % 2 ? "assistant" : "user";
        messages.push_back({role, input.substr(at, end - at), int(end - at) % 3});
        at = end + 1;
    }
    auto pixels = std::make_shared<ImagePixels>();
    pixels->tiles = 2;
    const vision::PreparedImage image{pixels, 7};
    for (const char* name : {"internlm2", "internvl2", "internvl2_5", "chatml", "qwen2", "qwen2.5", "llava", "llama2", "llama3", "plain"}) {
        try {
            const ChatTemplate t = *ChatTemplate::by_name(name);
            const std::string prompt = t.render(messages);
            const auto ids = tokenizer->encode(prompt, {.add_special_tokens = t.tokenize_with_special_tokens()});
            (void)tokenizer->decode(ids, true);
            std::size_t placeholders = 0;
            for (std::size_t p = prompt.find(kImagePlaceholder); p != std::string::npos; p = prompt.find(kImagePlaceholder, p + 1))
                ++placeholders;
            const std::vector<vision::PreparedImage> images(std::min<std::size_t>(placeholders, 256), image);
            (void)vision::expand_prompt(prompt, images, vision, *tokenizer, {});
        } catch (const Error&) {
        }
    }
    return 0;
}
