// The CPU backend against the references: the real stories260K model against llama2.c's output
// and transformers' greedy text, and the tiny seeded-random checkpoints (Llama, InternLM2, Qwen2;
// bf16 and fp16) against transformers: prompt ids, greedy ids and last-position logits.
#include <QtTest>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/checkpoint.h"
#include "engine/model/model.h"
#include "engine/util/text_file.h"
#include "engine/text/tokenizer.h"
#include "tests/support/engine_runner.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"

using namespace lumen;
using namespace lumen::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path goldens() { return fs::path(LUMEN_SOURCE_DIR) / "tests/data/goldens"; }

// The text under a "### " heading of REFERENCE.md, without the trailing newline.
std::string reference_section(const fs::path& file, const std::string& heading) {
    const std::string text = *read_test_file(file);
    const std::size_t start = text.find("### " + heading);
    if (start == std::string::npos) throw std::runtime_error("no section " + heading);
    const std::size_t body = text.find('\n', start) + 1;
    std::size_t end = text.find("\n### ", body);
    if (end == std::string::npos) end = text.size();
    std::string s = text.substr(body, end - body);
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}


}  // namespace

class TestReferenceModels : public QObject {
    Q_OBJECT
private slots:
    void stories260KMatchesLlama2c() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const fs::path model = data / "models" / "stories260K-hf";
        // llama2.c's -n counts positions and also prints the token sampled at the last one, so
        // `-n 200` prints 200 new tokens and `-n 256` (its default) 256.
        const std::string n200 = reference_section(model / "REFERENCE.md", "./run stories260K.bin -z tok512.bin -t 0.0 -n 200");
        const std::string n256 = reference_section(model / "REFERENCE.md", "./run stories260K.bin -z tok512.bin -t 0.0   (default");
        for (const auto& [tokens, expected] : {std::pair{200, n200}, std::pair{256, n256}}) {
            const auto r = run_cli({"generate", "--model", QString::fromStdString(model.string()), "--prompt", "",
                                    "--temperature", "0", "--max-new-tokens", QString::number(tokens)});
            QCOMPARE(r.exit_code, 0);
            QByteArray out = r.out;
            QVERIFY(out.endsWith('\n'));
            out.chop(1);
            QCOMPARE(QString::fromUtf8(out), QString::fromStdString(expected));
        }
    }

    void stories260KMatchesTransformers() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const QString model = QString::fromStdString((data / "models" / "stories260K-hf").string());
        const json golden = json::parse(*read_test_file(goldens() / "stories260K.json"));
        for (const auto& run : golden["runs"]) {
            const auto r = run_cli({"generate", "--model", model, "--prompt", QString::fromStdString(run["prompt"]),
                                    "--temperature", "0", "--max-new-tokens",
                                    QString::number(run["generated_ids"].size()), "--json"});
            QCOMPARE(r.exit_code, 0);
            const json out = json::parse(r.out.trimmed().split('\n').last().toStdString());
            QCOMPARE(out["prompt_ids"], run["prompt_ids"]);
            QCOMPARE(out["generated_ids"], run["generated_ids"]);
            // Streamed text leaves special tokens out (the model may emit <s> mid-story).
            QCOMPARE(out["text"].get<std::string>(), run["text_skip_special"].get<std::string>());
            QCOMPARE(out["finish_reason"].get<std::string>(), std::string("length"));
            QVERIFY(out["timings"]["decode_tokens_per_second"].get<double>() > 0);
        }
    }

    void tinyCheckpointsMatchTransformers_data() {
        QTest::addColumn<int>("model");
        QTest::addColumn<QString>("dtype");
        const TinySpec spec = load_tiny_spec();
        for (std::size_t m = 0; m < spec.models.size(); ++m)
            for (const auto& d : spec.dtypes)
                QTest::newRow((spec.models[m].name + " " + d).c_str()) << int(m) << QString::fromStdString(d);
    }
    void tinyCheckpointsMatchTransformers() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        QFETCH(int, model);
        QFETCH(QString, dtype);
        const TinySpec spec = load_tiny_spec();
        const TinyModel& m = spec.models[std::size_t(model)];
        const std::string key = m.name + "_" + dtype.toStdString();
        const json golden = json::parse(*read_test_file(goldens() / "tiny/tiny_goldens.json"))["models"][key];

        QTemporaryDir tmp;
        const auto checksums = build_tiny_model(spec, m, dtype.toStdString(), data / "tokenizers", path_of(tmp));
        QCOMPARE(checksums.size(), golden["checksums"].size());
        for (const auto& [name, sum] : checksums)
            QVERIFY2(std::to_string(sum) == golden["checksums"][name].get<std::string>(), name.c_str());

        const auto tokenizer = Tokenizer::load(path_of(tmp));
        EngineOptions options;
        options.cache_max_entry_count = 16;
        options.session_len = 256;  // past the tiny InternLM2's trained 48 positions, as transformers runs it
        EngineRunner runner(path_of(tmp), options);
        for (std::size_t p = 0; p < spec.prompts.size(); ++p) {
            const json& run = golden["runs"][p];
            const auto ids = tokenizer->encode(spec.prompts[p]);
            QCOMPARE(ids, run["prompt_ids"].get<std::vector<int32_t>>());
            const Collected c = runner.run(greedy(ids, spec.new_tokens));
            QCOMPARE(c.ids, run["generated_ids"].get<std::vector<int32_t>>());
        }
        // Last-position logits of the long prompt, within 1e-4 of the largest.
        const auto expected = read_floats(goldens() / "tiny" / ("tiny_" + key + ".logits"));
        const auto got = prompt_logits(path_of(tmp), golden["runs"].back()["prompt_ids"].get<std::vector<int32_t>>());
        QCOMPARE(got.size(), expected.size());
        float scale = 0, worst = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
            scale = std::max(scale, std::fabs(expected[i]));
            worst = std::max(worst, std::fabs(got[i] - expected[i]));
        }
        qInfo("%s: max |logit difference| %.3g, relative %.3g", key.c_str(), double(worst), double(worst / scale));
        QVERIFY(worst <= 1e-4f * scale);
    }

    // The language model inside LLaVA (old and new transformers layouts) and InternVL loads from
    // its prefixed tensors and computes exactly what the plain checkpoint does.
    void wrappedLanguageModels_data() {
        QTest::addColumn<QString>("inner");
        QTest::addColumn<QString>("wrapper");
        QTest::addColumn<QString>("model_prefix");
        QTest::addColumn<QString>("head");
        QTest::newRow("llava, transformers 4") << "llama" << "llava" << "language_model.model." << "language_model.lm_head.weight";
        QTest::newRow("llava, transformers 5") << "llama" << "llava" << "model.language_model." << "lm_head.weight";
        QTest::newRow("internvl, internlm2") << "internlm2" << "internvl_chat" << "language_model.model." << "language_model.output.weight";
        QTest::newRow("internvl -hf, qwen2") << "qwen2" << "internvl" << "model.language_model." << "";
    }
    void wrappedLanguageModels() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        QFETCH(QString, inner);
        QFETCH(QString, wrapper);
        QFETCH(QString, model_prefix);
        QFETCH(QString, head);
        const TinySpec spec = load_tiny_spec();
        const TinyModel* m = nullptr;
        for (const auto& x : spec.models)
            if (x.name == inner.toStdString()) m = &x;
        QTemporaryDir plain, wrapped;
        build_tiny_model(spec, *m, "bfloat16", data / "tokenizers", path_of(plain));

        std::vector<TensorSpec> renamed;
        const Checkpoint source(path_of(plain));
        for (const TensorInfo* t : source.tensors()) {
            std::string name = t->name;
            if (name.rfind("model.", 0) == 0) name = model_prefix.toStdString() + name.substr(6);
            else name = head.toStdString();
            renamed.push_back({name, t->dtype, t->shape, std::string(reinterpret_cast<const char*>(t->data.data()), t->data.size())});
        }
        write_file(path_of(wrapped) / "model.safetensors", safetensors_bytes(renamed));
        json config = m->config;
        config["torch_dtype"] = "bfloat16";
        json outer{{"vision_config", {{"model_type", "vision"}}}, {"torch_dtype", "bfloat16"}};
        if (wrapper == "llava") outer["architectures"] = {"LlavaForConditionalGeneration"}, outer["text_config"] = config;
        if (wrapper == "internvl_chat") outer["architectures"] = {"InternVLChatModel"}, outer["llm_config"] = config, outer["template"] = "internlm2-chat";
        if (wrapper == "internvl") outer["architectures"] = {"InternVLForConditionalGeneration"}, outer["text_config"] = config;
        write_file(path_of(wrapped) / "config.json", outer.dump());

        const std::vector<int32_t> prompt{1, 17, 23, 99, 5, 42};
        QCOMPARE(prompt_logits(path_of(wrapped), prompt), prompt_logits(path_of(plain), prompt));
    }
};

QTEST_GUILESS_MAIN(TestReferenceModels)
#include "test_reference_models.moc"
