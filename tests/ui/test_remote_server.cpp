// The app as a client of an OpenAI-compatible server (ui/remote_server), against a `lumen-cli
// serve` started here: the model list, a streamed chat equal to `lumen-cli chat`'s reply, an
// image to a vision-language model, cancelling, and what users are told when the server is not
// there, refuses the key, or lacks the model. Skips with a message where ../shared/data is absent.
#include <QProcess>
#include <QSignalSpy>
#include <QTcpServer>
#include <QTcpSocket>
#include <QtTest>

#include "tests/support/serve_process.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"
#include "ui/remote_server.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;

namespace {

constexpr const char* kKey = "remote-key";

struct Reply {
    QString text;
    int reason = -1;
    QString error;
    Timings timings;
};

Reply wait_reply(RemoteServer& server, quint64 id, int timeout_ms = 120000) {
    Reply r;
    QObject::connect(&server, &RemoteServer::delta, [&](quint64 request, const QString& text, int) {
        if (request == id) r.text += text;
    });
    QSignalSpy done(&server, &RemoteServer::finished);
    QElapsedTimer clock;
    clock.start();
    while (clock.elapsed() < timeout_ms) {
        for (const auto& args : done)
            if (args.at(0).toULongLong() == id) {
                r.reason = args.at(1).toInt();
                r.error = args.at(2).toString();
                r.timings = args.at(3).value<Timings>();
                return r;
            }
        done.wait(100);
    }
    return r;
}

// Another server's way of answering, byte for byte: what it sends back for a request whose text
// holds a marker, written in small pieces (an event, even a CR LF, may be cut anywhere).
class CannedServer : public QObject {
public:
    explicit CannedServer(QList<QPair<QByteArray, QByteArray>> answers) : answers_(std::move(answers)) {
        server_.listen(QHostAddress::LocalHost);
        connect(&server_, &QTcpServer::newConnection, this, [this] {
            while (QTcpSocket* socket = server_.nextPendingConnection()) {
                connect(socket, &QTcpSocket::readyRead, this, [this, socket] { answer(socket); });
                connect(socket, &QTcpSocket::disconnected, socket, &QObject::deleteLater);
            }
        });
    }
    QString url() const { return QString("http://127.0.0.1:%1/v1").arg(server_.serverPort()); }
    const QByteArray& last_request() const { return last_; }

private:
    void answer(QTcpSocket* socket) {
        QByteArray& got = pending_[socket];
        got += socket->readAll();
        const qsizetype head = got.indexOf("\r\n\r\n");
        if (head < 0) return;
        qsizetype length = 0;
        for (const QByteArray& line : got.left(head).split('\n'))
            if (line.toLower().startsWith("content-length:")) length = line.mid(15).trimmed().toLongLong();
        if (got.size() < head + 4 + length) return;
        last_ = got;
        pending_.remove(socket);
        for (const auto& [marker, reply] : answers_) {
            if (!last_.contains(marker)) continue;
            for (qsizetype at = 0; at < reply.size(); at += 7) {
                socket->write(reply.mid(at, 7));
                socket->flush();
                socket->waitForBytesWritten(1000);
            }
            break;
        }
        socket->disconnectFromHost();
    }
    QTcpServer server_;
    QList<QPair<QByteArray, QByteArray>> answers_;
    QHash<QTcpSocket*, QByteArray> pending_;
    QByteArray last_;
};

QByteArray http(const QByteArray& status, const QByteArray& type, const QByteArray& body, bool sized = true) {
    QByteArray out = "HTTP/1.1 " + status + "\r\nContent-Type: " + type + "\r\nConnection: close\r\n";
    if (sized) out += "Content-Length: " + QByteArray::number(body.size()) + "\r\n";
    return out + "\r\n" + body;
}

QByteArray read_bytes(const std::filesystem::path& p) {
    QFile f(QString::fromStdString(p.string()));
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

}  // namespace

class TestRemoteServer : public QObject {
    Q_OBJECT
private:
    QString stories_;

private slots:
    void initTestCase() {
        qRegisterMetaType<lumen::Timings>("lumen::Timings");
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests serve stories260K and a tiny vision-language model");
        stories_ = QString::fromStdString((*data / "models" / "stories260K-hf").string());
    }

    void modelsAndAStreamedChat() {
        ServeProcess serve(stories_, kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        // Pasted without /v1 and with a trailing slash, as users do.
        RemoteServer server(serve.url().chopped(3) + "/", kKey);
        QCOMPARE(server.base_url().toString(), serve.url());
        QSignalSpy listed(&server, &RemoteServer::models_listed);
        server.list_models();
        QVERIFY(listed.wait(10000));
        QCOMPARE(listed.first().at(0).toStringList(), QStringList{"stories260K-hf"});

        const quint64 id = server.chat("stories260K-hf", {{"user", "Once upon a time", {}}}, {.temperature = 0.0, .max_new_tokens = 40});
        const Reply r = wait_reply(server, id);
        QVERIFY2(r.error.isEmpty(), qPrintable(r.error));
        QCOMPARE(FinishReason(r.reason), FinishReason::Length);
        QCOMPARE(r.timings.generated_tokens, 40);
        QVERIFY(r.timings.prompt_tokens > 0 && r.timings.first_token_ms > 0 && r.timings.decode_tokens_per_second > 0);
        // The same reply as the terminal's chat gives for the same message.
        QProcess chat;
        chat.start(LUMEN_CLI_PATH, {"chat", "--model", stories_, "--device", "cpu", "--prompt", "Once upon a time",
                                    "--temperature", "0", "--max-new-tokens", "40"});
        QVERIFY(chat.waitForFinished(60000));
        QCOMPARE(r.text, QString::fromUtf8(chat.readAllStandardOutput()).trimmed());
    }

    void anImageReachesAVisionModel() {
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        QTemporaryDir dir;
        build_tiny_vlm(spec, spec.models.front(), *shared_data() / "tokenizers", path_of(dir));
        ServeProcess serve(dir.path(), kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        RemoteServer server(serve.url(), kKey);
        const QByteArray png = read_bytes(*shared_data() / "images" / "view336.png");
        QVERIFY(!png.isEmpty());
        const QString model = QDir(dir.path()).dirName();
        const quint64 id = server.chat(model, {{"user", "What is in the picture?", {png}}}, {.temperature = 0.0, .max_new_tokens = 8});
        const Reply r = wait_reply(server, id);
        QVERIFY2(r.error.isEmpty(), qPrintable(r.error));
        QVERIFY(r.timings.prompt_tokens > 100);  // the image's tokens are in the prompt
        // A file that is not an image is the server's to refuse, and the app says what it said.
        const quint64 bad = server.chat(model, {{"user", "And this?", {QByteArray("not an image at all")}}}, {.temperature = 0.0, .max_new_tokens = 8});
        const Reply refused = wait_reply(server, bad);
        QCOMPARE(FinishReason(refused.reason), FinishReason::Error);
        QVERIFY2(refused.error.contains("HTTP 400") && refused.error.contains("image"), qPrintable(refused.error));
    }

    void cancellingEndsTheReply() {
        ServeProcess serve(stories_, kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        RemoteServer server(serve.url(), kKey);
        const quint64 id = server.chat("stories260K-hf", {{"user", "Once", {}}}, {.temperature = 0.0, .max_new_tokens = 400});
        QSignalSpy deltas(&server, &RemoteServer::delta);
        QSignalSpy done(&server, &RemoteServer::finished);
        QVERIFY(deltas.wait(30000));
        server.cancel(id);  // ends it at once: nothing more comes for it
        QCOMPARE(done.size(), 1);
        QCOMPARE(FinishReason(done.first().at(1).toInt()), FinishReason::Cancelled);
        const auto seen = deltas.size();
        QTest::qWait(300);
        QCOMPARE(deltas.size(), seen);
    }

    // What other servers send that Lumen's does not: events ended by CR LF, comments, a first
    // chunk with only the role and null content, a usage chunk with no choices; errors as vLLM
    // (older releases) and FastAPI-based servers shape them.
    void otherServersAnswersAreRead() {
        const QByteArray events =
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
            "{\"role\":\"assistant\",\"content\":null},\"finish_reason\":null}]}\r\n\r\n"
            ": ping\r\n\r\n"
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\r\n\r\n"
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\"},\"finish_reason\":\"length\"}]}\r\n\r\n"
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\r\n\r\n"
            "data: [DONE]\r\n\r\n";
        CannedServer other({
            {"GET /v1/models", http("200 OK", "application/json", "{\"object\":\"list\",\"data\":[{\"id\":\"org/model-a\",\"object\":\"model\"},{\"id\":\"model-b\"}]}")},
            {"\"model\":\"too-long\"", http("400 Bad Request", "application/json",
                                            "{\"object\":\"error\",\"message\":\"This model's maximum context length is 2048 tokens.\",\"type\":\"BadRequestError\",\"code\":400}")},
            {"\"model\":\"gone\"", http("404 Not Found", "application/json", "{\"detail\":\"The model gone does not exist.\"}")},
            {"POST /v1/chat/completions", http("200 OK", "text/event-stream", events, false)},
        });
        // An endpoint's whole address, pasted, names the same server.
        RemoteServer server(other.url() + "/chat/completions", "k");
        QCOMPARE(server.base_url().toString(), other.url());
        QSignalSpy listed(&server, &RemoteServer::models_listed);
        server.list_models();
        QVERIFY(listed.wait(10000));
        QCOMPARE(listed.first().at(0).toStringList(), (QStringList{"org/model-a", "model-b"}));

        const Reply r = wait_reply(server, server.chat("org/model-a", {{"user", "Hi", {}}}), 10000);
        QVERIFY2(r.error.isEmpty(), qPrintable(r.error));
        QCOMPARE(r.text, QString::fromUtf8("Hello \u00e9"));
        QCOMPARE(FinishReason(r.reason), FinishReason::Length);
        QCOMPARE(r.timings.prompt_tokens, 7);
        QCOMPARE(r.timings.generated_tokens, 3);
        // What was asked: streamed, with usage, the key; nothing unset sent for the server to refuse.
        const QByteArray asked = other.last_request();
        QVERIFY(asked.contains("Authorization: Bearer k"));
        QVERIFY(asked.contains("\"stream\":true") && asked.contains("\"include_usage\":true"));
        for (const char* unset : {"temperature", "top_p", "top_k", "min_p", "seed", "max_tokens", "repetition_penalty"})
            QVERIFY2(!asked.contains(unset), unset);

        const Reply too_long = wait_reply(server, server.chat("too-long", {{"user", "Hi", {}}}), 10000);
        QVERIFY2(too_long.error.contains("HTTP 400") && too_long.error.contains("maximum context length is 2048"), qPrintable(too_long.error));
        const Reply gone = wait_reply(server, server.chat("gone", {{"user", "Hi", {}}}), 10000);
        QVERIFY2(gone.error.contains("does not have that") && gone.error.contains("model gone does not exist"), qPrintable(gone.error));
    }

    void failuresAreExplained() {
        ServeProcess serve(stories_, kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        // A wrong key.
        RemoteServer wrong(serve.url(), "not-the-key");
        QSignalSpy failed(&wrong, &RemoteServer::failed);
        wrong.list_models();
        QVERIFY(failed.wait(10000));
        QVERIFY2(failed.first().at(0).toString().contains("did not accept the API key"), qPrintable(failed.first().at(0).toString()));
        const Reply refused = wait_reply(wrong, wrong.chat("stories260K-hf", {{"user", "Once", {}}}));
        QCOMPARE(FinishReason(refused.reason), FinishReason::Error);
        QVERIFY2(refused.error.contains("did not accept the API key"), qPrintable(refused.error));
        // A model the server does not have.
        RemoteServer right(serve.url(), kKey);
        const Reply missing = wait_reply(right, right.chat("no-such-model", {{"user", "Once", {}}}));
        QVERIFY2(missing.error.contains("does not have that") && missing.error.contains("no-such-model"), qPrintable(missing.error));
        // Nothing listening: a port taken and let go again.
        QTcpServer probe;
        QVERIFY(probe.listen(QHostAddress::LocalHost));
        const quint16 port = probe.serverPort();
        probe.close();
        RemoteServer nobody(QString("127.0.0.1:%1").arg(port), {});
        QSignalSpy unreachable(&nobody, &RemoteServer::failed);
        nobody.list_models();
        QVERIFY(unreachable.wait(10000));
        QVERIFY2(unreachable.first().at(0).toString().contains("nothing is listening"), qPrintable(unreachable.first().at(0).toString()));
    }
};

QTEST_GUILESS_MAIN(TestRemoteServer)
#include "test_remote_server.moc"
