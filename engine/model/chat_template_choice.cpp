#include "engine/model/chat_template_choice.h"

#include "engine/text/tokenizer.h"
#include "engine/util/error.h"

namespace lumen {

ChatTemplate chat_template_for(const ModelConfig& config, const Tokenizer& tokenizer) {
    if (config.kind == ModelKind::InternVLChat) {
        if (auto t = ChatTemplate::by_name(config.template_name)) return *t;
        throw Error("config.json: InternVL template '" + config.template_name +
                    "' is not supported (supported: internlm2-chat, Hermes-2, internvl2_5)");
    }
    if (auto t = ChatTemplate::recognise(tokenizer.chat_template())) return *t;
    switch (config.kind) {
    case ModelKind::Llava: return ChatTemplate(ChatTemplate::Family::Llava);
    case ModelKind::InternVLHf: return ChatTemplate(ChatTemplate::Family::ChatML);
    default: break;
    }
    switch (config.text.family) {
    case TextFamily::InternLM2: return ChatTemplate(ChatTemplate::Family::InternLM2);
    case TextFamily::Qwen2: return *ChatTemplate::by_name("qwen2");
    case TextFamily::Llama:
        // A Llama folder without a chat template is a base model (Llama-2-chat and Llama-3-Instruct
        // ship theirs): it continues text rather than answering turns.
        return ChatTemplate(tokenizer.token_id("<|start_header_id|>") ? ChatTemplate::Family::Llama3 : ChatTemplate::Family::Plain);
    }
    throw Error("cannot tell which chat template this model uses; choose one (" + ChatTemplate::names() + ")");
}

}  // namespace lumen
