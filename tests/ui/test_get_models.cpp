// Get models (ui/get_models_dialog) against a fake Hugging Face hub on the loopback: suggestions
// and search, a model's size and whether it fits before anything is fetched, models Lumen cannot
// run said so, a download paused part-way and resumed into the cache, the model then loadable, and
// a gated model explained. Skips with a message where ../shared/data is absent.
#include <QApplication>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSignalSpy>
#include <QTableWidget>
#include <QtTest>

#include "engine/model/model_scanner.h"
#include "tests/support/fake_hub.h"
#include "tests/support/test_support.h"
#include "ui/app_settings.h"
#include "ui/get_models_dialog.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;
namespace fs = std::filesystem;

namespace {

constexpr const char* kCommit = "89abcdef0123456789abcdef0123456789abcdef";

QString label(const QWidget& w, const QString& name) {
    for (const auto* l : w.findChildren<QLabel*>())
        if (l->accessibleName() == name) return l->text();
    return "<no label " + name + ">";
}

// Chooses `repo` in the dialog and waits until its size and fit are shown.
bool choose(GetModelsDialog& dialog, const QString& repo) {
    QSignalSpy details(&dialog, &GetModelsDialog::details_shown);
    dialog.choose(repo);
    return details.wait(10000);
}

QPushButton* button(const QWidget& w, const QString& text) {
    for (auto* b : w.findChildren<QPushButton*>())
        if (b->text() == text) return b;
    return nullptr;
}

}  // namespace

class TestGetModels : public QObject {
    Q_OBJECT
private:
    QTemporaryDir home_;
    QTemporaryDir cache_;
    std::unique_ptr<FakeHub> hub_;
    fs::path stories_;

private slots:
    void initTestCase() {
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; the fake hub serves stories260K");
        stories_ = *data / "models" / "stories260K-hf";
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, home_.path());
        hub_ = std::make_unique<FakeHub>();
        hub_->add_repo_from_folder("tiny-org/stories260K", kCommit, stories_, "text-generation", 1200);
        hub_->add_repo("other/gpt2-like", kCommit,
                       {{"config.json", "{\"architectures\":[\"GPT2LMHeadModel\"],\"n_layer\":2}", false},
                        {"model.safetensors", std::string(1000, 'w'), true}},
                       "text-generation", 5);
        hub_->add_repo("old/pickled", kCommit, {{"config.json", "{}", false}, {"pytorch_model.bin", "x", true}}, "text-generation", 3);
        hub_->add_repo_from_folder("gated-org/stories", kCommit, stories_, "text-generation", 2);
        hub_->require_token("gated-org/stories", "hf_secret");
        qputenv("HF_ENDPOINT", QByteArray::fromStdString(hub_->endpoint()));
        qputenv("HF_HUB_CACHE", cache_.path().toUtf8());
        qunsetenv("HF_TOKEN");
        qputenv("HF_HOME", (home_.path() + "/hf").toUtf8());
    }

    void suggestionsThenSearch() {
        AppSettings settings;
        GetModelsDialog dialog(settings);
        auto* table = dialog.findChild<QTableWidget*>();
        QVERIFY(table->rowCount() >= 10);  // the suggestions, before any search
        QCOMPARE(table->item(0, 0)->text(), QString("OpenGVLab/InternVL2_5-1B"));
        QSignalSpy shown(&dialog, &GetModelsDialog::results_shown);
        dialog.search("stories");
        QVERIFY(shown.wait(10000));
        QCOMPARE(table->rowCount(), 2);
        QCOMPARE(table->item(0, 0)->text(), QString("tiny-org/stories260K"));  // most downloaded first
        QCOMPARE(table->item(0, 2)->text(), QString("1.2K"));
        QVERIFY(table->item(1, 1)->text().contains("gated"));
    }

    void sizeAndFitBeforeDownloading() {
        AppSettings settings;
        GetModelsDialog dialog(settings);
        QVERIFY(choose(dialog, "tiny-org/stories260K"));
        const QString fit = label(dialog, "Whether it fits");
        QVERIFY2(fit.contains("Text model") && (fit.contains("Fits on your GPU") || fit.contains("Runs on the CPU")), qPrintable(fit));
        QVERIFY(button(dialog, "Download")->isEnabled());
        QCOMPARE(hub_->content_requests("tiny-org/stories260K", "model.safetensors"), 0);  // nothing fetched yet

        QVERIFY(choose(dialog, "other/gpt2-like"));
        QVERIFY2(label(dialog, "Whether it fits").contains("Lumen cannot run this model"), qPrintable(label(dialog, "Whether it fits")));
        QVERIFY(!button(dialog, "Download")->isEnabled());

        QVERIFY(choose(dialog, "old/pickled"));
        QVERIFY(!button(dialog, "Download")->isEnabled());

        QVERIFY(choose(dialog, "gated-org/stories"));
        const QString status = label(dialog, "Download status");
        QVERIFY2(status.contains("is gated") && status.contains("/gated-org/stories"), qPrintable(status));
    }

    void aTokenGivenInTheAppOpensAGatedModel() {
        AppSettings settings;
        GetModelsDialog dialog(settings);
        QTimer::singleShot(200, [] {
            auto* ask = QApplication::activeModalWidget();
            if (!ask) return;
            for (auto* edit : ask->findChildren<QLineEdit*>())
                if (edit->accessibleName() == "Access token") edit->setText("hf_secret");
            QMetaObject::invokeMethod(ask, "accept");
        });
        dialog.hub_settings();
        QTRY_VERIFY_WITH_TIMEOUT(!settings.hub_token_store().isEmpty(), 10000);  // the keychain, or (none) the settings
        if (settings.hub_token_store() == "settings") QCOMPARE(settings.hub_token_in_settings(), QString("hf_secret"));
        QVERIFY(choose(dialog, "gated-org/stories"));
        QVERIFY2(label(dialog, "Whether it fits").contains("Text model"), qPrintable(label(dialog, "Download status")));
        QSignalSpy downloaded(&dialog, &GetModelsDialog::downloaded);
        dialog.download();
        QVERIFY(downloaded.wait(30000));
        QVERIFY(inspect_model(downloaded.first().at(0).toString().toStdString()).loadable);
        // A later dialog uses the saved token too.
        GetModelsDialog later(settings);
        QVERIFY(choose(later, "gated-org/stories"));
        QVERIFY2(label(later, "Whether it fits").contains("Text model"), qPrintable(label(later, "Download status")));
        settings.set_hub_token({}, {});
    }

    void pausedAndResumedIntoTheCache() {
        AppSettings settings;
        GetModelsDialog dialog(settings);
        QVERIFY(choose(dialog, "tiny-org/stories260K"));
        // The connection breaks at 300 kB every time: the download waits to retry when paused.
        hub_->cut_after("tiny-org/stories260K", "model.safetensors", 300000, 1000);
        QSignalSpy downloaded(&dialog, &GetModelsDialog::downloaded);
        dialog.download();
        QVERIFY(dialog.downloading());
        QTRY_VERIFY_WITH_TIMEOUT(hub_->content_requests("tiny-org/stories260K", "model.safetensors") >= 1 &&
                                     label(dialog, "Download status").contains(" of "),
                                 20000);
        dialog.pause();
        QVERIFY(!dialog.downloading());
        QVERIFY(label(dialog, "Download status").contains("Paused"));
        QVERIFY(button(dialog, "Resume"));

        hub_->cut_after("tiny-org/stories260K", "model.safetensors", 0, 0);
        dialog.pause();  // Resume
        QVERIFY(downloaded.wait(30000));
        const fs::path folder = downloaded.first().at(0).toString().toStdString();
        QCOMPARE(folder, fs::path(cache_.path().toStdString()) / "models--tiny-org--stories260K" / "snapshots" / kCommit);
        // Resumed from what had arrived (at most the 300 kB before the cut), not from the start.
        const std::string resumed = hub_->ranges_asked("tiny-org/stories260K", "model.safetensors").back();
        QVERIFY2(resumed.rfind("bytes=", 0) == 0 && std::stoll(resumed.substr(6)) > 0 && std::stoll(resumed.substr(6)) <= 300000,
                 resumed.c_str());
        const ModelEntry entry = inspect_model(folder);
        QVERIFY2(entry.loadable, entry.problem.c_str());
        QVERIFY(label(dialog, "Download status").contains("Downloaded"));
    }
};

QTEST_MAIN(TestGetModels)
#include "test_get_models.moc"
