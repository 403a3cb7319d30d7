// Downloads from the Hugging Face Hub (hub/), against a fake hub on the loopback
// (tests/support/fake_hub.h) that speaks the same API and redirects as huggingface.co: the cache
// laid out as huggingface_hub lays it out, the model then loading and chatting; nothing fetched
// twice; a connection cut mid-file and a killed `lumen-cli pull` resumed with ranges; a damaged
// file refused with nothing kept; gated, missing and unreachable explained; search.
#include <QProcess>
#include <QSignalSpy>
#include <QTcpServer>
#include <QtTest>
#include <set>
#include <thread>

#include "engine/model/model_scanner.h"
#include "hub/hub_api.h"
#include "hub/hub_cache.h"
#include "hub/hub_download.h"
#include "tests/support/fake_hub.h"
#include "tests/support/test_support.h"

using namespace lumen;
using namespace lumen::hub;
using namespace lumen::test;
namespace fs = std::filesystem;

namespace {

constexpr const char* kRepo = "tiny-org/stories260K";
constexpr const char* kCommit = "0123456789abcdef0123456789abcdef01234567";

struct Outcome {
    bool ended = false;
    QString error;
    DownloadPlan plan;
};

Outcome download(const FakeHub& hub, const fs::path& cache, const QString& repo = kRepo, const QString& token = {},
                 const QString& revision = "main") {
    HubDownload d(repo, revision, cache, QString::fromStdString(hub.endpoint()), token);
    Outcome out;
    QObject::connect(&d, &HubDownload::planned, [&](const DownloadPlan& p) { out.plan = p; });
    QSignalSpy done(&d, &HubDownload::finished);
    d.start();
    out.ended = done.wait(60000);
    if (out.ended) out.error = done.first().at(0).toString();
    return out;
}

std::string read_file(const fs::path& p) { return read_test_file(p).value_or("<missing>"); }

// The cache's tree below the repository's folder: each file, and each link with its target.
std::set<std::string> tree(const fs::path& root) {
    std::set<std::string> out;
    for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
        const std::string rel = it->path().lexically_relative(root).string();
        if (it->is_symlink()) out.insert(rel + " -> " + fs::read_symlink(it->path()).string());
        else if (it->is_regular_file()) out.insert(rel);
    }
    return out;
}

}  // namespace

class TestHubDownload : public QObject {
    Q_OBJECT
private:
    fs::path stories_;
    std::string sha256_weights_, sha256_tokenizer_, sha1_config_;

    // The repository as the hub would hold it: stories260K's files, plus files Lumen leaves alone.
    void serve_stories(FakeHub& hub, const std::string& repo = kRepo) {
        std::vector<FakeHub::File> files;
        for (const char* name : {"config.json", "tokenizer_config.json", "LICENSE", "REFERENCE.md"})
            files.push_back({name, read_file(stories_ / name), false});
        for (const char* name : {"model.safetensors", "tokenizer.model"}) files.push_back({name, read_file(stories_ / name), true});
        files.push_back({"pytorch_model.bin", std::string(4096, 'p'), true});  // a pickle: never fetched
        files.push_back({".gitattributes", "*.safetensors filter=lfs\n", false});
        hub.add_repo(repo, kCommit, files);
    }

private slots:
    void initTestCase() {
        qRegisterMetaType<lumen::hub::DownloadPlan>("lumen::hub::DownloadPlan");
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests serve stories260K from a fake hub");
        stories_ = *data / "models" / "stories260K-hf";
        // The hashes the cache must name the blobs by, computed here independently of hub/.
        auto hex = [](const QByteArray& bytes, QCryptographicHash::Algorithm a) { return QCryptographicHash::hash(bytes, a).toHex().toStdString(); };
        const std::string weights = read_file(stories_ / "model.safetensors"), tokenizer = read_file(stories_ / "tokenizer.model");
        const std::string config = read_file(stories_ / "config.json");
        sha256_weights_ = hex(QByteArray::fromStdString(weights), QCryptographicHash::Sha256);
        sha256_tokenizer_ = hex(QByteArray::fromStdString(tokenizer), QCryptographicHash::Sha256);
        sha1_config_ = hex("blob " + QByteArray::number(qsizetype(config.size())) + '\0' + QByteArray::fromStdString(config),
                           QCryptographicHash::Sha1);
    }

    void downloadsIntoTheHubLayout() {
        FakeHub hub;
        serve_stories(hub);
        QTemporaryDir cache;
        const Outcome r = download(hub, path_of(cache));
        QVERIFY(r.ended);
        QVERIFY2(r.error.isEmpty(), qPrintable(r.error));
        QCOMPARE(r.plan.files, 5);  // config, tokenizer config, licence, weights, tokenizer
        QCOMPARE(r.plan.commit, QString(kCommit));

        // huggingface_hub's layout (its cache-system documentation): blobs named by hash, the
        // snapshot's files relative links to them, refs/main holding the commit.
        const fs::path repo = path_of(cache) / "models--tiny-org--stories260K";
        const std::set<std::string> files = tree(repo);
        for (const std::string& blob : {sha256_weights_, sha256_tokenizer_, sha1_config_})
            QVERIFY2(files.count("blobs/" + blob), blob.c_str());
        const std::string snap = std::string("snapshots/") + kCommit + "/";
        QVERIFY(files.count(snap + "model.safetensors -> ../../blobs/" + sha256_weights_));
        QVERIFY(files.count(snap + "tokenizer.model -> ../../blobs/" + sha256_tokenizer_));
        QVERIFY(files.count(snap + "config.json -> ../../blobs/" + sha1_config_));
        QVERIFY(files.count("refs/main"));
        QCOMPARE(read_file(repo / "refs" / "main"), std::string(kCommit));
        int blobs = 0, links = 0;
        for (const std::string& f : files) {
            blobs += f.rfind("blobs/", 0) == 0;
            links += f.rfind("snapshots/", 0) == 0;
            QVERIFY2(f.find("pytorch_model.bin") == std::string::npos && f.find("REFERENCE") == std::string::npos &&
                         f.find(".incomplete") == std::string::npos,
                     f.c_str());
        }
        QCOMPARE(blobs, 5);
        QCOMPARE(links, 5);
        QCOMPARE(hub.content_requests(kRepo, "pytorch_model.bin"), 0);

        // The scanner finds it in the cache under its hub name, and it loads and chats as the original.
        qputenv("HF_HUB_CACHE", cache.path().toUtf8());
        const auto found = scan_models({}, true);
        qunsetenv("HF_HUB_CACHE");
        QCOMPARE(found.size(), std::size_t(1));
        QCOMPARE(found[0].name, std::string(kRepo));
        QVERIFY2(found[0].loadable, found[0].problem.c_str());
        const QStringList generate{"chat", "--prompt", "Once upon a time", "--temperature", "0", "--max-new-tokens", "24", "--model"};
        const CliResult from_cache = run_cli(generate + QStringList{QString::fromStdString((repo / snap).string())});
        const CliResult original = run_cli(generate + QStringList{QString::fromStdString(stories_.string())});
        QCOMPARE(from_cache.exit_code, 0);
        QVERIFY(!from_cache.out.trimmed().isEmpty());
        QCOMPARE(from_cache.out, original.out);

        // Nothing is fetched again; a branch that moved to the same commit only writes its ref.
        const int before = hub.content_requests(kRepo, "model.safetensors");
        const Outcome again = download(hub, path_of(cache));
        QVERIFY2(again.error.isEmpty(), qPrintable(again.error));
        QCOMPARE(again.plan.present, again.plan.total);
        QCOMPARE(hub.content_requests(kRepo, "model.safetensors"), before);
        QCOMPARE(hub.content_requests(kRepo, "config.json"), 1);
    }

    void aCutConnectionResumesWithARange() {
        FakeHub hub;
        serve_stories(hub);
        hub.cut_after(kRepo, "model.safetensors", 300000, 2);
        QTemporaryDir cache;
        const Outcome r = download(hub, path_of(cache));
        QVERIFY2(r.ended && r.error.isEmpty(), qPrintable(r.error));
        const std::vector<std::string> ranges = hub.ranges_asked(kRepo, "model.safetensors");
        // Each try asks for the rest from where the last one stopped: at most where the hub cut it
        // (a connection closed with data in flight may lose some of its last bytes), never from
        // the start again. A request may be sent twice where a kept-alive connection closes as it
        // goes (Qt sends it again, harmlessly).
        QVERIFY(ranges.size() >= 3);
        QCOMPARE(ranges.front(), std::string());
        long long last = 0;
        for (std::size_t i = 1; i < ranges.size(); ++i) {
            QVERIFY2(ranges[i].rfind("bytes=", 0) == 0, ranges[i].c_str());
            const long long from = std::stoll(ranges[i].substr(6));
            QVERIFY2(from > 0 && from >= last && from <= 300000 * static_cast<long long>(i), ranges[i].c_str());
            last = from;
        }
        QVERIFY(last > 300000);  // the third try began past the first cut
        const fs::path weights = path_of(cache) / "models--tiny-org--stories260K" / "blobs" / sha256_weights_;
        QCOMPARE(read_file(weights), read_file(stories_ / "model.safetensors"));
    }

    void aKilledPullResumes() {
        FakeHub hub;
        serve_stories(hub);
        // Every try is cut: the pull keeps retrying until it is killed.
        hub.cut_after(kRepo, "model.safetensors", 250000, 1000);
        QTemporaryDir cache;
        const fs::path partial = path_of(cache) / "models--tiny-org--stories260K" / "blobs" / (sha256_weights_ + ".incomplete");
        QProcess pull;
        QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
        env.insert("HF_ENDPOINT", QString::fromStdString(hub.endpoint()));
        env.insert("HF_HUB_CACHE", cache.path());
        env.remove("HF_TOKEN");
        for (const char* proxy : {"http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}) env.remove(proxy);
        pull.setProcessEnvironment(env);
        pull.start(LUMEN_CLI_PATH, {"pull", kRepo});
        QTRY_VERIFY_WITH_TIMEOUT(fs::exists(partial) && fs::file_size(partial) > 0, 30000);
        pull.kill();
        QVERIFY(pull.waitForFinished(10000));
        const std::uintmax_t arrived = fs::file_size(partial);
        QVERIFY(arrived > 0 && arrived < fs::file_size(stories_ / "model.safetensors"));
        QVERIFY(!fs::exists(path_of(cache) / "models--tiny-org--stories260K" / "snapshots"));  // nothing half-made shows

        hub.cut_after(kRepo, "model.safetensors", 0, 0);  // the connection holds from now on
        pull.start(LUMEN_CLI_PATH, {"pull", kRepo});
        QVERIFY(pull.waitForFinished(60000));
        QCOMPARE(pull.exitCode(), 0);
        const QString folder = QString::fromUtf8(pull.readAllStandardOutput()).trimmed();
        QCOMPARE(folder, QString::fromStdString((path_of(cache) / "models--tiny-org--stories260K" / "snapshots" / kCommit).string()));
        QCOMPARE(hub.ranges_asked(kRepo, "model.safetensors").back(), "bytes=" + std::to_string(arrived) + "-");
        QCOMPARE(read_file(folder.toStdString() + "/model.safetensors"), read_file(stories_ / "model.safetensors"));
        QVERIFY2(QString::fromUtf8(pull.readAllStandardError()).contains("already in the cache"), "the resumed part is counted");
    }

    void aDamagedFileIsRefused() {
        FakeHub hub;
        serve_stories(hub);
        hub.corrupt(kRepo, "model.safetensors");
        QTemporaryDir cache;
        const Outcome r = download(hub, path_of(cache));
        QVERIFY(r.ended);
        QVERIFY2(r.error.contains("model.safetensors arrived damaged") && r.error.contains(QString::fromStdString(sha256_weights_)),
                 qPrintable(r.error));
        const fs::path repo = path_of(cache) / "models--tiny-org--stories260K";
        QVERIFY(!fs::exists(repo / "blobs" / sha256_weights_));
        QVERIFY(!fs::exists(repo / "blobs" / (sha256_weights_ + ".incomplete")));
        QVERIFY(!fs::exists(repo / "snapshots"));
        QVERIFY(!fs::exists(repo / "refs"));
    }

    void failuresAreExplained() {
        FakeHub hub;
        serve_stories(hub, "gated-org/stories");
        hub.require_token("gated-org/stories", "hf_right");
        QTemporaryDir cache;
        Outcome r = download(hub, path_of(cache), "gated-org/stories");
        QVERIFY2(r.error.contains("is gated") && r.error.contains(QString::fromStdString(hub.endpoint()) + "/gated-org/stories"),
                 qPrintable(r.error));
        r = download(hub, path_of(cache), "gated-org/stories", "hf_wrong");
        QVERIFY2(r.error.contains("does not give access") && r.error.contains("accept its licence"), qPrintable(r.error));
        r = download(hub, path_of(cache), "gated-org/stories", "hf_right");
        QVERIFY2(r.error.isEmpty(), qPrintable(r.error));

        r = download(hub, path_of(cache), "nobody/nothing");
        QVERIFY2(r.error.contains("nobody/nothing is not on 127.0.0.1"), qPrintable(r.error));
        r = download(hub, path_of(cache), kRepo, {}, "no-such-branch");
        QVERIFY2(r.error.contains("no such revision") || r.error.contains("is not on"), qPrintable(r.error));

        // More than the disk holds: refused before a byte is fetched.
        hub.add_repo("big/model", kCommit, {{"config.json", "{}", false}, {"model.safetensors", std::string(1000, 'w'), true}});
        hub.announce_size("big/model", "model.safetensors", std::size_t(1) << 52);
        r = download(hub, path_of(cache), "big/model");
        QVERIFY2(r.error.contains("Not enough disk space for big/model"), qPrintable(r.error));
        QCOMPARE(hub.content_requests("big/model", "model.safetensors"), 0);

        // A repository with pickles only.
        hub.add_repo("old/pickles", kCommit, {{"config.json", "{}", false}, {"pytorch_model.bin", "x", true}});
        r = download(hub, path_of(cache), "old/pickles");
        QVERIFY2(r.error.contains("no safetensors weights"), qPrintable(r.error));

        // Offline: nothing listens at the hub's address.
        QTcpServer probe;
        QVERIFY(probe.listen(QHostAddress::LocalHost));
        const QString dead = QString("http://127.0.0.1:%1").arg(probe.serverPort());
        probe.close();
        HubDownload offline(kRepo, "main", path_of(cache), dead, {});
        QSignalSpy done(&offline, &HubDownload::finished);
        offline.start();
        QVERIFY(done.wait(30000));
        QVERIFY2(done.first().at(0).toString().contains("Cannot reach 127.0.0.1"), qPrintable(done.first().at(0).toString()));

        // Not a repository id at all.
        const CliResult bad = run_cli({"pull", "../etc"});
        QCOMPARE(bad.exit_code, 1);
        QVERIFY2(bad.err.contains("is not a Hugging Face repository id"), bad.err.constData());
    }

    void onlyOneCopyOfTheWeights() {
        const QList<RepoFile> mistral{{"config.json", 10, "a", false},
                                      {"model-00001-of-00002.safetensors", 10, "b", true},
                                      {"model-00002-of-00002.safetensors", 10, "c", true},
                                      {"model.safetensors.index.json", 10, "d", false},
                                      {"consolidated.safetensors", 20, "e", true},
                                      {"original/params.json", 1, "f", false},
                                      {"pytorch_model.bin", 20, "g", true}};
        QStringList fetched;
        for (const RepoFile& f : files_to_fetch(mistral)) fetched << f.path;
        QCOMPARE(fetched, (QStringList{"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                       "model.safetensors.index.json", "original/params.json"}));
        // Where Mistral's layout is the only copy, it is the one fetched.
        fetched.clear();
        for (const RepoFile& f : files_to_fetch({{"consolidated.safetensors", 20, "e", true}})) fetched << f.path;
        QCOMPARE(fetched, QStringList{"consolidated.safetensors"});
    }

    void searchFindsModels() {
        FakeHub hub;
        hub.add_repo("OpenGVLab/InternVL2-1B", kCommit, {{"config.json", "{}", false}}, "image-text-to-text", 900);
        hub.add_repo("internlm/internlm2-chat-1_8b", kCommit, {{"config.json", "{}", false}}, "text-generation", 500);
        hub.add_repo("someone/internvl-notes", kCommit, {{"config.json", "{}", false}}, "text-generation", 10);
        HubApi api(QString::fromStdString(hub.endpoint()), {});
        QSignalSpy found(&api, &HubApi::found);
        api.search("internvl");
        QVERIFY(found.wait(10000));
        const auto hits = found.first().at(0).value<QList<SearchHit>>();
        QCOMPARE(hits.size(), 2);
        QCOMPARE(hits[0].id, QString("OpenGVLab/InternVL2-1B"));  // most downloaded first
        QCOMPARE(hits[0].pipeline_tag, QString("image-text-to-text"));
        QCOMPARE(hits[0].downloads, 900);
        api.search("intern", "image-text-to-text");
        QVERIFY(found.wait(10000));
        QCOMPARE(found.last().at(0).value<QList<SearchHit>>().size(), 1);
    }

    void repositoryIdsAndFiles() {
        QVERIFY(valid_repo_id("OpenGVLab/InternVL2-1B"));
        QVERIFY(valid_repo_id("gpt2"));
        for (const char* bad : {"", "a/b/c", "../x", "org/..", "a--b/c", "-x/y", "org/name.", "org name/x"}) QVERIFY2(!valid_repo_id(bad), bad);
        for (const char* yes : {"model-00001-of-00002.safetensors", "config.json", "tokenizer.model", "chat_template.jinja", "merges.txt",
                                "sub/preprocessor_config.json", "LICENSE"})
            QVERIFY2(wanted_file(yes), yes);
        for (const char* no : {"pytorch_model.bin", "model.pt", "weights.pth", "model.ckpt", "x.pkl", "README.md", ".gitattributes",
                               "model.gguf", "flax_model.msgpack", "tf_model.h5", "onnx/model.onnx"})
            QVERIFY2(!wanted_file(no), no);
    }
};

QTEST_GUILESS_MAIN(TestHubDownload)
#include "test_hub_download.moc"
