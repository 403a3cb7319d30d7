// Tokenization against Hugging Face transformers 5.17 (goldens in tests/data/goldens, made by
// tests/reference/make_tokenizer_goldens.py) and InternLM2 against Debian's spm_encode, over the
// multilingual corpus in tests/data/tokenizer_corpus.json. Decoding and streaming over the same.
#include <QProcess>
#include <QStandardPaths>
#include <QtTest>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/text/detokenizer.h"
#include "engine/util/error.h"
#include "engine/util/text_file.h"
#include "engine/text/tokenizer.h"
#include "engine/text/unicode.h"
#include "tests/support/test_support.h"

using namespace lumen;
using namespace lumen::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json load_json(const fs::path& path) { return json::parse(*read_test_file(path)); }

fs::path source_dir() { return fs::path(LUMEN_SOURCE_DIR); }

std::vector<std::string> corpus() { return load_json(source_dir() / "tests/data/tokenizer_corpus.json"); }

QString show(const std::vector<int32_t>& ids) {
    QStringList parts;
    for (int32_t id : ids) parts << QString::number(id);
    return "[" + parts.join(",") + "]";
}

// Compares every golden case of one variant against a tokenizer loaded from `dir`.
void check_against_golden(const fs::path& dir, const json& variant) {
    const auto tok = Tokenizer::load(dir);
    int checked = 0;
    for (const auto& c : variant["cases"]) {
        const std::string text = c["text"];
        const QString where = QString::fromStdString(dir.filename().string()) + ": " + QString::fromStdString(text).left(40);
        const auto ids = tok->encode(text);
        const auto expected = c["ids"].get<std::vector<int32_t>>();
        QVERIFY2(ids == expected, qPrintable(where + "\n got " + show(ids) + "\n want " + show(expected)));
        const auto plain = tok->encode(text, {.add_special_tokens = false});
        QVERIFY2(plain == c["ids_plain"].get<std::vector<int32_t>>(), qPrintable(where + " (add_special_tokens=False)"));
        const auto no_special = tok->encode(text, {.add_special_tokens = false, .split_special_tokens = true});
        QVERIFY2(no_special == c["ids_no_special"].get<std::vector<int32_t>>(),
                 qPrintable(where + " (split_special_tokens) got " + show(no_special)));
        for (std::size_t i = 0; i < ids.size(); ++i) QCOMPARE(tok->token(ids[i]), c["tokens"][i].get<std::string>());
        QCOMPARE(tok->decode(ids), c["decode"].get<std::string>());
        QCOMPARE(tok->decode(ids, true), c["decode_skip"].get<std::string>());
        QCOMPARE(tok->decode(plain), c["decode_plain"].get<std::string>());
        ++checked;
    }
    QCOMPARE(checked, int(corpus().size()));
}

// Broken tokenizer folders: the file written, its content, and what the error must say. (Kept
// outside the test class: moc's scanner trips over unbalanced braces in string literals.)
struct BrokenCase {
    const char* name;
    const char* file;
    const char* content;
    const char* expected;
};
const BrokenCase kBrokenCases[] = {
    {"bad json", "tokenizer.json", "{\"model\": ", "not valid JSON"},
    {"not object", "tokenizer.json", "[]", "not a JSON object"},
    {"unigram", "tokenizer.json", R"({"model":{"type":"Unigram","vocab":[]}})", "model type 'Unigram' is not supported"},
    {"no vocab", "tokenizer.json", R"({"model":{"type":"BPE"}})", "no vocab"},
    {"bad merge", "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a b"]}})", "missing from the vocabulary"},
    {"bad regex", "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(unclosed"},"behavior":"Isolated"}})", "does not compile"},
    {"unknown normalizer", "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":{"type":"BertNormalizer"}})", "normalizer type 'BertNormalizer'"},
    {"wrong field type", "tokenizer.json", R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"content":"x","special":"yes"}],"decoder":{"type":"Strip","start":"one"}})", "must be an integer"},
    {"not sentencepiece", "tokenizer.model", "this is not a protobuf", "not a sentencepiece model"},
    {"bad config", "tokenizer_config.json", "{", "tokenizer_config.json: not valid JSON"},
    {"missing", "", "", "no tokenizer"},
};

}  // namespace

class TestTokenizer : public QObject {
    Q_OBJECT
private slots:
    void matchesTransformers_data() {
        QTest::addColumn<QString>("name");
        QTest::addColumn<QString>("variant");
        for (const char* name : {"llava15", "qwen3", "llama3", "internvl-qwen2"})
            for (const char* variant : {"tokenizer_folder", "model_folder"})
                QTest::newRow((std::string(name) + " " + variant).c_str()) << name << variant;
    }
    void matchesTransformers() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        QFETCH(QString, name);
        QFETCH(QString, variant);
        const json golden = load_json(source_dir() / "tests/data/goldens" / ("tokenizer_" + name.toStdString() + ".json"));
        const json& v = golden["variants"][variant.toStdString()];
        QVERIFY2(!v.contains("error"), v.value("error", "").c_str());
        const fs::path src = data / "tokenizers" / name.toStdString();
        if (variant == "tokenizer_folder") {
            check_against_golden(src, v);
            return;
        }
        // The same files in a model folder: transformers chooses the class by the model type.
        static const std::map<QString, std::string> model_types{
            {"llava15", "llava"}, {"qwen3", "qwen3"}, {"llama3", "llama"}, {"internvl-qwen2", "internvl"}};
        QTemporaryDir tmp;
        for (const auto& f : fs::directory_iterator(src)) fs::copy_file(f.path(), path_of(tmp) / f.path().filename());
        write_file(path_of(tmp) / "config.json", json{{"model_type", model_types.at(name)}}.dump());
        check_against_golden(path_of(tmp), v);
    }

    void internlm2MatchesSpmEncode() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const QString spm = QStandardPaths::findExecutable("spm_encode");
        if (spm.isEmpty()) QSKIP("spm_encode (Debian package sentencepiece) is not installed");
        const fs::path dir = data / "tokenizers" / "internlm2";
        // spm_encode reads one text per line, so the corpus goes in line by line.
        std::vector<std::string> lines;
        for (const auto& text : corpus()) {
            std::size_t start = 0;
            for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
                lines.push_back(text.substr(start, nl - start));
            lines.push_back(text.substr(start));
        }
        std::string input;
        for (const auto& l : lines) input += l + "\n";
        QProcess p;
        p.start(spm, {"--model=" + QString::fromStdString((dir / "tokenizer.model").string()), "--output_format=id"});
        QVERIFY(p.waitForStarted());
        p.write(input.data(), qint64(input.size()));
        p.closeWriteChannel();
        QVERIFY(p.waitForFinished(60000));
        QCOMPARE(p.exitCode(), 0);
        const QList<QByteArray> out = p.readAllStandardOutput().split('\n');
        QVERIFY(std::size_t(out.size()) >= lines.size());

        const auto tok = Tokenizer::load(dir);
        for (std::size_t i = 0; i < lines.size(); ++i) {
            std::vector<int32_t> expected;
            for (const auto& t : out[qsizetype(i)].split(' '))
                if (!t.isEmpty()) expected.push_back(t.toInt());
            const auto ids = tok->encode(lines[i], {.add_special_tokens = false, .split_special_tokens = true});
            QVERIFY2(ids == expected, qPrintable(QString::fromStdString(lines[i]) + "\n got " + show(ids) + "\n want " + show(expected)));
        }
        // As a prompt: BOS first (InternLM2Tokenizer adds it) and the chat markers as single tokens.
        const auto prompt = tok->encode("<|im_start|>user\nHi<|im_end|>");
        QCOMPARE(prompt.front(), 1);
        QCOMPARE(prompt[1], 92543);
        QCOMPARE(prompt.back(), 92542);
    }

    // Decoding gives back the text wherever the reference does (byte-level BPE: after NFC), and
    // streamed deltas concatenate to exactly the decoded text without splitting a character.
    void roundTripAndStreaming_data() {
        QTest::addColumn<QString>("name");
        for (const char* name : {"llava15", "qwen3", "llama3", "internvl-qwen2", "internlm2"}) QTest::newRow(name) << name;
        QTest::newRow("stories260K") << "../models/stories260K-hf";
    }
    void roundTripAndStreaming() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        QFETCH(QString, name);
        const auto tok = Tokenizer::load(data / "tokenizers" / name.toStdString());
        const bool byte_level = name == "qwen3" || name == "llama3" || name == "internvl-qwen2";
        const bool nfc_normalizer = name == "qwen3" || name == "internvl-qwen2";
        for (const auto& text : corpus()) {
            const auto ids = tok->encode(text, {.add_special_tokens = false, .split_special_tokens = true});
            const std::string decoded = tok->decode(ids);
            if (byte_level || name == "internlm2") QCOMPARE(decoded, nfc_normalizer ? unicode::nfc(text) : text);

            Detokenizer stream(*tok);
            std::string streamed;
            for (int32_t id : ids) {
                const std::string delta = stream.push(id);
                QVERIFY(unicode::is_valid_utf8(delta));
                if (delta.find("\xef\xbf\xbd") != std::string::npos) QVERIFY(decoded.find("\xef\xbf\xbd") != std::string::npos);
                streamed += delta;
            }
            streamed += stream.finish();
            QCOMPARE(streamed, tok->decode(ids, true));
        }
    }

    void streamingHoldsPartialCharacters() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const auto tok = Tokenizer::load(data / "tokenizers" / "llava15");
        // "👍" is four byte-fallback tokens: nothing comes out until the last one.
        const auto ids = tok->encode("a👍", {.add_special_tokens = false});
        QCOMPARE(ids.size(), std::size_t(5));
        Detokenizer stream(*tok);
        QCOMPARE(stream.push(ids[0]), std::string("a"));
        QCOMPARE(stream.push(ids[1]), std::string());
        QCOMPARE(stream.push(ids[2]), std::string());
        QCOMPARE(stream.push(ids[3]), std::string());
        QCOMPARE(stream.push(ids[4]), std::string("👍"));
        QCOMPARE(stream.finish(), std::string());
    }

    void brokenTokenizerFiles_data() {
        QTest::addColumn<int>("index");
        for (std::size_t i = 0; i < std::size(kBrokenCases); ++i) QTest::newRow(kBrokenCases[i].name) << int(i);
    }
    void brokenTokenizerFiles() {
        QFETCH(int, index);
        const BrokenCase& c = kBrokenCases[index];
        const QString expected = c.expected;
        QTemporaryDir tmp;
        if (*c.file) write_file(path_of(tmp) / c.file, c.content);
        try {
            Tokenizer::load(path_of(tmp));
            QFAIL("expected an error");
        } catch (const Error& e) {
            QVERIFY2(QString::fromUtf8(e.what()).contains(expected), e.what());
        }
    }

    void cliTokenize() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        const QString dir = QString::fromStdString((data / "tokenizers" / "internlm2").string());
        auto r = run_cli({"tokenize", "--model", dir, "--text", "<|im_start|>user\n你好", "--json"});
        QCOMPARE(r.exit_code, 0);
        auto last = json::parse(r.out.trimmed().split('\n').last().toStdString());
        QCOMPARE(last["ids"].front().get<int>(), 1);
        QCOMPARE(last["ids"][1].get<int>(), 92543);
        QCOMPARE(last["pieces"][1].get<std::string>(), std::string("<|im_start|>"));
        r = run_cli({"tokenize", "--model", dir, "--text", "<|im_start|>user", "--no-special", "--json"});
        last = json::parse(r.out.trimmed().split('\n').last().toStdString());
        QVERIFY(last["ids"].front().get<int>() != 1);
        QVERIFY(std::find(last["ids"].begin(), last["ids"].end(), 92543) == last["ids"].end());
        // Plain output and errors.
        r = run_cli({"tokenize", "--model", dir, "--text", "hi"});
        QCOMPARE(r.exit_code, 0);
        QVERIFY(r.out.contains("tokens"));
        r = run_cli({"tokenize", "--model", "/nonexistent", "--text", "hi"});
        QCOMPARE(r.exit_code, 1);
        QVERIFY2(r.err.contains("no such folder"), r.err);
        r = run_cli({"tokenize", "--model", dir});
        QCOMPARE(r.exit_code, 1);
        QVERIFY(r.err.contains("--text or --file"));
        r = run_cli({"tokenize", "--bogus"});
        QCOMPARE(r.exit_code, 1);
        QVERIFY(r.err.contains("unknown option --bogus"));
    }
};

QTEST_GUILESS_MAIN(TestTokenizer)
#include "test_tokenizer.moc"
