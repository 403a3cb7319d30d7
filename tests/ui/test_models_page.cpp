// The models page, with real widgets on the offscreen platform: what it lists, what it says when it
// finds nothing, and that its folders persist.
#include <QCheckBox>
#include <QLabel>
#include <QListWidget>
#include <QSignalSpy>
#include <QStackedWidget>
#include <QTableView>
#include <QtTest>
#include <sys/stat.h>

#include "tests/support/test_support.h"
#include "ui/app_settings.h"
#include "ui/model_list_model.h"
#include "ui/models_page.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;

class TestModelsPage : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() {
        QVERIFY(settings_dir_.isValid());
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, settings_dir_.path());
        qputenv("HF_HUB_CACHE", (settings_dir_.path() + "/no-hub").toUtf8());
    }

    void listsModelsAndReasons() {
        QTemporaryDir models;
        write_file(path_of(models) / "tiny" / "config.json", llama_config_json(16, 1, 4, 4, 32, 24));
        write_file(path_of(models) / "tiny" / "model.safetensors", safetensors_bytes(llama_tensors(16, 1, 4, 4, 32, 24)));
        write_file(path_of(models) / "tiny" / "tokenizer.json", "{}");
        write_file(path_of(models) / "odd" / "config.json", R"({"architectures":["GPT2LMHeadModel"]})");
        // Broken folders: a config.json that is a pipe (reading it would block), and weights
        // whose shapes disagree with config.json.
        std::filesystem::create_directories(path_of(models) / "pipe");
        QCOMPARE(::mkfifo((path_of(models) / "pipe" / "config.json").c_str(), 0600), 0);
        write_file(path_of(models) / "wrong" / "config.json", llama_config_json(16, 1, 4, 4, 32, 24));
        write_file(path_of(models) / "wrong" / "model.safetensors", safetensors_bytes(llama_tensors(16, 1, 4, 4, 64, 24)));
        write_file(path_of(models) / "wrong" / "tokenizer.json", "{}");
        AppSettings settings;
        settings.set_model_folders({models.path()});
        ModelsPage page(settings);
        QSignalSpy done(&page, &ModelsPage::scan_finished);
        page.rescan();
        QVERIFY(done.wait(10000));
        QCOMPARE(done.last().at(0).toInt(), 4);
        QCOMPARE(done.last().at(1).toInt(), 1);
        const ModelListModel* m = page.model();
        auto status = [&](int row) { return m->index(row, ModelListModel::Status).data().toString(); };
        QCOMPARE(m->index(0, ModelListModel::Name).data().toString(), QString("odd"));
        QVERIFY(status(0).contains("unsupported architecture 'GPT2LMHeadModel'"));
        QVERIFY2(status(1).contains("config.json: is a pipe"), qPrintable(status(1)));
        QCOMPARE(status(2), QString("Ready"));
        QCOMPARE(m->index(2, ModelListModel::Kind).data().toString(), QString("text"));
        QVERIFY2(status(3).contains("has shape [64, 16] but config.json implies [32, 16]"), qPrintable(status(3)));
        QVERIFY(page.findChild<QTableView*>()->isVisibleTo(&page));
    }

    void huggingFaceCacheCanBeLeftOut() {
        QTemporaryDir hub;
        const std::filesystem::path snapshot = path_of(hub) / "models--someone--tiny" / "snapshots" / "abc";
        write_file(snapshot / "config.json", llama_config_json(16, 1, 4, 4, 32, 24));
        write_file(snapshot / "model.safetensors", safetensors_bytes(llama_tensors(16, 1, 4, 4, 32, 24)));
        write_file(snapshot / "tokenizer.json", "{}");
        write_file(path_of(hub) / "models--someone--tiny" / "refs" / "main", "abc");
        const QByteArray previous = qgetenv("HF_HUB_CACHE");
        qputenv("HF_HUB_CACHE", hub.path().toUtf8());
        AppSettings settings;
        settings.set_model_folders({});
        ModelsPage page(settings);
        QSignalSpy done(&page, &ModelsPage::scan_finished);
        page.rescan();
        QVERIFY(done.wait(10000));
        QCOMPARE(page.model()->rowCount(), 1);
        QCOMPARE(page.model()->index(0, ModelListModel::Name).data().toString(), QString("someone/tiny"));
        auto* include = page.findChild<QCheckBox*>();
        QVERIFY(include && include->isChecked());
        include->setChecked(false);
        QVERIFY(done.wait(10000));
        QCOMPARE(page.model()->rowCount(), 0);
        QVERIFY(!AppSettings().scan_hf_cache());
        include->setChecked(true);
        QVERIFY(done.wait(10000));
        qputenv("HF_HUB_CACHE", previous);
    }

    void emptyStateExplainsWhereItLooked() {
        QTemporaryDir empty;
        AppSettings settings;
        settings.set_model_folders({empty.path()});
        ModelsPage page(settings);
        QSignalSpy done(&page, &ModelsPage::scan_finished);
        page.rescan();
        QVERIFY(done.wait(10000));
        QCOMPARE(done.last().at(0).toInt(), 0);
        const auto* stack = page.findChild<QStackedWidget*>();
        const auto* label = qobject_cast<QLabel*>(stack->currentWidget());
        QVERIFY(label);
        QVERIFY(label->text().contains(empty.path()));
        QVERIFY(label->text().contains("no-hub"));
        QVERIFY(label->text().contains("Get models…"));
    }

    void foldersPersist() {
        QTemporaryDir a;
        {
            AppSettings settings;
            settings.set_model_folders({});
            ModelsPage page(settings);
            QSignalSpy done(&page, &ModelsPage::scan_finished);
            page.add_folder(a.path());
            page.add_folder(a.path());  // a duplicate is ignored
            QVERIFY(done.wait(10000));
            QCOMPARE(page.findChild<QListWidget*>()->count(), 1);
        }
        AppSettings reread;
        QCOMPARE(reread.model_folders(), QStringList{a.path()});
    }

private:
    QTemporaryDir settings_dir_;
};

QTEST_MAIN(TestModelsPage)
#include "test_models_page.moc"
