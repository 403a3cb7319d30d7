// Renders the screenshots in docs/screenshots (light and dark): the first run, a conversation
// with an image and a code block, a long reply, the model picker (with a remote server), a reply
// from that server, the settings with the memory estimate, Get models (search, fit, a download
// part-way), and the screenshot overlay. Run under Xvfb at 1600x1000, and at twice the pixels:
//   xvfb-run -a -s "-screen 0 1600x1000x24" build/tests/make_screenshots docs/screenshots
//   QT_SCALE_FACTOR=2 xvfb-run -a -s "-screen 0 3200x2000x24" build/tests/make_screenshots docs/screenshots
// The image conversation is written into a fresh history as an example (no local test model
// sees images or writes code) and carries no timings; the live reply is stories260K generating
// on the CPU, with its measured timings; everything else is the app as it runs.
#include <QApplication>
#include <QDir>
#include <QMouseEvent>
#include <QScreen>
#include <QSettings>
#include <QTableView>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QTimer>
#include <cstdio>

#include "tests/support/fake_hub.h"
#include "tests/support/serve_process.h"
#include "tests/support/test_support.h"
#include "ui/app_settings.h"
#include "ui/chat_view.h"
#include "ui/get_models_dialog.h"
#include "ui/history_store.h"
#include "ui/main_window.h"
#include "ui/model_picker.h"
#include "ui/models_page.h"
#include "ui/screenshot.h"
#include "ui/settings_dialog.h"
#include "ui/theme.h"

using namespace lumen::ui;
namespace fs = std::filesystem;

namespace {

void settle(int ms = 300) {
    QEventLoop loop;
    QTimer::singleShot(ms, &loop, &QEventLoop::quit);
    loop.exec();
}

void save(QWidget* w, const QString& dir, const QString& name) {
    settle();
    // At a device pixel ratio of 2 (QT_SCALE_FACTOR=2) the files are named "...-2x.png".
    const QString suffix = w->devicePixelRatioF() > 1.5 ? "-2x" : "";
    const QString path = QDir(dir).filePath(name + suffix + ".png");
    w->grab().save(path);
    std::printf("wrote %s\n", qPrintable(path));
}

const char* kReply =
    "The picture shows a **wooden pier** reaching into a calm lake, with forested hills and a mountain "
    "range behind it under a partly cloudy sky.\n\n"
    "To make a smaller copy of it in Python, Pillow keeps the aspect ratio with `thumbnail`:\n\n"
    "```python\nfrom PIL import Image\n\nimage = Image.open(\"pier.jpg\")\nimage.thumbnail((512, 512))  # in place, keeps the ratio\n"
    "image.save(\"pier-small.jpg\", quality=90)\n```\n\n"
    "For an exact size use `image.resize((width, height), Image.Resampling.BICUBIC)`.";

}  // namespace

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    QApplication::setApplicationName("Lumen");
    QApplication::setOrganizationName("Lumen");
    const QString out = argc > 1 ? argv[1] : "docs/screenshots";
    QDir().mkpath(out);
    const auto data = lumen::test::shared_data();
    if (!data) {
        std::fprintf(stderr, "../shared/data is needed for the screenshots\n");
        return 1;
    }
    for (const QString theme : {"light", "dark"}) {
        QTemporaryDir home;
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, home.path());
        qputenv("HF_HUB_CACHE", (home.path() + "/hub").toUtf8());
        apply_theme(theme);
        AppSettings settings;
        settings.set_theme(theme);

        // 1. The first run: no model anywhere.
        {
            settings.set_model_folders({home.path() + "/models"});
            HistoryStore store(home.filePath("first.sqlite3"));
            MainWindow w(settings, store);
            w.resize(1600, 1000);
            w.show();
            save(&w, out, "first-run-" + theme);
        }

        // Fixtures for the rest: stories260K and a folder Lumen cannot load.
        const fs::path models = fs::path(home.path().toStdString()) / "library";
        fs::create_directories(models);
        fs::create_directory_symlink(*data / "models" / "stories260K-hf", models / "stories260K-hf");
        lumen::test::write_file(models / "mamba-130m" / "config.json", R"({"architectures":["MambaForCausalLM"]})");
        settings.set_model_folders({QString::fromStdString(models.string())});

        // 2. A conversation with an image and a code block.
        HistoryStore store(home.filePath("history.sqlite3"));
        const qint64 id = store.create_conversation("Pier photo and resizing");
        QFile photo(QString::fromStdString((*data / "images" / "llava_waterview.jpg").string()));
        photo.open(QIODevice::ReadOnly);
        store.add_message(id, "user", "What is in this picture? And how do I make a smaller copy of it in Python?", {photo.readAll()});
        store.add_message(id, "assistant", kReply);
        // A long reply: paragraphs, a list, a long URL that has to wrap, and code.
        const qint64 long_id = store.create_conversation("Regex for ISO dates");
        store.add_message(long_id, "user", "How do I match ISO 8601 dates with a regular expression, and what are the pitfalls?");
        QString long_reply = "A date such as `2026-12-07` is easy to match; the pitfalls are in what else ISO 8601 allows.\n\n";
        for (int i = 1; i <= 6; ++i)
            long_reply += QString("%1. **Pitfall %1.** A pattern that is too loose accepts month 13 or day 32, and one that is "
                                  "too strict rejects week dates (`2026-W49-1`) and ordinal dates (`2026-341`).\n")
                              .arg(i);
        long_reply += "\nThe standard itself is summarised at https://en.wikipedia.org/wiki/ISO_8601#Calendar_dates_and_the_"
                      "extended_format_with_hyphens_separating_year_month_and_day_values_in_a_very_long_link\n\n"
                      "```python\nimport re\n\nDATE = re.compile(r\"^(\\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$\")\n\n"
                      "def is_date(text):\n    return DATE.match(text) is not None\n```\n\n"
                      "Check the day against the month afterwards (`datetime.date.fromisoformat` does), since no regular "
                      "expression of reasonable size knows that February has 28 or 29 days.";
        for (int turn = 0; turn < 3; ++turn) {
            store.add_message(long_id, "assistant", long_reply, {}, true, "stories260K-hf");
            store.add_message(long_id, "user", "And with time zones?");
        }
        store.add_message(long_id, "assistant", long_reply, {}, true, "stories260K-hf");
        store.create_conversation("Summarise the meeting notes");
        MainWindow w(settings, store);
        w.resize(1600, 1000);
        w.show();
        QEventLoop loaded;
        QObject::connect(&w.worker(), &EngineWorker::loaded, &loaded, &QEventLoop::quit);
        w.load_model(QString::fromStdString((models / "stories260K-hf").string()));
        loaded.exec();
        w.open_conversation(id);
        save(&w, out, "conversation-" + theme);
        w.open_conversation(long_id);
        save(&w, out, "long-reply-" + theme);

        // 2b. A live reply from stories260K, with its real timings.
        {
            w.new_chat();
            QEventLoop replied;
            QObject::connect(&w, &MainWindow::reply_finished, &replied, &QEventLoop::quit);
            w.send_when_ready("Once upon a time");
            replied.exec();
            save(&w, out, "live-reply-" + theme);
        }

        // 3. The model picker, with a server (stories260K served by lumen-cli on the loopback).
        lumen::test::ServeProcess serve(QString::fromStdString((*data / "models" / "stories260K-hf").string()), {});
        settings.set_remote_servers({RemoteEntry{serve.url(), {}, {}}});
        {
            ModelPicker picker(settings, w.worker(), &w);
            picker.resize(1100, 560);
            picker.show();
            settle(800);
            picker.page()->findChild<QTableView*>()->selectRow(1);
            save(&picker, out, "model-picker-" + theme);
        }

        // 3b. A reply from the server's model.
        {
            w.use_remote(serve.url(), "stories260K-hf");
            w.new_chat();
            QEventLoop replied;
            QObject::connect(&w, &MainWindow::reply_finished, &replied, &QEventLoop::quit);
            w.send_when_ready("Once upon a time");
            replied.exec();
            save(&w, out, "remote-reply-" + theme);
            w.unload_model();
        }

        // 4. The settings.
        {
            SettingsDialog dialog(settings, QString::fromStdString((models / "stories260K-hf").string()),
                                  {"Answer briefly.", {}}, {}, false, 0, false, &w);
            dialog.show();
            save(&dialog, out, "settings-" + theme);
        }

        // 4b. Get models, against a hub on the loopback serving stories260K (tests/support/fake_hub):
        // the suggestions, a search, the size and fit of a model, and its download part-way (the
        // hub cuts the connection at 400 kB, so the picture holds still).
        {
            lumen::test::FakeHub hub;
            hub.add_repo_from_folder("tiny-org/stories260K", "0123456789abcdef0123456789abcdef01234567",
                                     *data / "models" / "stories260K-hf", "text-generation", 1200);
            hub.cut_after("tiny-org/stories260K", "model.safetensors", 400000, 1000);
            qputenv("HF_ENDPOINT", QByteArray::fromStdString(hub.endpoint()));
            GetModelsDialog dialog(settings, &w);
            dialog.show();
            settle();
            save(&dialog, out, "get-models-" + theme);
            QEventLoop shown;
            QObject::connect(&dialog, &GetModelsDialog::details_shown, &shown, &QEventLoop::quit);
            dialog.search("stories");
            settle();
            dialog.findChild<QTableWidget*>()->selectRow(0);
            shown.exec();
            dialog.download();
            settle(1500);
            save(&dialog, out, "get-models-download-" + theme);
            dialog.cancel_download();
            qunsetenv("HF_ENDPOINT");
        }

        // 5. The screenshot overlay over the window, a region being chosen.
        {
            settle();
            QScreen* screen = QGuiApplication::primaryScreen();
            QPixmap grab = screen->grabWindow(0);
            if (grab.isNull()) grab = w.grab();
            ScreenshotOverlay overlay(grab, QRect(QPoint(0, 0), QSize(1600, 1000)));
            overlay.show();
            QMouseEvent press(QEvent::MouseButtonPress, QPointF(260, 40), QPointF(260, 40), Qt::LeftButton, Qt::LeftButton, Qt::NoModifier);
            QApplication::sendEvent(&overlay, &press);
            QMouseEvent move(QEvent::MouseMove, QPointF(1120, 330), QPointF(1120, 330), Qt::NoButton, Qt::LeftButton, Qt::NoModifier);
            QApplication::sendEvent(&overlay, &move);
            save(&overlay, out, "screenshot-overlay-" + theme);
        }
    }
    return 0;
}
