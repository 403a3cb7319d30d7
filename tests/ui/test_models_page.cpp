// The models page, with real widgets on the offscreen platform: what it lists, what it says when it
// finds nothing, and that its folders persist.
#include <QCheckBox>
#include <QLabel>
#include <QListWidget>
#include <QSignalSpy>
#include <QStackedWidget>
#include <QTableView>
#include <QtTest>

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
        AppSettings settings;
        settings.set_model_folders({models.path()});
        ModelsPage page(settings);
        QSignalSpy done(&page, &ModelsPage::scan_finished);
        page.rescan();
        QVERIFY(done.wait(10000));
        QCOMPARE(done.last().at(0).toInt(), 2);
        QCOMPARE(done.last().at(1).toInt(), 1);
        const ModelListModel* m = page.model();
        QCOMPARE(m->index(0, ModelListModel::Name).data().toString(), QString("odd"));
        QVERIFY(m->index(0, ModelListModel::Status).data().toString().contains("unsupported architecture 'GPT2LMHeadModel'"));
        QCOMPARE(m->index(1, ModelListModel::Status).data().toString(), QString("Ready"));
        QCOMPARE(m->index(1, ModelListModel::Kind).data().toString(), QString("text"));
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
        QVERIFY(label->text().contains("huggingface-cli download"));
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
