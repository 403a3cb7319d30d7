#include "engine/text/chat_template.h"

#include "engine/util/error.h"
#include "engine/text/tokenizer.h"
#include "engine/text/unicode.h"

namespace lumen {
namespace {

// InternVL's system messages, from its conversation.py (InternVL2's mixes a full-width and an
// ASCII comma; both are as published).
const std::string kInternVL2System =
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。";
const std::string kInternVL25System =
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。";
const std::string kQwen2System = "You are a helpful assistant.";
const std::string kQwen25System = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// Python's str.strip(): Unicode whitespace plus the ASCII separators 0x1c-0x1f.
std::string python_strip(std::string_view s) {
    auto space = [](char32_t c) { return unicode::is_whitespace(c) || (c >= 0x1c && c <= 0x1f); };
    std::size_t b = 0, e = s.size();
    while (b < e) {
        std::size_t i = b;
        if (!space(unicode::next_code_point(s, i))) break;
        b = i;
    }
    while (e > b) {
        std::size_t p = e - 1;
        while (p > b && (static_cast<unsigned char>(s[p]) & 0xc0) == 0x80) --p;
        std::size_t i = p;
        if (!space(unicode::next_code_point(s, i))) break;
        e = p;
    }
    return std::string(s.substr(b, e - b));
}

std::string images_then(const ChatMessage& m) {
    std::string out;
    for (int i = 0; i < m.images; ++i) out += std::string(kImagePlaceholder) + "\n";
    return out + m.text;
}

std::string upper_ascii(std::string s) {
    for (auto& c : s)
        if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
    return s;
}

}  // namespace

ChatTemplate::ChatTemplate(Family family, std::string default_system)
    : family_(family), default_system_(std::move(default_system)) {}

std::optional<ChatTemplate> ChatTemplate::by_name(std::string_view name) {
    if (name == "internlm2") return ChatTemplate(Family::InternLM2);
    if (name == "internvl2" || name == "internlm2-chat" || name == "Hermes-2") return ChatTemplate(Family::InternVL2);
    if (name == "internvl2_5") return ChatTemplate(Family::InternVL25);
    if (name == "chatml") return ChatTemplate(Family::ChatML);
    if (name == "qwen2") return ChatTemplate(Family::ChatML, kQwen2System);
    if (name == "qwen2.5") return ChatTemplate(Family::ChatML, kQwen25System);
    if (name == "llava") return ChatTemplate(Family::Llava);
    if (name == "llama2") return ChatTemplate(Family::Llama2);
    if (name == "llama3") return ChatTemplate(Family::Llama3);
    if (name == "plain") return ChatTemplate(Family::Plain);
    return std::nullopt;
}

std::string ChatTemplate::names() { return "internlm2, internvl2, internvl2_5, chatml, qwen2, qwen2.5, llava, llama2, llama3, plain"; }

std::string_view ChatTemplate::name() const {
    switch (family_) {
    case Family::InternLM2: return "internlm2";
    case Family::InternVL2: return "internvl2";
    case Family::InternVL25: return "internvl2_5";
    case Family::ChatML: return default_system_ == kQwen2System ? "qwen2" : default_system_ == kQwen25System ? "qwen2.5" : "chatml";
    case Family::Llava: return "llava";
    case Family::Llama2: return "llama2";
    case Family::Llama3: return "llama3";
    case Family::Plain: return "plain";
    }
    return "?";
}

std::optional<ChatTemplate> ChatTemplate::recognise(std::string_view jinja) {
    auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
    if (has("<|start_header_id|>")) return ChatTemplate(Family::Llama3);
    if (has("[INST]") && has("<<SYS>>")) return ChatTemplate(Family::Llama2);
    if (has("ASSISTANT:") && has("upper()")) return ChatTemplate(Family::Llava);
    if (has("<|im_start|>")) {
        if (has("bos_token")) return ChatTemplate(Family::InternLM2);
        if (has(kQwen25System)) return ChatTemplate(Family::ChatML, kQwen25System);
        if (has(kQwen2System)) return ChatTemplate(Family::ChatML, kQwen2System);
        return ChatTemplate(Family::ChatML);
    }
    return std::nullopt;
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt) const {
    for (const auto& m : messages)
        if (m.role != "system" && m.role != "user" && m.role != "assistant")
            throw Error("chat message role '" + m.role + "' is not one of system, user, assistant");
    std::string out;
    switch (family_) {
    case Family::InternLM2:
        out = "<s>";
        for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + images_then(m) + "<|im_end|>\n";
        if (add_generation_prompt) out += "<|im_start|>assistant\n";
        return out;

    case Family::InternVL2:
    case Family::InternVL25: {
        // conversation.py: the system block is always written; the prompt ends with the open
        // assistant turn whatever add_generation_prompt says.
        const std::string sep = family_ == Family::InternVL2 ? "<|im_end|>" : "<|im_end|>\n";
        std::size_t first = 0;
        std::string system = family_ == Family::InternVL2 ? kInternVL2System : kInternVL25System;
        if (!messages.empty() && messages[0].role == "system") system = messages[0].text, first = 1;
        out = "<|im_start|>system\n" + system + sep;
        for (std::size_t i = first; i < messages.size(); ++i) {
            const auto& m = messages[i];
            if (m.role == "system") throw Error("the InternVL template takes a system message only first");
            out += "<|im_start|>" + m.role + "\n" + images_then(m) + sep;
        }
        out += "<|im_start|>assistant\n";
        return out;
    }

    case Family::ChatML:
        if (!default_system_.empty() && (messages.empty() || messages[0].role != "system"))
            out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
        for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + images_then(m) + "<|im_end|>\n";
        if (add_generation_prompt) out += "<|im_start|>assistant\n";
        return out;

    case Family::Llava:
        for (const auto& m : messages) {
            if (m.role != "system") out += upper_ascii(m.role) + ": ";
            for (int i = 0; i < m.images; ++i) out += std::string(kImagePlaceholder) + "\n";
            out += m.text + " ";
        }
        if (add_generation_prompt) out += "ASSISTANT:";
        return out;

    case Family::Llama2: {
        std::size_t first = 0;
        std::optional<std::string> system;
        if (!messages.empty() && messages[0].role == "system") system = messages[0].text, first = 1;
        for (std::size_t i = first; i < messages.size(); ++i) {
            const auto& m = messages[i];
            const std::size_t k = i - first;
            if ((m.role == "user") != (k % 2 == 0))
                throw Error("the llama2 template needs roles that alternate user/assistant/user/...");
            std::string content = images_then(m);
            if (k == 0 && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
            if (m.role == "user") out += "<s>[INST] " + python_strip(content) + " [/INST]";
            else if (m.role == "assistant") out += " " + python_strip(content) + " </s>";
        }
        return out;
    }

    case Family::Llama3:
        for (std::size_t i = 0; i < messages.size(); ++i) {
            if (i == 0) out += "<|begin_of_text|>";
            out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" + python_strip(images_then(messages[i])) +
                   "<|eot_id|>";
        }
        // The published template ends with the assistant header whatever add_generation_prompt says.
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
        return out;

    case Family::Plain:
        // The conversation as one text: the model continues where it ends.
        for (const auto& m : messages) {
            out += images_then(m);
            if (m.role == "system") out += "\n\n";
        }
        return out;
    }
    return out;
}

bool ChatTemplate::tokenize_with_special_tokens() const {
    // LLaVA's processor and InternVL's chat() tokenize the prompt with the tokenizer's BOS; the
    // others write BOS into the template themselves (or have none).
    return family_ == Family::Llava || family_ == Family::InternVL2 || family_ == Family::InternVL25 || family_ == Family::Plain;
}

std::vector<std::string> ChatTemplate::stop_tokens() const {
    switch (family_) {
    case Family::InternLM2:
    case Family::InternVL2:
    case Family::InternVL25: return {"<|im_end|>"};
    case Family::ChatML: return {"<|im_end|>", "<|endoftext|>"};
    case Family::Llava:
    case Family::Llama2: return {"</s>"};
    case Family::Llama3: return {"<|eot_id|>", "<|end_of_text|>"};
    case Family::Plain: return {};
    }
    return {};
}

}  // namespace lumen
