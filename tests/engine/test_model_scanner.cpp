// The model scanner and `lumen-cli models`: folders, trees of folders and a Hugging Face cache,
// exact parameter counts, and a reason for every folder that cannot load.
#include <QTemporaryDir>
#include <QtTest>
#include <nlohmann/json.hpp>

#include "engine/model/model_scanner.h"
#include "tests/support/test_support.h"

using namespace lumen;
using namespace lumen::test;
namespace fs = std::filesystem;

namespace {

// A loadable tiny Llama: 2 layers, hidden 16, 4 heads (2 kv), vocab 32, intermediate 24.
void make_tiny_llama(const fs::path& dir) {
    write_file(dir / "config.json", llama_config_json(16, 2, 4, 2, 32, 24));
    write_file(dir / "model.safetensors", safetensors_bytes(llama_tensors(16, 2, 4, 2, 32, 24, DType::BF16)));
    write_file(dir / "tokenizer.model", "placeholder for the scanner, which only checks presence");
}

// Parameters of that model: embeddings and head 2*32*16, per layer 2*16 norms + q 16*16 + k,v 2*8*16
// + o 16*16 + mlp 3*24*16, final norm 16.
constexpr int64_t kTinyLlamaParameters = 2 * 32 * 16 + 2 * (2 * 16 + 16 * 16 + 2 * 8 * 16 + 16 * 16 + 3 * 24 * 16) + 16;

const ModelEntry* find(const std::vector<ModelEntry>& models, const std::string& name) {
    for (const auto& m : models)
        if (m.name == name) return &m;
    return nullptr;
}

}  // namespace

class TestModelScanner : public QObject {
    Q_OBJECT
private slots:
    void foldersAndTrees() {
        QTemporaryDir tmp;
        const fs::path root = path_of(tmp);
        make_tiny_llama(root / "publisher" / "tiny-llama");
        // A vision-language wrapper around the same language model.
        fs::create_directories(root / "vlm");
        write_file(root / "vlm" / "config.json",
                   R"({"architectures":["LlavaForConditionalGeneration"],"text_config":{"model_type":"llama","hidden_size":16,"num_attention_heads":4,"num_hidden_layers":1,"vocab_size":32,"intermediate_size":8},"vision_config":{"model_type":"clip_vision_model"}})");
        const auto vlm_tensors = llama_tensors(16, 1, 4, 4, 32, 8, DType::F16);
        write_file(root / "vlm" / "model.safetensors", safetensors_bytes(vlm_tensors));
        write_file(root / "vlm" / "tokenizer.json", "{}");
        // Broken folders.
        write_file(root / "mamba" / "config.json", R"({"architectures":["MambaForCausalLM"]})");
        make_tiny_llama(root / "truncated");
        fs::resize_file(root / "truncated" / "model.safetensors", 100);
        make_tiny_llama(root / "no-tokenizer");
        fs::remove(root / "no-tokenizer" / "tokenizer.model");
        write_file(root / "pickle" / "config.json", llama_config_json(16, 2, 4, 2, 32, 24));
        write_file(root / "pickle" / "pytorch_model.bin", "PK");
        write_file(root / "badjson" / "config.json", "{\"architectures\": [");
        make_tiny_llama(root / "lying-header");
        {
            std::string bytes = safetensors_bytes(llama_tensors(16, 2, 4, 2, 32, 24));
            bytes[5] = char(0x7f);  // the header length now claims far more than the file holds
            write_file(root / "lying-header" / "model.safetensors", bytes);
        }
        make_tiny_llama(root / "overlap");
        write_file(root / "overlap" / "model.safetensors",
                   std::string("\x6c\0\0\0\0\0\0\0", 8) +
                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})" +
                       std::string(12, '\0'));
        make_tiny_llama(root / "missing-shard");
        fs::remove(root / "missing-shard" / "model.safetensors");
        write_file(root / "missing-shard" / "model.safetensors.index.json",
                   R"({"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors"}})");
        write_file(root / ".hidden" / "x" / "config.json", "{}");
        // Headers that read well but do not match config.json.
        make_tiny_llama(root / "wrong-shape");
        {
            auto tensors = llama_tensors(16, 2, 4, 2, 32, 24);
            tensors[1].shape = {17};
            write_file(root / "wrong-shape" / "model.safetensors", safetensors_bytes(tensors));
        }
        make_tiny_llama(root / "missing-tensor");
        {
            auto tensors = llama_tensors(16, 2, 4, 2, 32, 24);
            tensors.erase(tensors.begin() + 3);
            write_file(root / "missing-tensor" / "model.safetensors", safetensors_bytes(tensors));
        }
        make_tiny_llama(root / "int-weights");
        {
            auto tensors = llama_tensors(16, 2, 4, 2, 32, 24);
            tensors[2].dtype = DType::I32;
            write_file(root / "int-weights" / "model.safetensors", safetensors_bytes(tensors));
        }

        const auto models = scan_models({root}, false);
        QCOMPARE(models.size(), std::size_t(13));
        const auto* tiny = find(models, "tiny-llama");
        QVERIFY(tiny);
        QVERIFY2(tiny->loadable, tiny->problem.c_str());
        QCOMPARE(tiny->parameters, kTinyLlamaParameters);
        QCOMPARE(tiny->dtype, std::string("BF16"));
        QCOMPARE(tiny->family, std::string("llama"));
        QVERIFY(!tiny->vision);
        QVERIFY(tiny->size_bytes > uint64_t(kTinyLlamaParameters) * 2);

        const auto* vlm = find(models, "vlm");
        QVERIFY(vlm && vlm->loadable && vlm->vision);
        QCOMPARE(vlm->family, std::string("llava / llama"));
        int64_t vlm_parameters = 0;
        for (const auto& t : vlm_tensors) {
            int64_t n = 1;
            for (const int64_t d : t.shape) n *= d;
            vlm_parameters += n;
        }
        QCOMPARE(vlm->parameters, vlm_parameters);

        auto problem = [&](const char* name) { return QString::fromStdString(find(models, name)->problem); };
        QVERIFY(problem("mamba").contains("unsupported architecture 'MambaForCausalLM'"));
        QVERIFY(problem("truncated").contains("truncated"));
        QVERIFY(problem("no-tokenizer").contains("no tokenizer"));
        QVERIFY(problem("pickle").contains("pickle"));
        QVERIFY(problem("badjson").contains("not valid JSON"));
        QVERIFY(problem("lying-header").contains("header claims"));
        QVERIFY(problem("overlap").contains("overlap"));
        QVERIFY(problem("missing-shard").contains("shard model-00001-of-00002.safetensors"));
        QVERIFY2(problem("wrong-shape").contains("has shape [17] but config.json implies [16]"), qPrintable(problem("wrong-shape")));
        QVERIFY2(problem("missing-tensor").contains("have no tensor 'model.layers.0.self_attn.k_proj.weight'"),
                 qPrintable(problem("missing-tensor")));
        QVERIFY2(problem("int-weights").contains("is I32"), qPrintable(problem("int-weights")));
        // Messages are relative to the folder the entry names.
        QVERIFY(!problem("mamba").contains(QString::fromStdString(root.string())));
    }

    void huggingFaceCache() {
        QTemporaryDir tmp;
        const fs::path hub = path_of(tmp) / "hub";
        const fs::path repo = hub / "models--someone--tiny-llama";
        // The hub layout: blobs named by hash, snapshots of symlinks, refs/main naming the snapshot.
        const fs::path snapshot = repo / "snapshots" / "abc123";
        make_tiny_llama(path_of(tmp) / "staging");
        fs::create_directories(repo / "blobs");
        fs::create_directories(snapshot);
        for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) {
            fs::rename(path_of(tmp) / "staging" / f, repo / "blobs" / (std::string("blob-") + f));
            fs::create_symlink(fs::path("../../blobs") / (std::string("blob-") + f), snapshot / f);
        }
        fs::create_directories(repo / "snapshots" / "older");
        write_file(repo / "refs" / "main", "abc123\n");
        fs::create_directories(hub / "datasets--x--y");

        qputenv("HF_HUB_CACHE", QByteArray::fromStdString(hub.string()));
        QCOMPARE(hf_hub_cache_dir(), hub);
        const auto models = scan_models({}, true);
        qunsetenv("HF_HUB_CACHE");
        QCOMPARE(models.size(), std::size_t(1));
        QCOMPARE(models[0].name, std::string("someone/tiny-llama"));
        QVERIFY(models[0].from_hf_cache);
        QVERIFY2(models[0].loadable, models[0].problem.c_str());
        QCOMPARE(models[0].parameters, kTinyLlamaParameters);

        qputenv("HF_HOME", "/somewhere/hf");
        QCOMPARE(hf_hub_cache_dir(), fs::path("/somewhere/hf/hub"));
        qunsetenv("HF_HOME");
    }

    void cliListsFixturesStoriesAndCache() {
        LUMEN_REQUIRE_SHARED_DATA(data);
        QTemporaryDir tmp;
        make_tiny_llama(path_of(tmp) / "models" / "tiny-llama");
        const fs::path hub = path_of(tmp) / "hub";
        make_tiny_llama(hub / "models--org--cached" / "snapshots" / "r1");
        const auto r = run_cli({"models", QString::fromStdString((path_of(tmp) / "models").string()),
                                QString::fromStdString((data / "models" / "stories260K-hf").string()), "--json"},
                               {"HF_HUB_CACHE=" + QString::fromStdString(hub.string())});
        QCOMPARE(r.exit_code, 0);
        const auto out = nlohmann::json::parse(r.out.toStdString());
        QCOMPARE(out.size(), std::size_t(3));
        std::map<std::string, nlohmann::json> by_name;
        for (const auto& m : out) by_name[m["name"]] = m;
        // stories260K: 512x64 embeddings (tied) + 5 layers of (2x64 norms, 64x64 q, 2x32x64 k/v,
        // 64x64 o, 3x172x64 mlp) + 64 final norm.
        QCOMPARE(by_name["stories260K-hf"]["parameters"].get<int64_t>(),
                 int64_t(512 * 64 + 5 * (2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 172 * 64) + 64));
        QCOMPARE(by_name["stories260K-hf"]["loadable"].get<bool>(), true);
        QCOMPARE(by_name["stories260K-hf"]["dtype"].get<std::string>(), std::string("F32"));
        QCOMPARE(by_name["tiny-llama"]["parameters"].get<int64_t>(), kTinyLlamaParameters);
        QCOMPARE(by_name["org/cached"]["from_hf_cache"].get<bool>(), true);

        const auto table = run_cli({"models", QString::fromStdString((path_of(tmp) / "models").string()),
                                    "--no-hf-cache"});
        QCOMPARE(table.exit_code, 0);
        QVERIFY2(table.out.contains("tiny-llama") && table.out.contains("4,944") && table.out.contains("ok"), table.out);
    }
};

QTEST_GUILESS_MAIN(TestModelScanner)
#include "test_model_scanner.moc"
