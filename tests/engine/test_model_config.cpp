// config.json normalisation: every family and wrapper we load, transformers' defaults for fields a
// published config leaves out, and readable errors for what we cannot load.
#include <QtTest>
#include <fstream>
#include <sstream>

#include "engine/util/error.h"
#include "engine/model/model_config.h"
#include "engine/util/text_file.h"
#include "tests/support/test_support.h"

using namespace lumen;

namespace {

QString config_error(const std::string& json, const std::string* generation = nullptr) {
    try {
        parse_model_config(json, "config.json", generation);
        return {};
    } catch (const Error& e) {
        return QString::fromUtf8(e.what());
    }
}

}  // namespace

class TestModelConfig : public QObject {
    Q_OBJECT
private slots:
    void realShapes() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const auto load = [&](const char* name) {
            const auto text = test::read_test_file(data / "configs" / name);
            return parse_model_config(*text, name);
        };
        const ModelConfig internlm = load("internlm2-chat-7b.json");
        QCOMPARE(internlm.kind, ModelKind::Text);
        QCOMPARE(internlm.text.family, TextFamily::InternLM2);
        QCOMPARE(internlm.text.num_kv_heads, int64_t(8));
        QCOMPARE(internlm.text.head_dim, int64_t(128));
        QCOMPARE(internlm.text.rope_theta, 1e6);
        QCOMPARE(internlm.text.rope_scaling.type, RopeScaling::Type::Dynamic);
        QCOMPARE(internlm.text.rope_scaling.factor, 2.0);
        QVERIFY(!internlm.text.qkv_bias);
        QCOMPARE(*internlm.text.dtype, DType::BF16);
        // internlm2_5-7b-chat publishes 7,737,708,544 parameters.
        QCOMPARE(internlm.text.parameter_count(), int64_t(7737708544));

        const ModelConfig llama = load("llama-2-7b.json");
        QCOMPARE(llama.text.family, TextFamily::Llama);
        QCOMPARE(llama.text.parameter_count(), int64_t(6738415616));  // Llama-2-7b

        const ModelConfig llava = load("llava-1.5-7b-hf.json");
        QCOMPARE(llava.kind, ModelKind::Llava);
        QVERIFY(llava.has_vision);
        QCOMPARE(llava.vision_model_type, std::string("clip_vision_model"));
        QCOMPARE(llava.text.vocab_size, int64_t(32064));
        QCOMPARE(*llava.text.dtype, DType::F16);

        const ModelConfig ivl1 = load("InternVL2-1B.json");
        QCOMPARE(ivl1.kind, ModelKind::InternVLChat);
        QCOMPARE(ivl1.text.family, TextFamily::Qwen2);
        QVERIFY(ivl1.text.qkv_bias);
        QVERIFY(ivl1.text.tie_word_embeddings);
        QCOMPARE(ivl1.template_name, std::string("Hermes-2"));
        QCOMPARE(ivl1.text.eos_token_ids, (std::vector<int64_t>{151645}));
        // Qwen2-0.5B has 494,032,768 parameters with its 151,936-token vocabulary; InternVL2-1B keeps 151,655.
        QCOMPARE(ivl1.text.parameter_count(), int64_t(494032768) - (151936 - 151655) * 896);

        const ModelConfig ivl2 = load("InternVL2-2B.json");
        QCOMPARE(ivl2.text.family, TextFamily::InternLM2);
        QCOMPARE(ivl2.template_name, std::string("internlm2-chat"));
        QCOMPARE(ivl2.vision_model_type, std::string("intern_vit_6b"));
    }

    void defaultsFromTransformers() {
        // LlavaConfig fills a missing text_config with LlamaConfig's defaults.
        const auto llava = parse_model_config(R"({"architectures":["LlavaForConditionalGeneration"],"vision_config":{}})", "c");
        QCOMPARE(llava.text.hidden_size, int64_t(4096));
        QCOMPARE(llava.text.num_layers, int64_t(32));
        QCOMPARE(llava.text.vocab_size, int64_t(32000));
        QCOMPARE(llava.text.norm_eps, 1e-6);
        // InternLM2's remote code defaults bias to true.
        const auto internlm = parse_model_config(R"({"architectures":["InternLM2ForCausalLM"],"hidden_size":64,"num_attention_heads":4})", "c");
        QVERIFY(internlm.text.qkv_bias);
        QVERIFY(internlm.text.o_bias);
        QCOMPARE(internlm.text.num_kv_heads, int64_t(4));
        QCOMPARE(internlm.text.vocab_size, int64_t(103168));
        // model_type alone is enough.
        const auto qwen = parse_model_config(R"({"model_type":"qwen2","hidden_size":64,"num_attention_heads":4,"num_key_value_heads":2})", "c");
        QCOMPARE(qwen.architecture, std::string("Qwen2ForCausalLM"));
        QCOMPARE(qwen.text.head_dim, int64_t(16));
    }

    void ropeForms() {
        // transformers 5 writes rope_parameters; older files rope_theta + rope_scaling with "type" or "rope_type".
        auto v5 = parse_model_config(R"({"model_type":"llama","rope_parameters":{"rope_type":"linear","factor":4.0,"rope_theta":500000.0}})", "c");
        QCOMPARE(v5.text.rope_scaling.type, RopeScaling::Type::Linear);
        QCOMPARE(v5.text.rope_scaling.factor, 4.0);
        QCOMPARE(v5.text.rope_theta, 500000.0);
        auto plain = parse_model_config(R"({"model_type":"llama","rope_parameters":{"rope_type":"default","rope_theta":1000.0}})", "c");
        QCOMPARE(plain.text.rope_scaling.type, RopeScaling::Type::None);
        QCOMPARE(plain.text.rope_theta, 1000.0);
        auto old = parse_model_config(R"({"model_type":"llama","rope_theta":20.0,"rope_scaling":{"rope_type":"dynamic","factor":2}})", "c");
        QCOMPARE(old.text.rope_scaling.type, RopeScaling::Type::Dynamic);
        QCOMPARE(old.text.rope_theta, 20.0);
        QVERIFY(config_error(R"({"model_type":"llama","rope_scaling":{"rope_type":"llama3","factor":8}})")
                    .contains("rope scaling type 'llama3' is not supported (supported: linear, dynamic)"));
        QVERIFY(config_error(R"({"model_type":"llama","rope_scaling":{"type":"yarn","factor":8}})").contains("'yarn'"));
    }

    void eosFromGenerationConfig() {
        const std::string gen = R"({"eos_token_id":[151645,151643]})";
        const auto c = parse_model_config(R"({"model_type":"qwen2","eos_token_id":151645})", "c", &gen);
        QCOMPARE(c.text.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
    }

    void errors_data() {
        QTest::addColumn<QString>("json");
        QTest::addColumn<QString>("expected");
        QTest::newRow("bad json") << R"({"model_type": "llama",)" << "not valid JSON";
        QTest::newRow("not object") << "[]" << "not a JSON object";
        QTest::newRow("unknown arch") << R"({"architectures":["MambaForCausalLM"]})"
                                      << "unsupported architecture 'MambaForCausalLM' (supported: LlamaForCausalLM, InternLM2ForCausalLM, Qwen2ForCausalLM, LlavaForConditionalGeneration, InternVLChatModel, InternVLForConditionalGeneration)";
        QTest::newRow("no arch") << "{}" << "unsupported architecture 'none given'";
        QTest::newRow("wrong type") << R"({"model_type":"llama","hidden_size":"big"})" << "'hidden_size' must be an integer from 1 to";
        QTest::newRow("zero heads") << R"({"model_type":"llama","num_attention_heads":0})" << "'num_attention_heads' must be an integer from 1 to";
        QTest::newRow("uneven heads") << R"({"model_type":"llama","hidden_size":100,"num_attention_heads":3})" << "not a multiple of num_attention_heads";
        QTest::newRow("gqa mismatch") << R"({"model_type":"llama","num_attention_heads":32,"num_key_value_heads":5})" << "not a multiple of num_key_value_heads";
        QTest::newRow("activation") << R"({"model_type":"llama","hidden_act":"gelu"})" << "hidden_act 'gelu' is not supported";
        QTest::newRow("sliding window") << R"({"model_type":"qwen2","use_sliding_window":true})" << "sliding-window";
        QTest::newRow("internvl without llm") << R"({"architectures":["InternVLChatModel"]})" << "no 'llm_config'";
        QTest::newRow("internvl inner unknown") << R"({"architectures":["InternVLChatModel"],"llm_config":{"architectures":["Phi3ForCausalLM"]}})" << "unsupported language model architecture 'Phi3ForCausalLM'";
        QTest::newRow("dtype") << R"({"model_type":"llama","torch_dtype":"float8"})" << "dtype 'float8' is not supported";
    }
    void errors() {
        QFETCH(QString, json);
        QFETCH(QString, expected);
        const QString message = config_error(json.toStdString());
        QVERIFY2(message.contains(expected), qPrintable("got: " + message));
    }
};

QTEST_APPLESS_MAIN(TestModelConfig)
#include "test_model_config.moc"
