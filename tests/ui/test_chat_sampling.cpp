// A conversation's sampling as typed settings: stored as JSON (unknown keys ignored, missing
// ones unset), layered over the model's generation_config.json, and turned into the engine's
// parameters, min_p included.
#include <QtTest>

#include "engine/model/generation_config.h"
#include "tests/support/test_support.h"
#include "ui/chat_sampling.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;

class TestChatSampling : public QObject {
    Q_OBJECT
private slots:
    void samplingRoundTripsThroughJson() {
        const ChatSampling all{.temperature = 0.6, .top_p = 0.9, .min_p = 0.05, .top_k = 40, .repetition_penalty = 1.1,
                               .max_new_tokens = 300, .seed = 42};
        QCOMPARE(ChatSampling::from_json(all.to_json()), all);
        // Only what is set is written: the rest keeps following the model.
        const QJsonObject some = ChatSampling{.min_p = 0.1}.to_json();
        QCOMPARE(some.keys(), QStringList{"min_p"});
        QCOMPARE(some.value("min_p").toDouble(), 0.1);
        QCOMPARE(ChatSampling::from_json(some), ChatSampling{.min_p = 0.1});
        QVERIFY(ChatSampling{}.to_json().isEmpty());
    }

    // What an older (or newer) Lumen wrote: keys it does not know are ignored, missing ones are
    // unset, and a value that is not a number counts as missing.
    void unknownAndMissingKeys() {
        const QJsonObject old{
            {"temperature", 0.3}, {"mirostat", 2}, {"top_k", "40"}, {"max_new_tokens", 200.7}, {"seed", QJsonValue()}};
        const ChatSampling s = ChatSampling::from_json(old);
        QCOMPARE(s, (ChatSampling{.temperature = 0.3, .max_new_tokens = 200}));
        QCOMPARE(ChatSampling::from_json({}), ChatSampling{});
        QCOMPARE(s.to_json(), (QJsonObject{{"temperature", 0.3}, {"max_new_tokens", 200}}));
    }

    void conversationValuesLayerOverTheModels() {
        SamplingParams config;
        config.temperature = 0.8f;
        config.top_p = 0.95f;
        config.min_p = 0.05f;
        config.top_k = 50;
        const ChatSampling model = ChatSampling::model_defaults(config, 4096);
        QCOMPARE(model.max_new_tokens, std::optional<int>(1024));
        QCOMPARE(ChatSampling::model_defaults(config, 512).max_new_tokens, std::optional<int>(256));  // half the context
        QVERIFY(!model.seed);
        const ChatSampling conversation{.temperature = 0.0, .max_new_tokens = 100};
        const ChatSampling s = conversation.over(model);
        QCOMPARE(*s.temperature, 0.0);  // greedy, as chosen
        QCOMPARE(*s.top_p, double(0.95f));
        QCOMPARE(*s.min_p, double(0.05f));
        QCOMPARE(s.reply_limit(), 100);
        const SamplingParams p = s.params();
        QCOMPARE(p.temperature, 0.0f);
        QCOMPARE(p.min_p, 0.05f);
        QCOMPARE(p.top_k, 50);
        QCOMPARE(p.seed, uint64_t(0));  // nobody set one: a fresh seed each reply
        QCOMPARE(p.repetition_penalty, 1.0f);
        // Nothing set anywhere: the app's fallbacks.
        QCOMPARE(ChatSampling{}.params().temperature, 0.7f);
        QCOMPARE(ChatSampling{}.params().min_p, 0.0f);
        QCOMPARE(ChatSampling{}.reply_limit(), 1024);
    }

    void minPComesFromTheGenerationConfig() {
        QTemporaryDir model;
        write_file(path_of(model) / "generation_config.json", R"({"do_sample": true, "temperature": 0.6, "min_p": 0.05})");
        const ChatSampling defaults = ChatSampling::model_defaults(load_generation_config(path_of(model)), 512);
        QCOMPARE(defaults.min_p, std::optional<double>(0.05f));
        QCOMPARE(ChatSampling{}.over(defaults).params().min_p, 0.05f);
        QCOMPARE(ChatSampling{.min_p = 0.2}.over(defaults).params().min_p, 0.2f);
        // Greedy (no do_sample): min_p is off.
        write_file(path_of(model) / "generation_config.json", R"({"min_p": 0.05})");
        QCOMPARE(ChatSampling::model_defaults(load_generation_config(path_of(model)), 512).min_p, std::optional<double>(0.0));
    }
};

QTEST_GUILESS_MAIN(TestChatSampling)
#include "test_chat_sampling.moc"
