// lumen-cli serve driven by clients no one here wrote: the official `openai` npm package
// (tests/api/openai_client.mjs: models, chat streamed and not, stop strings, seeds, n choices, logprobs,
// presence and frequency penalties, completions,
// the API key, images) on stories260K and a tiny vision-language model, 64 concurrent streams with
// oversized requests refused beside them (load.mjs), and a client that goes away mid-stream.
// Skips with a message where node, npm's registry or ../shared/data is absent.
#include <QDir>
#include <QProcess>
#include <QStandardPaths>
#include <QtTest>
#include <nlohmann/json.hpp>

#include "tests/support/serve_process.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"

using namespace lumen;
using namespace lumen::test;
using nlohmann::json;

namespace {

constexpr const char* kKey = "test-key";

// A lumen-cli serve process with the tests' key.
class Server : public ServeProcess {
public:
    explicit Server(const QString& model) : ServeProcess(model, kKey) {}
};

struct Run {
    int exit_code = -1;
    QString out, err;
};

Run run(const QString& program, const QStringList& args, const QString& dir, int timeout_ms) {
    QProcess p;
    p.setWorkingDirectory(dir);
    p.start(program, args);
    Run r;
    if (!p.waitForFinished(timeout_ms)) {
        p.kill();
        p.waitForFinished();
        r.err = "timed out";
        return r;
    }
    r.exit_code = p.exitStatus() == QProcess::NormalExit ? p.exitCode() : -1;
    r.out = QString::fromUtf8(p.readAllStandardOutput());
    r.err += QString::fromUtf8(p.readAllStandardError());
    return r;
}

json last_json_line(const QString& out) { return json::parse(out.trimmed().split('\n').last().toStdString()); }

}  // namespace

class TestOpenAiServer : public QObject {
    Q_OBJECT

    QString node_, npm_, scripts_;  // the client scripts with their node_modules

private slots:
    void initTestCase() {
        if (!shared_data()) QSKIP("../shared/data is absent; these tests serve its stories260K");
        node_ = QStandardPaths::findExecutable("node");
        npm_ = QStandardPaths::findExecutable("npm");
        if (node_.isEmpty() || npm_.isEmpty()) QSKIP("node and npm are not installed: the openai package cannot run here");
        // The package is installed once per machine, outside the source tree.
        scripts_ = QDir::temp().filePath("lumen-openai-client");
        QDir().mkpath(scripts_);
        const QString source = QString(LUMEN_SOURCE_DIR) + "/tests/api/";
        for (const char* f : {"package.json", "openai_client.mjs", "load.mjs"}) {
            QFile::remove(scripts_ + "/" + f);
            QVERIFY(QFile::copy(source + f, scripts_ + "/" + f));
        }
        if (!QFile::exists(scripts_ + "/node_modules/openai/package.json")) {
            const Run install = run(npm_, {"install", "--no-audit", "--no-fund", "--silent"}, scripts_, 240000);
            if (install.exit_code != 0)
                QSKIP(qPrintable("npm could not install the openai package (is the registry reachable?): " + install.err.left(300)));
        }
    }

    void storiesThroughTheOpenAiPackage() {
        Server server(QString::fromStdString((*shared_data() / "models" / "stories260K-hf").string()));
        QVERIFY2(!server.url().isEmpty(), qPrintable(server.errors()));
        const QString image = QString::fromStdString((*shared_data() / "images" / "view336.png").string());
        const Run r = run(node_, {"openai_client.mjs", server.url(), kKey, "stories260K-hf", image}, scripts_, 180000);
        QVERIFY2(r.exit_code == 0, qPrintable(r.out + r.err));
        const json result = last_json_line(r.out);
        QCOMPARE(result["passed"].size(), std::size_t(13));
        // A text-only model says so about an image, with a 400.
        QVERIFY(result["passed"].dump().find("image (refused") != std::string::npos);
    }

    void imagesReachAVisionModel() {
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        QTemporaryDir dir;
        build_tiny_vlm(spec, spec.models.front(), *shared_data() / "tokenizers", path_of(dir));
        Server server(dir.path());
        QVERIFY2(!server.url().isEmpty(), qPrintable(server.errors()));
        const QString image = QString::fromStdString((*shared_data() / "images" / "view336.png").string());
        const QString id = QDir(dir.path()).dirName();
        const Run r = run(node_, {"openai_client.mjs", server.url(), kKey, id, image}, scripts_, 180000);
        const json result = last_json_line(r.out);
        QVERIFY2(result["passed"].dump().find("image (answered)") != std::string::npos, qPrintable(r.out + r.err));
    }

    void sixtyFourClientsAtOnce() {
        Server server(QString::fromStdString((*shared_data() / "models" / "stories260K-hf").string()));
        QVERIFY2(!server.url().isEmpty(), qPrintable(server.errors()));
        const Run r = run(node_, {"load.mjs", server.url(), kKey, "stories260K-hf", "64"}, scripts_, 300000);
        QVERIFY2(r.exit_code == 0, qPrintable(r.out + r.err));
        QCOMPARE(last_json_line(r.out)["streams"].get<int>(), 64);
    }

    // A client that disconnects mid-stream: its request leaves the batch and its KV blocks are
    // freed (both gauges fall to zero) while the reply it asked for would still be going.
    void aClientThatGoesAwayIsCancelled() {
        Server server(QString::fromStdString((*shared_data() / "models" / "stories260K-hf").string()));
        QVERIFY2(!server.url().isEmpty(), qPrintable(server.errors()));
        const QString curl = QStandardPaths::findExecutable("curl");
        if (curl.isEmpty()) QSKIP("curl is not installed");
        const QString body = R"({"model":"stories260K-hf","messages":[{"role":"user","content":"Once"}],"max_tokens":400,"temperature":0,"stream":true})";
        QProcess client;
        client.start(curl, {"-sN", "-H", QString("Authorization: Bearer ") + kKey, "-d", body, server.url() + "/chat/completions"});
        QVERIFY(client.waitForReadyRead(30000));  // streaming
        client.kill();
        client.waitForFinished();
        const QString metrics = server.url().chopped(3) + "/metrics";
        QString text;
        for (int i = 0; i < 40; ++i) {
            text = run(curl, {"-s", "-H", QString("Authorization: Bearer ") + kKey, metrics}, ".", 10000).out;
            if (text.contains("lumen_requests_running 0") && text.contains("lumen_kv_cache_blocks_used 0")) break;
            QTest::qWait(50);
        }
        QVERIFY2(text.contains("lumen_requests_running 0"), qPrintable(text));
        // It did not run to its 400 tokens.
        QVERIFY2(!text.contains("lumen_generation_tokens_total 400"), qPrintable(text));
        QVERIFY2(text.contains("lumen_kv_cache_blocks_used 0"), qPrintable(text));
    }

    // A second server on a port in use says so (it does not quietly share the port), and the
    // first keeps answering.
    void aPortInUseIsRefused() {
        const QString stories = QString::fromStdString((*shared_data() / "models" / "stories260K-hf").string());
        Server server(stories);
        QVERIFY2(!server.url().isEmpty(), qPrintable(server.errors()));
        const QString port = server.url().section(':', 2).section('/', 0, 0);
        const Run second = run(LUMEN_CLI_PATH, {"serve", "--model", stories, "--device", "cpu", "--port", port}, ".", 60000);
        QCOMPARE(second.exit_code, 1);
        QVERIFY2(second.err.contains("cannot listen on 127.0.0.1:" + port + " (in use"), qPrintable(second.err));
        const QString curl = QStandardPaths::findExecutable("curl");
        if (curl.isEmpty()) QSKIP("curl is not installed");
        QVERIFY(run(curl, {"-sf", server.url().chopped(3) + "/health"}, ".", 10000).out.contains("ok"));
    }
};

QTEST_GUILESS_MAIN(TestOpenAiServer)
#include "test_openai_server.moc"
