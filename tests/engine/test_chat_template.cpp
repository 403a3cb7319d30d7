// Chat prompts: each family's rendering equals its reference. Jinja families against
// apply_chat_template output from transformers 5.17 (tests/data/goldens/chat_templates.json, made
// by tests/reference/make_chat_template_goldens.py); Llama-2, Qwen2 and InternVL's conversation.py
// against their published formats written out below.
#include <QtTest>
#include <nlohmann/json.hpp>

#include "engine/model/chat_template_choice.h"
#include "engine/text/chat_template.h"
#include "engine/util/error.h"
#include "engine/model/model_config.h"
#include "engine/util/text_file.h"
#include "engine/text/tokenizer.h"
#include "tests/support/test_support.h"

using namespace lumen;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path source_dir() { return fs::path(LUMEN_SOURCE_DIR); }

struct Conversation {
    std::string name;
    bool add_generation_prompt;
    std::vector<ChatMessage> messages;
};

std::vector<Conversation> conversations() {
    std::vector<Conversation> out;
    for (const auto& c : json::parse(*test::read_test_file(source_dir() / "tests/data/chat_conversations.json"))) {
        Conversation conv{c["name"], c["add_generation_prompt"], {}};
        for (const auto& m : c["messages"]) conv.messages.push_back({m["role"], m["text"], m["images"]});
        out.push_back(std::move(conv));
    }
    return out;
}

const Conversation& conversation(const std::string& name) {
    static const auto all = conversations();
    for (const auto& c : all)
        if (c.name == name) return c;
    throw std::runtime_error("no conversation " + name);
}

std::string render(const char* family, const std::string& conv) {
    const auto& c = conversation(conv);
    return ChatTemplate::by_name(family)->render(c.messages, c.add_generation_prompt);
}

const std::string kInternVL2System =
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。";
const std::string kInternVL25System =
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。";

}  // namespace

class TestChatTemplate : public QObject {
    Q_OBJECT
private slots:
    void matchesTransformers_data() {
        QTest::addColumn<QString>("family");
        QTest::addColumn<QString>("conversation");
        QTest::addColumn<QString>("expected");
        const json golden = json::parse(*test::read_test_file(source_dir() / "tests/data/goldens/chat_templates.json"));
        // Golden family -> our template name.
        const std::map<std::string, std::string> ours{
            {"internlm2", "internlm2"}, {"llava", "llava"}, {"llama3", "llama3"}, {"internvl-hf", "chatml"}};
        for (const auto& [family, rendered] : golden["families"].items())
            for (const auto& [conv, text] : rendered.items())
                QTest::newRow((family + " " + conv).c_str())
                    << QString::fromStdString(ours.at(family)) << QString::fromStdString(conv)
                    << QString::fromStdString(text.get<std::string>());
    }
    void matchesTransformers() {
        QFETCH(QString, family);
        QFETCH(QString, conversation);
        QFETCH(QString, expected);
        QCOMPARE(QString::fromStdString(render(family.toUtf8().constData(), conversation.toStdString())), expected);
    }

    void publishedFormats() {
        // Llama-2-chat: BOS per user turn, system folded into the first turn, content stripped.
        QCOMPARE(render("llama2", "single"), std::string("<s>[INST] Hello! [/INST]"));
        QCOMPARE(render("llama2", "system_multi_turn"),
                 std::string("<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi, who are you? [/INST] "
                             "I am an assistant. How can I help? </s><s>[INST] Tell me a joke about cats. [/INST]"));
        QCOMPARE(render("llama2", "unicode_and_whitespace"),
                 std::string("<s>[INST] 翻译成英文：你好，世界！ 👋\n\tcode:  x = 1 [/INST]"));
        const std::vector<ChatMessage> bad{{"assistant", "hi", 0}};
        QVERIFY_THROWS_EXCEPTION(Error, ChatTemplate::by_name("llama2")->render(bad));

        // Qwen2 ChatML: the default system prompt only when the conversation has none.
        QCOMPARE(render("qwen2", "single"),
                 std::string("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
                             "<|im_start|>assistant\n"));
        QCOMPARE(render("qwen2", "no_generation_prompt"),
                 std::string("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                             "<|im_start|>assistant\n4<|im_end|>\n"));
        QVERIFY(render("qwen2", "system_multi_turn").rfind("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi", 0) == 0);
        QCOMPARE(render("qwen2.5", "single"),
                 std::string("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                             "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"));

        // InternVL conversation.py: system always present, "<image>\n" before the question.
        QCOMPARE(render("internvl2", "one_image"),
                 "<|im_start|>system\n" + kInternVL2System + "<|im_end|><|im_start|>user\n<image>\nWhat is shown in this image?<|im_end|>"
                 "<|im_start|>assistant\n");
        QCOMPARE(render("internvl2", "system_multi_turn"),
                 std::string("<|im_start|>system\nYou are a helpful assistant.<|im_end|><|im_start|>user\nHi, who are you?<|im_end|>"
                             "<|im_start|>assistant\nI am an assistant. How can I help?<|im_end|><|im_start|>user\nTell me a joke about "
                             "cats.<|im_end|><|im_start|>assistant\n"));
        QCOMPARE(render("internvl2_5", "images_multi_turn"),
                 std::string("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n<image>\n<image>\nCompare these two "
                             "pictures.<|im_end|>\n<|im_start|>assistant\nThe first is a city, the second a beach.<|im_end|>\n"
                             "<|im_start|>user\n<image>\nAnd this one?<|im_end|>\n<|im_start|>assistant\n"));
        QCOMPARE(render("internvl2_5", "single"),
                 "<|im_start|>system\n" + kInternVL25System + "<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
    }

    void recognisesPublishedTemplates() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const std::map<std::string, std::string> expected{{"internlm2", "internlm2"}, {"llava15", "llava"}, {"qwen3", "chatml"},
                                                          {"llama3", "llama3"}, {"internvl-qwen2", "chatml"}};
        for (const auto& [dir, name] : expected) {
            const auto config = json::parse(*test::read_test_file(data / "tokenizers" / dir / "tokenizer_config.json"));
            const auto t = ChatTemplate::recognise(config["chat_template"].get<std::string>());
            QVERIFY2(t, dir.c_str());
            QCOMPARE(std::string(t->name()), name);
        }
        QVERIFY(!ChatTemplate::recognise("{{ messages }}"));
    }

    void chosenFromTheModelFolder() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const auto internlm_tok = Tokenizer::load(data / "tokenizers" / "internlm2");
        const auto qwen_tok = Tokenizer::load(data / "tokenizers" / "internvl-qwen2");
        auto config = [&](const char* name) { return parse_model_config(*test::read_test_file(data / "configs" / name), name); };
        // InternVL's own "template" field wins over the tokenizer's Jinja template.
        QCOMPARE(std::string(chat_template_for(config("InternVL2-2B.json"), *internlm_tok).name()), std::string("internvl2"));
        QCOMPARE(std::string(chat_template_for(config("InternVL2-1B.json"), *qwen_tok).name()), std::string("internvl2"));
        QCOMPARE(std::string(chat_template_for(config("internlm2-chat-7b.json"), *internlm_tok).name()), std::string("internlm2"));
        auto unknown = config("InternVL2-2B.json");
        unknown.template_name = "phi3-chat";
        QVERIFY_THROWS_EXCEPTION(Error, chat_template_for(unknown, *internlm_tok));
        // The prompt tokenizes with the chat markers as single tokens and one BOS.
        const auto t = ChatTemplate::by_name("internlm2");
        const std::vector<ChatMessage> msgs{{"user", "Hi", 0}};
        const auto ids = internlm_tok->encode(t->render(msgs), {.add_special_tokens = t->tokenize_with_special_tokens()});
        QCOMPARE(ids[0], 1);
        QCOMPARE(ids[1], 92543);
        QVERIFY(ids[2] != 1);
    }
};

QTEST_GUILESS_MAIN(TestChatTemplate)
#include "test_chat_template.moc"
