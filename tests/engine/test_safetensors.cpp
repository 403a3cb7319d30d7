// The safetensors reader and the checkpoint folder: valid files read exactly; every kind of
// damage gives a message that names the problem.
#include <QTemporaryDir>
#include <QtTest>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/model/checkpoint.h"
#include "engine/util/error.h"
#include "engine/model/safetensors.h"
#include "tests/support/test_support.h"

using namespace lumen;
using lumen::test::safetensors_bytes;
using lumen::test::TensorSpec;
using lumen::test::write_file;
using lumen::test::path_of;

namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// The message parse_safetensors gives for `file`, or "" when it parses.
QString parse_error(const std::string& file) {
    try {
        parse_safetensors(as_bytes(file), "x.safetensors");
        return {};
    } catch (const Error& e) {
        return QString::fromUtf8(e.what());
    }
}

std::string with_header(const std::string& json, const std::string& data) {
    std::string out(8, '\0');
    const uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    return out + json + data;
}

std::string floats(std::initializer_list<float> v) {
    std::string s(v.size() * 4, '\0');
    std::memcpy(s.data(), std::data(v), s.size());
    return s;
}

}  // namespace

class TestSafetensors : public QObject {
    Q_OBJECT
private slots:
    void readsTensorsInPlace() {
        const std::string file = safetensors_bytes({{"a", DType::F32, {2, 2}, floats({1, 2, 3, 4})},
                                                    {"b", DType::BF16, {3}, {}},
                                                    {"c", DType::I8, {0}, {}}});
        const auto h = parse_safetensors(as_bytes(file), "mem");
        QCOMPARE(h.tensors.size(), std::size_t(3));
        const auto& a = h.tensors[0];
        QCOMPARE(a.name, std::string("a"));
        QCOMPARE(a.numel(), int64_t(4));
        QCOMPARE(a.data.size(), std::size_t(16));
        float v[4];
        std::memcpy(v, a.data.data(), 16);
        QCOMPARE(v[3], 4.0f);
        QCOMPARE(h.tensors[1].dtype, DType::BF16);
        QCOMPARE(h.tensors[2].numel(), int64_t(0));
    }

    void readsMetadata() {
        const std::string file = with_header(R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", std::string(2, '\0'));
        const auto h = parse_safetensors(as_bytes(file), "mem");
        QCOMPARE(h.metadata.at("format"), std::string("pt"));
    }

    void rejectsDamage_data() {
        QTest::addColumn<QByteArray>("file");
        QTest::addColumn<QString>("expected");
        const std::string good = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
        auto row = [](const char* name, const std::string& file, const char* expected) {
            QTest::newRow(name) << QByteArray(file.data(), qsizetype(file.size())) << QString(expected);
        };
        row("empty", "", "too short");
        row("seven bytes", "1234567", "too short");
        row("truncated data", with_header(good, std::string(4, '\0')), "truncated");
        std::string lying = with_header(good, std::string(8, '\0'));
        lying[0] = char(0xff);  // header length far beyond the file
        row("lying header size", lying, "header claims");
        std::string huge(8, '\0');
        huge[7] = 0x10;
        row("header over limit", huge + "{}", "limit");
        row("bad json", with_header(R"({"x":{"dtype":"F32",)", ""), "not valid JSON");
        row("not an object", with_header(R"([1,2])", ""), "not a JSON object");
        row("unknown dtype", with_header(R"({"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), "unknown dtype 'Q4'");
        row("shape mismatch", with_header(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')), "need 12");
        row("negative dim", with_header(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')), "non-negative");
        row("reversed offsets", with_header(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, '\0')), "end before");
        row("overlap", with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')), "overlap");
        row("missing offsets", with_header(R"({"x":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')), "data_offsets");
        row("overflowing shape", with_header(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, '\0')), "too large");
        row("bad metadata", with_header(R"({"__metadata__":{"a":1}})", ""), "not a string");
    }
    void rejectsDamage() {
        QFETCH(QByteArray, file);
        QFETCH(QString, expected);
        const QString message = parse_error(file.toStdString());
        QVERIFY2(message.contains(expected), qPrintable("got: " + message));
    }

    void checkpointSingleFile() {
        QTemporaryDir dir;
        write_file(path_of(dir) / "model.safetensors",
                   safetensors_bytes({{"w", DType::F16, {4, 2}, {}}, {"b", DType::F32, {4}, {}}}));
        const Checkpoint c(path_of(dir));
        QCOMPARE(c.parameter_count(), int64_t(12));
        QCOMPARE(*c.main_dtype(), DType::F16);
        QVERIFY(c.find("w"));
        QVERIFY(!c.find("nope"));
        QVERIFY_THROWS_EXCEPTION(Error, c.get("nope"));
    }

    void checkpointShards() {
        QTemporaryDir dir;
        const auto root = path_of(dir);
        write_file(root / "model-00001-of-00002.safetensors", safetensors_bytes({{"a", DType::BF16, {8}, {}}}));
        write_file(root / "model-00002-of-00002.safetensors", safetensors_bytes({{"b", DType::BF16, {2, 3}, {}}}));
        write_file(root / "model.safetensors.index.json",
                   R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
        const Checkpoint c(root);
        QCOMPARE(c.files().size(), std::size_t(2));
        QCOMPARE(c.parameter_count(), int64_t(14));
        QCOMPARE(c.get("b").shape, (std::vector<int64_t>{2, 3}));
    }

    void checkpointProblems_data() {
        QTest::addColumn<int>("which");
        QTest::addColumn<QString>("expected");
        QTest::newRow("missing shard") << 0 << "shard model-00002-of-00002.safetensors listed in model.safetensors.index.json is missing";
        QTest::newRow("index lies") << 1 << "lists tensor 'c'";
        QTest::newRow("bad index json") << 2 << "not valid JSON";
        QTest::newRow("pickle") << 3 << "pickle";
        QTest::newRow("nothing") << 4 << "no weights found";
        QTest::newRow("duplicate across shards") << 5 << "more than one shard";
        QTest::newRow("shard escapes folder") << 6 << "invalid shard";
    }
    void checkpointProblems() {
        QFETCH(int, which);
        QFETCH(QString, expected);
        QTemporaryDir dir;
        const auto root = path_of(dir);
        const std::string one = safetensors_bytes({{"a", DType::F32, {1}, {}}});
        switch (which) {
        case 0:
            write_file(root / "model-00001-of-00002.safetensors", one);
            write_file(root / "model.safetensors.index.json",
                       R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
            break;
        case 1:
            write_file(root / "s1.safetensors", one);
            write_file(root / "model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors","c":"s1.safetensors"}})");
            break;
        case 2: write_file(root / "model.safetensors.index.json", "{\"weight_map\": {"); break;
        case 3: write_file(root / "pytorch_model.bin", "PK\x03\x04"); break;
        case 4: break;
        case 5:
            write_file(root / "s1.safetensors", one);
            write_file(root / "s2.safetensors", one);
            write_file(root / "model.safetensors.index.json", R"({"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
            break;
        case 6: write_file(root / "model.safetensors.index.json", R"({"weight_map":{"a":"../x.safetensors"}})"); break;
        }
        try {
            Checkpoint c(root);
            QFAIL("expected an error");
        } catch (const Error& e) {
            QVERIFY2(QString::fromUtf8(e.what()).contains(expected), e.what());
        }
    }

    void halfConversions() {
        for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f}) {
            QCOMPARE(f16_to_f32(f32_to_f16(f)), f);
        }
        for (float f : {0.0f, 1.0f, -2.5f, 3.0e38f, 1.0e-38f}) {
            const float r = bf16_to_f32(f32_to_bf16(f));
            QVERIFY(std::fabs(r - f) <= std::fabs(f) / 256);
        }
        QVERIFY(std::isinf(f16_to_f32(f32_to_f16(70000.0f))));
        QVERIFY(std::isnan(f16_to_f32(f32_to_f16(NAN))));
        QCOMPARE(f32_to_f16(1.0f + 1.0f / 2048), uint16_t(0x3c00));  // tie rounds to even
        QCOMPARE(f32_to_f16(1.0f + 3.0f / 2048), uint16_t(0x3c02));
        QCOMPARE(bf16_to_f32(f32_to_bf16(1.00390625f)), 1.0f);  // tie to even
        QCOMPARE(f32_to_bf16(3.0f), uint16_t(0x4040));
        // Every half value survives the round trip through float.
        for (uint32_t h = 0; h < 0x10000; ++h) {
            const float f = f16_to_f32(uint16_t(h));
            if (std::isnan(f)) continue;
            QCOMPARE(f32_to_f16(f), uint16_t(h));
        }
    }
};

QTEST_APPLESS_MAIN(TestSafetensors)
#include "test_safetensors.moc"
