#pragma once
// Chat prompts for the model families Lumen runs, rendered exactly as each family's reference does
// (the Jinja template its tokenizer_config.json publishes, or InternVL's conversation.py). Images
// are "<image>" placeholders, one per image, placed as the family places them; the vision side
// expands them into image tokens.
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lumen {

struct ChatMessage {
    std::string role;  // "system", "user" or "assistant"
    std::string text;
    int images = 0;    // images attached to this message, shown before its text
};

inline constexpr std::string_view kImagePlaceholder = "<image>";

class ChatTemplate {
public:
    enum class Family {
        InternLM2,   // internlm2-chat's Jinja template: <s> + ChatML, newline after each turn
        InternVL2,   // InternVL2 conversation.py "internlm2-chat" / "Hermes-2": system always, turns glued
        InternVL25,  // InternVL2.5 conversation.py "internvl2_5": system always, newline after each turn
        ChatML,      // Qwen2-style ChatML, with the model's default system prompt if it has one
        Llava,       // llava-1.5-hf: "USER: ... ASSISTANT:"
        Llama2,      // [INST] <<SYS>> ... [/INST]
        Llama3,      // <|start_header_id|>role<|end_header_id|>
        Plain,       // no template: a base model continues the text as written
    };

    explicit ChatTemplate(Family family, std::string default_system = {});

    // By name: internlm2, internvl2, internvl2_5, chatml, qwen2, qwen2.5, llava, llama2, llama3, plain.
    static std::optional<ChatTemplate> by_name(std::string_view name);
    static std::string names();  // for messages and --help
    // Recognises a published Jinja template; nullopt for one it does not know.
    static std::optional<ChatTemplate> recognise(std::string_view jinja);

    // The prompt text. Throws lumen::Error for conversations the family cannot express.
    std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt = true) const;

    Family family() const { return family_; }
    std::string_view name() const;
    // Whether the tokenizer should add its BOS/EOS when encoding the rendered prompt (the
    // template does not write them itself, but the reference tokenizes with special tokens).
    bool tokenize_with_special_tokens() const;
    // Token strings that end the assistant's turn (besides the model's eos ids).
    std::vector<std::string> stop_tokens() const;

private:
    Family family_;
    std::string default_system_;
};

}  // namespace lumen
