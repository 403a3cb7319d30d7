// Remote servers in the app, against `lumen-cli serve` processes started here: a server added in
// the model list (its key kept in a keychain where one answers, else in the settings, with a
// warning), its models listed beside the local folders; the chat window streaming from a remote
// model with an image, and the same text as `lumen-cli chat`; a wrong key and nothing listening
// explained, in the list and in the chat. Skips with a message where ../shared/data is absent.
#include <QApplication>
#include <QLabel>
#include <QListWidget>
#include <QSignalSpy>
#include <QStatusBar>
#include <QTcpServer>
#include <QtTest>

#include "tests/support/serve_process.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"
#include "ui/app_settings.h"
#include "ui/chat_view.h"
#include "ui/composer.h"
#include "ui/history_store.h"
#include "ui/image_attachment.h"
#include "ui/main_window.h"
#include "ui/model_list_model.h"
#include "ui/models_page.h"
#include "ui/remote_entries.h"
#include "ui/remote_server.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;
namespace fs = std::filesystem;

namespace {

constexpr const char* kKey = "remote-key";

// A port nothing listens on: taken and let go again.
QString dead_address() {
    QTcpServer probe;
    if (!probe.listen(QHostAddress::LocalHost)) return {};
    return QString("127.0.0.1:%1").arg(probe.serverPort());
}

// Adds a server as the model list does, waiting for its key to be kept.
void add_entry(AppSettings& settings, const QString& url, const QString& key) {
    RemoteEntries entries(settings);
    bool done = false;
    entries.add(url, key, [&](const QString&) { done = true; });
    QTRY_VERIFY_WITH_TIMEOUT(done, 10000);
}

QStringList status_column(const ModelListModel& m) {
    QStringList out;
    for (int row = 0; row < m.rowCount(); ++row)
        out << m.index(row, ModelListModel::Name).data().toString() + ": " + m.index(row, ModelListModel::Status).data().toString();
    return out;
}

QString expected_chat(const QStringList& args) {
    const CliResult r = run_cli(QStringList{"chat", "--device", "cpu"} + args);
    if (r.exit_code != 0) return "lumen-cli chat failed: " + QString::fromUtf8(r.err);
    QString text = QString::fromUtf8(r.out);
    text.chop(1);  // the newline after the reply
    return text;
}

}  // namespace

class TestRemoteModels : public QObject {
    Q_OBJECT
private:
    QTemporaryDir data_;
    QString stories_;

    // Sends `text` (with `images`) in a new conversation that samples greedily, at most `max_tokens`.
    bool send(MainWindow& w, HistoryStore& store, const QString& text, int max_tokens, const QList<QImage>& images = {}) {
        const qint64 id = store.create_conversation("remote", {}, ChatSampling{.temperature = 0.0, .max_new_tokens = max_tokens});
        w.open_conversation(id);
        for (const QImage& image : images) w.composer()->add_image(*image_from_qimage(image, "photo").image);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        w.composer()->set_text(text);
        w.send();
        return done.wait(120000);
    }

private slots:
    void initTestCase() {
        qRegisterMetaType<lumen::Timings>("lumen::Timings");
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests serve stories260K and a tiny vision-language model");
        stories_ = QString::fromStdString((*data / "models" / "stories260K-hf").string());
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, data_.path());
        qputenv("HF_HUB_CACHE", (data_.path() + "/no-hub").toUtf8());
        AppSettings().set_model_folders({});
    }

    void init() { AppSettings().set_remote_servers({}); }

    void serversAreListedBesideTheFolders() {
        ServeProcess serve(stories_, kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        AppSettings settings;
        {
            ModelsPage page(settings);
            QSignalSpy warned(&page, &ModelsPage::key_warning);
            QSignalSpy done(&page, &ModelsPage::scan_finished);
            // Pasted as users copy it: without /v1, with a trailing slash.
            page.add_server(serve.url().chopped(3) + "/", kKey);
            QVERIFY(done.wait(20000));
            QCOMPARE(status_column(*page.model()), QStringList{"stories260K-hf: Ready"});
            QCOMPARE(page.model()->index(0, ModelListModel::Folder).data().toString(), serve.url());
            QCOMPARE(page.model()->loadable_count(), 1);
            // The key went to a keychain, or (no keychain here) into the settings with a warning.
            const QList<RemoteEntry> entries = settings.remote_servers();
            QCOMPARE(entries.size(), 1);
            QCOMPARE(entries[0].url, serve.url());
            // Run under tests/support/with_keyring.sh, a keychain answers: the key must go there.
            if (qEnvironmentVariableIsSet("LUMEN_EXPECT_KEYCHAIN")) QCOMPARE(entries[0].key_store, QString("keychain"));
            if (entries[0].key_store == "settings") {
                QCOMPARE(warned.size(), 1);
                const QString warning = warned.first().at(0).toString();
                QVERIFY2(warning.contains("kept in Lumen's settings file") && warning.contains(settings.file_name()), qPrintable(warning));
                QCOMPARE(entries[0].key_in_settings, QString(kKey));
            } else {
                QCOMPARE(entries[0].key_store, QString("keychain"));
                QVERIFY(entries[0].key_in_settings.isEmpty());
                QCOMPARE(warned.size(), 0);
            }
        }
        // Kept across runs: a new page lists the server again, with the key from where it was kept.
        ModelsPage again(settings);
        QSignalSpy done(&again, &ModelsPage::scan_finished);
        again.rescan();
        QVERIFY(done.wait(20000));
        QCOMPARE(status_column(*again.model()), QStringList{"stories260K-hf: Ready"});
        auto* servers = again.findChildren<QListWidget*>().value(1);
        QVERIFY(servers && servers->accessibleName() == "Remote servers");
        QCOMPARE(servers->count(), 1);
        // Removed: its rows and its entry go.
        servers->setCurrentRow(0);
        again.remove_selected_server();
        QCOMPARE(again.model()->rowCount(), 0);
        QVERIFY(settings.remote_servers().isEmpty());
    }

    void serversThatCannotBeUsedSayWhy() {
        ServeProcess serve(stories_, kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        const QString dead = dead_address();
        AppSettings settings;
        ModelsPage page(settings);
        QSignalSpy done(&page, &ModelsPage::scan_finished);
        page.add_server(serve.url(), "not-the-key");
        QVERIFY(done.wait(20000));
        page.add_server(dead, {});
        QVERIFY(done.wait(20000));
        const QStringList rows = status_column(*page.model());
        QCOMPARE(rows.size(), 2);
        QVERIFY2(rows[0].contains("did not accept the API key"), qPrintable(rows[0]));
        QVERIFY2(rows[1].contains("nothing is listening"), qPrintable(rows[1]));
        QCOMPARE(page.model()->loadable_count(), 0);
    }

    void aRemoteModelAnswersInTheWindow() {
        const auto data = shared_data();
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        const TinyVlm& llava = spec.models.front();
        LUMEN_REQUIRE_TOKENIZER(*data, llava.tokenizer);
        QTemporaryDir model, dir;
        build_tiny_vlm(spec, llava, *data / "tokenizers", path_of(model));
        ServeProcess serve(model.path(), kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        const QString name = QDir(model.path()).dirName();
        AppSettings settings;
        add_entry(settings, serve.url(), kKey);
        if (qEnvironmentVariableIsSet("LUMEN_EXPECT_KEYCHAIN")) {  // the window reads the key back from the keychain
            QCOMPARE(settings.remote_servers().value(0).key_store, QString("keychain"));
            QVERIFY(settings.remote_servers().value(0).key_in_settings.isEmpty());
        }

        HistoryStore store(dir.filePath("h.sqlite3"));
        MainWindow w(settings, store);
        w.show();
        w.use_remote(serve.url(), name);
        QTRY_VERIFY_WITH_TIMEOUT(w.has_model(), 10000);
        QVERIFY(!w.worker().is_loaded());
        QStringList status;
        for (auto* label : w.statusBar()->findChildren<QLabel*>()) status << label->text();
        QVERIFY2(status.contains(name) && status.join(" ").contains("127.0.0.1"), qPrintable(status.join(" | ")));

        // Streamed: the reply arrives in many pieces.
        auto* remote = w.findChild<RemoteServer*>();
        QVERIFY(remote);
        QSignalSpy pieces(remote, &RemoteServer::delta);
        const fs::path photo = *data / "images" / "view500x336.png";
        const QImage image(QString::fromStdString(photo.string()));
        QVERIFY(!image.isNull());
        const QString question = "What is shown in this image?";
        QVERIFY(send(w, store, question, 24, {image}));
        const TranscriptMessage reply = w.chat_view()->messages().last();
        QVERIFY(!reply.text.isEmpty());
        QCOMPARE(reply.text, expected_chat({"--model", model.path(), "--image", QString::fromStdString(photo.string()),
                                            "--prompt", question, "--temperature", "0", "--max-new-tokens", "24"}));
        QVERIFY2(pieces.size() > 1, qPrintable(QString::number(pieces.size())));
        QCOMPARE(reply.author, name);
        QVERIFY2(reply.stats.contains("first token after") && reply.stats.contains("tokens/s"), qPrintable(reply.stats));
        const StoredMessage stored = store.messages(w.current_conversation()).last();
        QCOMPARE(stored.text, reply.text);
        QCOMPARE(stored.model, name);
        QVERIFY(stored.complete);
        QVERIFY(stored.stats.value("prompt_tokens").toInt() > 100);  // the image's tokens were in the prompt

        // The choice is kept: the next start uses the remote model again.
        HistoryStore store2(dir.filePath("h2.sqlite3"));
        MainWindow again(settings, store2);
        QTRY_VERIFY_WITH_TIMEOUT(again.has_model(), 10000);
        QCOMPARE(again.findChild<RemoteServer*>()->base_url().toString(), serve.url());
        // Unloading stops using it, for this run and the next.
        again.unload_model();
        QVERIFY(!again.has_model());
        QVERIFY(settings.last_remote_model().isEmpty());
    }

    void theWindowExplainsAServerItCannotUse() {
        ServeProcess serve(stories_, kKey);
        QVERIFY2(!serve.url().isEmpty(), qPrintable(serve.errors()));
        const QString dead = RemoteServer::normalized(dead_address()).toString();
        AppSettings settings;
        add_entry(settings, serve.url(), "not-the-key");
        add_entry(settings, dead, {});
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        MainWindow w(settings, store);
        w.show();

        w.use_remote(serve.url(), "stories260K-hf");
        QTRY_VERIFY_WITH_TIMEOUT(w.has_model(), 10000);
        QVERIFY(send(w, store, "Once upon a time", 8));
        QString said = w.chat_view()->messages().last().text;
        QVERIFY2(said.contains("could not answer") && said.contains("did not accept the API key"), qPrintable(said));

        w.use_remote(dead, "stories260K-hf");
        QTRY_VERIFY_WITH_TIMEOUT(w.has_model(), 10000);
        QVERIFY(send(w, store, "Once upon a time", 8));
        said = w.chat_view()->messages().last().text;
        QVERIFY2(said.contains("could not answer") && said.contains("nothing is listening"), qPrintable(said));
        // The window goes on: the same question to the served model with the right key answers.
        add_entry(settings, serve.url(), kKey);
        w.use_remote(serve.url(), "stories260K-hf");
        QTRY_VERIFY_WITH_TIMEOUT(w.has_model(), 10000);
        QVERIFY(send(w, store, "Once upon a time", 8));
        QCOMPARE(w.chat_view()->messages().last().text,
                 expected_chat({"--model", stories_, "--prompt", "Once upon a time", "--temperature", "0", "--max-new-tokens", "8"}));
        w.unload_model();
    }
};

QTEST_MAIN(TestRemoteModels)
#include "test_remote_models.moc"
