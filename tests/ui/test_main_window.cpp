// The desktop app with real widgets on the offscreen platform and the real engine on the CPU
// (stories260K, and a slower random model built for the test): sending and streaming, stop,
// regenerate, edit-and-resend, images in, the screenshot geometry, a kill during a reply, settings.
#include <QApplication>
#include <QComboBox>
#include <QStatusBar>
#include <QClipboard>
#include <QDropEvent>
#include <QElapsedTimer>
#include <QLabel>
#include <QListWidget>
#include <QToolButton>
#include <QMimeData>
#include <QProcess>
#include <QStandardPaths>
#include <QPushButton>
#include <QSignalSpy>
#include <QStandardItemModel>
#include <QtTest>
#include <sys/stat.h>
#include <csignal>
#include <functional>
#include <nlohmann/json.hpp>

#include "engine/backend/device.h"
#include "tests/support/test_support.h"
#include "tests/support/tiny_models.h"
#include "ui/app_settings.h"
#include "ui/chat_view.h"
#include "ui/composer.h"
#include "ui/conversation_list.h"
#include "ui/history_store.h"
#include "ui/image_attachment.h"
#include "ui/main_window.h"
#include "ui/notice_bar.h"
#include "ui/screenshot.h"
#include "ui/settings_dialog.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;
namespace fs = std::filesystem;

namespace {

// A random Llama big enough that the CPU takes seconds over a reply (to stop or kill mid-way).
fs::path build_slow_model(const fs::path& dir) {
    const TinySpec spec = load_tiny_spec();
    TinyModel m{"slow", "llava15",
                {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 256},
                 {"intermediate_size", 768}, {"num_hidden_layers", 6}, {"num_attention_heads", 4},
                 {"num_key_value_heads", 4}, {"vocab_size", 32064}, {"max_position_embeddings", 4096},
                 {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"},
                 {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}}};
    build_tiny_model(spec, m, "bfloat16", *shared_data() / "tokenizers", dir);
    // No end-of-sequence: the reply runs until stopped or the context is full.
    write_file(dir / "generation_config.json", R"({"do_sample": false, "eos_token_id": []})");
    return dir;
}

QString reply_of(MainWindow& w) { return w.chat_view()->messages().last().text; }

}  // namespace

class TestMainWindow : public QObject {
    Q_OBJECT
private:
    QTemporaryDir data_;
    fs::path stories_;
    QTemporaryDir slow_dir_;
    fs::path slow_;

    bool load(MainWindow& w, const fs::path& model) {
        QSignalSpy loaded(&w.worker(), &EngineWorker::loaded);
        w.load_model(QString::fromStdString(model.string()));
        return loaded.wait(60000);
    }
    // Opens Settings, sets the combo box named `box` to the item with `data`, checks the open
    // dialog with `check` when given, and accepts it: whether the item was there (and the check held).
    bool choose_in_settings(MainWindow& w, const QString& box, const QVariant& data,
                            const std::function<bool(SettingsDialog&)>& check = {}) {
        bool chosen = false;
        QTimer::singleShot(200, [&] {
            auto* dialog = qobject_cast<SettingsDialog*>(QApplication::activeModalWidget());
            if (!dialog) return;
            for (auto* combo : dialog->findChildren<QComboBox*>())
                if (combo->accessibleName() == box) combo->setCurrentIndex(combo->findData(data)), chosen = combo->currentIndex() >= 0;
            if (check) chosen = chosen && check(*dialog);
            dialog->accept();
        });
        w.open_settings();
        return chosen;
    }
    // The combo `box` has an "fp8" item: enabled where the GPU has FP8, else disabled saying why.
    static bool fp8_offered_where_it_runs(SettingsDialog& d, const QString& box) {
        const bool fp8_gpu = !list_gpus().empty() && runs_fp8(list_gpus().front());
        for (auto* combo : d.findChildren<QComboBox*>()) {
            if (combo->accessibleName() != box) continue;
            const int fp8 = combo->findData("fp8");
            auto* items = qobject_cast<QStandardItemModel*>(combo->model());
            if (fp8 < 0 || !items) return false;
            return fp8_gpu ? items->item(fp8)->isEnabled()
                           : !items->item(fp8)->isEnabled() &&
                                 combo->itemData(fp8, Qt::ToolTipRole).toString().contains("compute capability 8.9 or newer");
        }
        return false;
    }
    bool send(MainWindow& w, const QString& text, int timeout_ms = 60000) {
        QSignalSpy done(&w, &MainWindow::reply_finished);
        w.composer()->edit()->setFocus();
        QTest::keyClicks(w.composer()->edit(), text);
        QTest::keyClick(w.composer()->edit(), Qt::Key_Return);
        return done.wait(timeout_ms);
    }

private slots:
    void initTestCase() {
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests run the real stories260K model");
        stories_ = *data / "models" / "stories260K-hf";
        slow_ = build_slow_model(path_of(slow_dir_));
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, data_.path());
        qputenv("HF_HUB_CACHE", (data_.path() + "/no-hub").toUtf8());
        AppSettings().set_model_folders({});
    }

    void sendingStreamsTheReplyOfLumenCliGenerate() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        MainWindow w(settings, store);
        w.show();
        QVERIFY(load(w, stories_));
        // The event loop stays responsive while the reply streams: the longest gap between
        // ticks of a 5 ms timer is measured.
        QElapsedTimer clock;
        qint64 last = 0, worst = 0;
        QTimer tick;
        tick.setInterval(5);
        connect(&tick, &QTimer::timeout, this, [&] {
            const qint64 now = clock.elapsed();
            worst = std::max(worst, now - last);
            last = now;
        });
        clock.start();
        tick.start();
        QVERIFY(send(w, "Once upon a time"));
        tick.stop();
        qInfo("longest event-loop stall while streaming: %lld ms", worst);
        QVERIFY(worst <= 50);

        const auto r = run_cli({"generate", "--model", QString::fromStdString(stories_.string()), "--prompt", "Once upon a time",
                                "--max-new-tokens", "256"});
        QCOMPARE(r.exit_code, 0);
        QString expected = QString::fromUtf8(r.out);
        expected.chop(1);  // the newline after the text
        QCOMPARE(reply_of(w), expected);
        // Stored, and the conversation is listed.
        QCOMPARE(store.conversations().size(), 1);
        const auto messages = store.messages(w.current_conversation());
        QCOMPARE(messages.size(), 2);
        QCOMPARE(messages[1].text, expected);
        QVERIFY(messages[1].complete);
        QCOMPARE(w.conversations()->list()->count(), 2);  // under its date heading
        QCOMPARE(w.conversations()->list()->item(0)->text(), QString("Today"));
    }

    void stopRegenerateAndEdit() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        MainWindow w(settings, store);
        w.show();
        QVERIFY(load(w, slow_));
        QSignalSpy done(&w, &MainWindow::reply_finished);
        QTest::keyClicks(w.composer()->edit(), "Tell me a long story");
        QTest::keyClick(w.composer()->edit(), Qt::Key_Return);
        QTRY_VERIFY_WITH_TIMEOUT(!reply_of(w).isEmpty(), 30000);
        QTest::keyClick(&w, Qt::Key_Escape);  // Esc stops the reply
        QVERIFY(done.wait(10000));
        QCOMPARE(FinishReason(done.last().at(0).toInt()), FinishReason::Cancelled);
        const QString partial = reply_of(w);
        QVERIFY(!partial.isEmpty());
        QCOMPARE(store.messages(w.current_conversation()).last().text, partial);
        QVERIFY(store.messages(w.current_conversation()).last().complete);

        // Regenerate: the last reply is replaced by another one.
        emit w.chat_view()->regenerate_requested(w.chat_view()->messages().last().id);
        QTRY_VERIFY_WITH_TIMEOUT(reply_of(w).size() > 10, 30000);
        w.stop();
        QVERIFY(done.wait(10000));
        QCOMPARE(w.chat_view()->messages().size(), 2);
        QCOMPARE(store.messages(w.current_conversation()).size(), 2);

        // Edit: the question goes back to the composer; nothing is removed until it is sent.
        const qint64 question = w.chat_view()->messages().first().id;
        emit w.chat_view()->edit_requested(question);
        QCOMPARE(w.composer()->text(), QString("Tell me a long story"));
        QCOMPARE(w.chat_view()->messages().size(), 2);
        QCOMPARE(store.messages(w.current_conversation()).size(), 2);
        // Cancel leaves everything as it was.
        QVERIFY(w.notice()->active());
        w.notice()->action_button()->click();
        QVERIFY(w.composer()->text().isEmpty());
        QCOMPARE(w.chat_view()->messages().size(), 2);
        QCOMPARE(store.messages(w.current_conversation()).size(), 2);
        // Edited and sent, it replaces the turn.
        emit w.chat_view()->edit_requested(question);
        w.composer()->set_text("Tell me a short story");
        w.send();
        QTRY_VERIFY_WITH_TIMEOUT(!reply_of(w).isEmpty(), 30000);
        w.stop();
        QVERIFY(done.wait(10000));
        QCOMPARE(store.messages(w.current_conversation()).first().text, QString("Tell me a short story"));
    }

    void imagesIn() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        MainWindow w(settings, store);
        w.show();
        Composer* c = w.composer();
        const QString photo = QString::fromStdString((*shared_data() / "images" / "view336.png").string());
        const QString jpeg = QString::fromStdString((*shared_data() / "images" / "llava_waterview.jpg").string());
        write_file(path_of(dir) / "notes.txt", "not an image");
        write_file(path_of(dir) / "fake.png", "this is text, not a PNG");

        // A drop of file URLs: two photos and a text file.
        QMimeData files;
        files.setUrls({QUrl::fromLocalFile(photo), QUrl::fromLocalFile(jpeg), QUrl::fromLocalFile(dir.filePath("notes.txt"))});
        auto drop_on = [&](const QMimeData* mime) {
            QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
            QApplication::sendEvent(c, &enter);
            QVERIFY(enter.isAccepted());
            QDropEvent drop(QPointF(10, 10), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
            QApplication::sendEvent(c, &drop);
        };
        drop_on(&files);
        QVERIFY2(c->images().size() == 2, qPrintable(c->problem()));
        QCOMPARE(c->images()[0].size, QSize(336, 336));
        QVERIFY2(c->problem().contains("notes.txt: not an image"), qPrintable(c->problem()));

        // Broken files: a pipe (opening it must not wait for a writer) and a GIF whose pixel data
        // is damaged; both are refused by name and nothing else changes.
        QCOMPARE(::mkfifo(dir.filePath("pipe.png").toLocal8Bit().constData(), 0600), 0);
        std::string gif = std::string("GIF89a\x04\0\x04\0\x80\0\0", 13) + std::string(6, '\0');
        gif += std::string(",\0\0\0\0\x04\0\x04\0\0\x02\x05\xff\xff\xff\xff\xff\0;", 20);
        write_file(path_of(dir) / "broken.gif", gif);
        QMimeData broken;
        broken.setUrls({QUrl::fromLocalFile(dir.filePath("pipe.png")), QUrl::fromLocalFile(dir.filePath("broken.gif"))});
        drop_on(&broken);
        QCOMPARE(c->images().size(), 2);
        QVERIFY2(c->problem().contains("pipe.png: is a pipe"), qPrintable(c->problem()));
        QVERIFY2(c->problem().contains("broken.gif: broken GIF"), qPrintable(c->problem()));

        // Raw image data from a browser, and a non-image.
        QMimeData raw;
        QImage red(40, 30, QImage::Format_RGB32);
        red.fill(Qt::red);
        raw.setImageData(red);
        drop_on(&raw);
        QCOMPARE(c->images().size(), 3);
        QCOMPARE(c->images()[2].size, QSize(40, 30));

        // A pasted image (Ctrl+V with the focus elsewhere in the window).
        QApplication::clipboard()->setImage(red);
        w.activateWindow();
        QVERIFY(QTest::qWaitForWindowActive(&w));
        w.conversations()->list()->setFocus();
        QTest::keyClick(w.conversations()->list(), Qt::Key_V, Qt::ControlModifier);
        QCOMPARE(c->images().size(), 4);

        // The attach button, with its file dialog answered.
        c->choose_files = [&](QWidget*) { return QStringList{photo, dir.filePath("fake.png")}; };
        QToolButton* attach = nullptr;
        for (auto* b : c->findChildren<QToolButton*>())
            if (b->accessibleName() == "Attach images") attach = b;
        QVERIFY(attach);
        QTest::mouseClick(attach, Qt::LeftButton);
        QCOMPARE(c->images().size(), 5);
        QVERIFY(c->problem().contains("fake.png"));

        // A thumbnail's Remove button takes its image away.
        QToolButton* remove = nullptr;
        for (auto* b : c->findChildren<QToolButton*>())
            if (b->accessibleName().startsWith("Remove")) remove = b;
        QTest::mouseClick(remove, Qt::LeftButton);
        QCOMPARE(c->images().size(), 4);

        // Images sent to a text-only model: said so, nothing sent.
        QVERIFY(load(w, stories_));
        c->set_text("What is this?");
        w.send();
        QVERIFY(c->problem().contains("reads text only"));
        QCOMPARE(w.chat_view()->messages().size(), 0);
        QCOMPARE(c->images().size(), 4);
        // ...with a button that opens the model picker.
        QPushButton* choose = nullptr;
        for (auto* b : c->findChildren<QPushButton*>())
            if (b->accessibleName() == "Choose a model…" && b->isVisibleTo(c)) choose = b;
        QVERIFY(choose);
        QString opened;
        QTimer::singleShot(300, [&] {
            if (QWidget* modal = QApplication::activeModalWidget()) {
                opened = modal->metaObject()->className();
                modal->close();
            }
        });
        QTest::mouseClick(choose, Qt::LeftButton);
        QCOMPARE(opened, QString("lumen::ui::ModelPicker"));
    }

    // A vision-language model sees the attached image: the reply equals lumen-cli chat's with the
    // same image, and a follow-up question reuses the prepared image and its cached tokens.
    void visionModelAnswersAboutTheImage() {
        const auto data = shared_data();
        QTemporaryDir model, dir;
        const TinyVlmSpec spec = load_tiny_vlm_spec();
        const TinyVlm& llava = spec.models.front();
        QCOMPARE(QString::fromStdString(llava.name), QString("llava"));
        LUMEN_REQUIRE_TOKENIZER(*data, llava.tokenizer);
        build_tiny_vlm(spec, llava, *data / "tokenizers", path_of(model));
        const fs::path photo = *data / "images" / "view500x336.png";
        const QString question = "What is shown in this image?";

        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        MainWindow w(settings, store);
        w.show();
        QVERIFY(load(w, path_of(model)));
        QVERIFY(w.worker().model().sees_images);
        QFile f(QString::fromStdString(photo.string()));
        QVERIFY(f.open(QIODevice::ReadOnly));
        const ImageResult image = image_from_bytes(f.readAll(), "view500x336.png");
        QVERIFY(image.image);
        w.composer()->add_image(*image.image);
        QVERIFY(send(w, question));
        const auto r = run_cli({"chat", "--model", model.path(), "--device", "cpu", "--image", QString::fromStdString(photo.string()),
                                "--prompt", question});
        QCOMPARE(r.exit_code, 0);
        QString expected = QString::fromUtf8(r.out);
        expected.chop(1);
        QCOMPARE(reply_of(w), expected);
        auto messages = store.messages(w.current_conversation());
        QCOMPARE(messages.size(), 2);
        QCOMPARE(messages[0].images.size(), 1);

        // Model settings offer how images are read: as stored or FP8, the latter only where the GPU
        // has it (else shown disabled, saying why). Left as it is, nothing reloads.
        QVERIFY(choose_in_settings(w, "Image reading", "auto", [](SettingsDialog& d) { return fp8_offered_where_it_runs(d, "Image reading"); }));

        // The next question: the image stays in the prompt, its tokens come from the cache.
        QVERIFY(send(w, "And the colours?"));
        messages = store.messages(w.current_conversation());
        QCOMPARE(messages.size(), 4);
        QVERIFY(messages[3].complete);
        QVERIFY2(messages[3].stats.value("reused_tokens").toInt() > 576, qPrintable(QString::number(messages[3].stats.value("reused_tokens").toInt())));
        // Decoded and preprocessed once: when it was attached, not again for either message.
        QCOMPARE(w.worker().images_prepared(), 1);

        // An image attached while a model loads is prepared once the model is ready.
        w.worker().unload();
        w.composer()->add_image(*image.image);
        QVERIFY(load(w, path_of(model)));
        QTRY_COMPARE(w.worker().images_prepared(), 1);
    }

    // Model settings: choosing 4-bit weights for a 16-bit folder loads it again, quantized; the status
    // bar says so, and the reply is lumen-cli chat --weights int4's.
    void fourBitWeightsReloadTheModelQuantized() {
        QTemporaryDir model, dir;
        const TinySpec spec = load_tiny_spec();
        // Widths that groups of 128 divide, so that every product is quantized.
        TinyModel m{"llama128", "llava15",
                    {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 128},
                     {"intermediate_size", 256}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                     {"num_key_value_heads", 4}, {"vocab_size", 32064}, {"max_position_embeddings", 512},
                     {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"},
                     {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}}};
        build_tiny_model(spec, m, "float16", *shared_data() / "tokenizers", path_of(model));
        write_file(path_of(model) / "generation_config.json", R"({"do_sample": false})");
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        ChatSampling sampling;
        sampling.max_new_tokens = 12;
        settings.set_chat_preset(model.path(), {{}, sampling});
        MainWindow w(settings, store);
        w.show();
        QVERIFY(load(w, path_of(model)));
        QCOMPARE(w.worker().model().weights, QString("16-bit"));

        QSignalSpy loaded(&w.worker(), &EngineWorker::loaded);
        // FP8 is among the choices; without a GPU of compute capability 8.9+ it is shown disabled,
        // saying why.
        QVERIFY(choose_in_settings(w, "Weights", "int4", [](SettingsDialog& d) {
            // A text-only model reads no images: no choice of how.
            for (auto* combo : d.findChildren<QComboBox*>())
                if (combo->accessibleName() == "Image reading") return false;
            return fp8_offered_where_it_runs(d, "Weights");
        }));
        QVERIFY(loaded.wait(60000));
        QCOMPARE(w.worker().model().weights, QString("4-bit (groups of 128) at load"));
        QVERIFY2(w.statusBar()->currentMessage().contains("4-bit"), qPrintable(w.statusBar()->currentMessage()));

        QVERIFY(send(w, "Once upon a time"));
        const auto r = run_cli({"chat", "--model", model.path(), "--device", "cpu", "--weights", "int4", "--max-new-tokens", "12",
                                "--prompt", "Once upon a time"});
        QCOMPARE(r.exit_code, 0);
        QString expected = QString::fromUtf8(r.out);
        expected.chop(1);
        QCOMPARE(reply_of(w), expected);
        // And it is not the 16-bit reply (the quantized weights are what answered).
        const auto sixteen = run_cli({"chat", "--model", model.path(), "--device", "cpu", "--max-new-tokens", "12", "--prompt",
                                      "Once upon a time"});
        QVERIFY(sixteen.out != r.out);
        settings.set_model_settings(model.path(), ModelSettings{});
        settings.set_chat_preset(model.path(), {});
    }

    // Choosing an 8-bit KV cache reloads the model with one (the status bar says so), and the reply
    // is lumen-cli chat --quant-policy 8's.
    void eightBitKvCacheReloadsTheModel() {
        QTemporaryDir dir;
        const fs::path model = *shared_data() / "models" / "stories260K-hf";
        const QString path = QString::fromStdString(model.string());
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        ChatSampling sampling;
        sampling.max_new_tokens = 40;
        sampling.temperature = 0;
        settings.set_chat_preset(path, {{}, sampling});
        MainWindow w(settings, store);
        w.show();
        QVERIFY(load(w, model));
        QVERIFY2(w.worker().model().kv_cache.startsWith("32-bit"), qPrintable(w.worker().model().kv_cache));

        QSignalSpy loaded(&w.worker(), &EngineWorker::loaded);
        // The memory estimate says how many tokens the cache holds.
        QVERIFY(choose_in_settings(w, "KV cache", 8, [](SettingsDialog& dialog) {
            for (auto* label : dialog.findChildren<QLabel*>())
                if (label->accessibleName() == "Memory estimate") return label->text().contains("holds about");
            return false;
        }));
        QVERIFY(loaded.wait(60000));
        QVERIFY2(w.worker().model().kv_cache.startsWith("8-bit"), qPrintable(w.worker().model().kv_cache));
        QVERIFY2(w.statusBar()->currentMessage().contains("KV cache 8-bit"), qPrintable(w.statusBar()->currentMessage()));

        QVERIFY(send(w, "Once upon a time"));
        const auto r = run_cli({"chat", "--model", path, "--device", "cpu", "--quant-policy", "8", "--max-new-tokens", "40",
                                "--temperature", "0", "--prompt", "Once upon a time"});
        QCOMPARE(r.exit_code, 0);
        QString expected = QString::fromUtf8(r.out);
        expected.chop(1);
        QCOMPARE(reply_of(w), expected);
        settings.set_model_settings(path, ModelSettings{});
        settings.set_chat_preset(path, {});
    }

    // Settings > Server serves the loaded model from the chat's own engine: a client's chat
    // completion over HTTP equals lumen-cli chat's reply, the status bar says where, and a wrong
    // key is refused.
    void servesTheLoadedModel() {
        const QString curl = QStandardPaths::findExecutable("curl");
        if (curl.isEmpty()) QSKIP("curl is not installed");
        QTemporaryDir dir;
        const fs::path model = *shared_data() / "models" / "stories260K-hf";
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        settings.set_server_settings({true, 0, false, "app-key"});
        MainWindow w(settings, store);
        w.show();
        QVERIFY(load(w, model));
        const QString url = w.worker().serving_url();
        QVERIFY2(url.startsWith("http://127.0.0.1:"), qPrintable(url));
        bool shown = false;
        for (auto* label : w.statusBar()->findChildren<QLabel*>())
            if (label->accessibleName() == "Server") shown = label->isVisible() && label->text().contains(url);
        QVERIFY(shown);

        const QString body = R"({"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":24,"temperature":0})";
        auto ask = [&](const QString& key) {
            QProcess p;
            p.start(curl, {"-s", "-H", "Authorization: Bearer " + key, "-d", body, url + "/chat/completions"});
            p.waitForFinished(60000);
            return nlohmann::json::parse(p.readAllStandardOutput().toStdString());
        };
        const auto reply = ask("app-key");
        const auto r = run_cli({"chat", "--model", QString::fromStdString(model.string()), "--device", "cpu", "--max-new-tokens", "24",
                                "--temperature", "0", "--prompt", "Once upon a time"});
        QCOMPARE(r.exit_code, 0);
        QString expected = QString::fromUtf8(r.out);
        expected.chop(1);
        QCOMPARE(QString::fromStdString(reply["choices"][0]["message"]["content"].get<std::string>()), expected);
        QCOMPARE(QString::fromStdString(ask("wrong")["error"]["code"].get<std::string>()), QString("invalid_api_key"));
        settings.set_server_settings({});
    }

    void screenshotSelectionMapsToDevicePixels() {
        const QSize screen1(1920, 1080), screen2(3840, 2160);
        QCOMPARE(selection_to_device_pixels(QRect(100, 50, 300, 200), 1.0, screen1), QRect(100, 50, 300, 200));
        QCOMPARE(selection_to_device_pixels(QRect(100, 50, 300, 200), 2.0, screen2), QRect(200, 100, 600, 400));
        // Past the edge, and half pixels at ratio 1.5 rounded outwards.
        QCOMPARE(selection_to_device_pixels(QRect(1, 1, 3, 3), 1.5, screen2), QRect(QPoint(1, 1), QPoint(5, 5)));
        QCOMPARE(selection_to_device_pixels(QRect(1800, 1000, 400, 400), 2.0, screen2), QRect(3600, 2000, 240, 160));
        QCOMPARE(selection_to_device_pixels(QRect(0, 0, 1920, 1080), 2.0, screen2), QRect(QPoint(0, 0), screen2));
        // The overlay crops the grab at those pixels.
        QImage grab(400, 200, QImage::Format_RGB32);
        grab.fill(Qt::black);
        for (int y = 20; y < 60; ++y)
            for (int x = 40; x < 100; ++x) grab.setPixel(x, y, qRgb(255, 0, 0));
        QPixmap pixmap = QPixmap::fromImage(grab);
        pixmap.setDevicePixelRatio(2.0);
        ScreenshotOverlay overlay(pixmap, QRect(0, 0, 200, 100));
        QSignalSpy captured(&overlay, &ScreenshotOverlay::captured);
        QTest::mousePress(&overlay, Qt::LeftButton, Qt::NoModifier, QPoint(20, 10));
        QMouseEvent move(QEvent::MouseMove, QPointF(50, 30), QPointF(50, 30), Qt::NoButton, Qt::LeftButton, Qt::NoModifier);
        QApplication::sendEvent(&overlay, &move);
        QTest::mouseRelease(&overlay, Qt::LeftButton, Qt::NoModifier, QPoint(50, 30));
        QCOMPARE(captured.size(), 1);
        const QImage part = captured.first().first().value<QImage>();
        QCOMPARE(part.size(), QSize(60, 40));
        QCOMPARE(part.pixel(0, 0), qRgb(255, 0, 0));
        QCOMPARE(part.pixel(59, 39), qRgb(255, 0, 0));
    }

    void killDuringAReplyKeepsThePartialReply() {
        QTemporaryDir dir;
        QProcess app;
        app.setProgram(QString::fromStdString((fs::path(LUMEN_CLI_PATH).parent_path() / "lumen").string()));
        app.setArguments({"--data-dir", dir.path(), "--model", QString::fromStdString(slow_.string()), "--prompt",
                          "Write a very long story"});
        auto env = QProcessEnvironment::systemEnvironment();
        env.insert("QT_QPA_PLATFORM", "offscreen");
        app.setProcessEnvironment(env);
        app.start();
        QVERIFY(app.waitForStarted());
        // Wait until part of the reply is on disk, then kill without warning.
        const QString db = dir.filePath("history.sqlite3");
        QString partial;
        for (int i = 0; i < 300 && partial.isEmpty(); ++i) {
            QTest::qWait(100);
            HistoryStore peek(db);
            const auto convs = peek.conversations();
            if (!convs.isEmpty() && peek.messages(convs.first().id).size() == 2) partial = peek.messages(convs.first().id)[1].text;
        }
        QVERIFY2(!partial.isEmpty(), "no part of the reply reached the history");
        ::kill(pid_t(app.processId()), SIGKILL);
        app.waitForFinished();

        HistoryStore store(db);
        QVERIFY(store.ok());
        const auto convs = store.conversations();
        QCOMPARE(convs.size(), 1);
        const auto messages = store.messages(convs.first().id);
        QCOMPARE(messages.size(), 2);
        QCOMPARE(messages[0].text, QString("Write a very long story"));
        QVERIFY(messages[1].text.startsWith(partial));
        QVERIFY(!messages[1].complete);
        // The app shows it again after the restart.
        AppSettings settings;
        MainWindow w(settings, store);
        w.open_conversation(convs.first().id);
        QCOMPARE(w.chat_view()->messages().size(), 2);
        QCOMPARE(w.chat_view()->messages()[1].text, messages[1].text);
        QCOMPARE(w.chat_view()->messages()[1].stats, QString("interrupted"));
    }

    void closingWhileAModelLoads() {
        // The loading thread outlives the window; its result must be dropped, not delivered to it.
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        for (int i = 0; i < 5; ++i) {
            auto w = std::make_unique<MainWindow>(settings, store);
            w->load_model(QString::fromStdString(stories_.string()));
            if (i % 2) QTest::qWait(i);
        }
        QTest::qWait(1500);
        MainWindow w(settings, store);
        QVERIFY(load(w, stories_));
    }

    void aSecondLaunchHandsOverToTheFirst() {
        QTemporaryDir dir;
        const QString lumen = QString::fromStdString((fs::path(LUMEN_CLI_PATH).parent_path() / "lumen").string());
        auto env = QProcessEnvironment::systemEnvironment();
        env.insert("QT_QPA_PLATFORM", "offscreen");
        QProcess first;
        first.setProcessEnvironment(env);
        first.start(lumen, {"--data-dir", dir.path()});
        QVERIFY(first.waitForStarted());
        // The first is listening once its history exists.
        for (int i = 0; i < 100 && !QFile::exists(dir.filePath("history.sqlite3")); ++i) QTest::qWait(50);
        QTest::qWait(500);
        for (const QStringList& extra : {QStringList{}, QStringList{"--screenshot"}}) {
            QProcess second;
            second.setProcessEnvironment(env);
            second.start(lumen, QStringList{"--data-dir", dir.path()} + extra);
            QVERIFY(second.waitForFinished(5000));
            QCOMPARE(second.exitCode(), 0);
        }
        QTest::qWait(500);
        QCOMPARE(first.state(), QProcess::Running);
        first.terminate();
        QVERIFY(first.waitForFinished(5000));
    }

    void settingsPersist() {
        const QString model = QString::fromStdString(stories_.string());
        {
            AppSettings s;
            ModelSettings m;
            m.device = "cpu";
            m.session_len = 300;
            m.cache_share = 0.5;
            s.set_model_settings(model, m);
            s.set_theme("dark");
            s.sync();
        }
        AppSettings again;
        QCOMPARE(again.model_settings(model).device, QString("cpu"));
        QCOMPARE(again.model_settings(model).session_len, qint64(300));
        QCOMPARE(again.model_settings(model).cache_share, 0.5);
        QCOMPARE(again.theme(), QString("dark"));
        QCOMPARE(engine_options_for(again, model).session_len, int64_t(300));
        again.set_model_settings(model, ModelSettings{});
        again.set_theme("system");
    }
};

QTEST_MAIN(TestMainWindow)
#include "test_main_window.moc"
