// The app in long use, with real widgets on the offscreen platform and the real engine on the
// CPU: a 30,000-token reply and a 500-message chat stay drawn to their last line and cheap to
// draw, the model is switched or the window closed mid-reply, a conversation outgrows the
// context, a new chat keeps its settings, and messages keep what they were through a restart,
// an undone delete and a cancelled edit.
// Over 600 lines: one scenario a test, each needing the window, the engine and the store together.
#include <ctime>

#include <QAccessible>
#include <QApplication>
#include <QCheckBox>
#include <QDoubleSpinBox>
#include <QElapsedTimer>
#include <QPushButton>
#include <QScrollBar>
#include <QSignalSpy>
#include <QSpinBox>
#include <QtTest>

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
#include "ui/settings_dialog.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;
namespace fs = std::filesystem;

namespace {

// A random Llama with a 40,000-token context that never ends its reply: small enough that the
// CPU writes a few thousand tokens a second.
fs::path build_endless_model(const fs::path& dir, int hidden, int layers, int heads, const std::string& dtype) {
    const TinySpec spec = load_tiny_spec();
    TinyModel m{"endless", "llava15",
                {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", hidden},
                 {"intermediate_size", hidden * 2}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
                 {"num_key_value_heads", heads}, {"vocab_size", 32064}, {"max_position_embeddings", 40000},
                 {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"},
                 {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}}};
    build_tiny_model(spec, m, dtype, *shared_data() / "tokenizers", dir);
    write_file(dir / "generation_config.json", R"({"do_sample": false, "eos_token_id": []})");
    return dir;
}

// The longest gap between ticks of a 5 ms timer while it runs: how long the event loop stalled,
// and how much of that the GUI thread spent working (the rest it waited: for the disk, a lock, or
// a CPU the machine gave to something else).
class StallMeter {
public:
    StallMeter() {
        tick_.setInterval(5);
        QObject::connect(&tick_, &QTimer::timeout, [this] {
            const qint64 now = clock_.elapsed();
            const double cpu = thread_cpu_ms();
            if (now - last_ > worst_) {
                worst_ = now - last_;
                worst_cpu_ = cpu - last_cpu_;
            }
            last_ = now;
            last_cpu_ = cpu;
        });
        clock_.start();
        last_cpu_ = thread_cpu_ms();
        tick_.start();
    }
    qint64 worst() const { return worst_; }
    double worst_cpu() const { return worst_cpu_; }
    // Runs the test's own work on the GUI thread (grabbing and inspecting the view) outside the
    // measurement: it is not the app's.
    template <typename F>
    void exclude(F&& f) {
        f();
        last_ = clock_.elapsed();
        last_cpu_ = thread_cpu_ms();
    }

private:
    static double thread_cpu_ms() {
        timespec t{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
        return double(t.tv_sec) * 1e3 + double(t.tv_nsec) / 1e6;
    }

    QTimer tick_;
    QElapsedTimer clock_;
    qint64 last_ = 0, worst_ = 0;
    double last_cpu_ = 0, worst_cpu_ = 0;
};

// The last message's last line and its footer are inside the viewport, and painted: the pixels
// under the line are not all the background's.
void verify_end_drawn(ChatView* view) {
    const int last = int(view->messages().size()) - 1;
    const QRect line = view->last_line_rect(last);
    const QRect footer = view->footer_rect(last);
    const QRect area = view->viewport()->rect();
    QVERIFY2(!line.isEmpty() && area.contains(line), qPrintable(QString("last line %1,%2 %3x%4 in %5x%6")
                                                                 .arg(line.x()).arg(line.y()).arg(line.width())
                                                                 .arg(line.height()).arg(area.width()).arg(area.height())));
    QVERIFY2(area.contains(footer), qPrintable(QString("footer at %1..%2, viewport %3").arg(footer.top()).arg(footer.bottom()).arg(area.height())));
    const QImage shot = view->viewport()->grab().toImage();
    const qreal dpr = shot.devicePixelRatio();
    const QRgb background = view->viewport()->palette().color(view->viewport()->backgroundRole()).rgb();
    int inked = 0;
    for (int y = line.top(); y <= line.bottom(); ++y)
        for (int x = line.left(); x <= line.right(); ++x) inked += shot.pixel(int(x * dpr), int(y * dpr)) != background;
    QVERIFY2(inked > 10, "the last line is not painted");
}

// A chat of `n` messages, questions and Markdown replies of a few paragraphs, some with code.
qint64 write_long_chat(HistoryStore& store, int n) {
    const qint64 id = store.create_conversation(QString("A chat of %1 messages").arg(n));
    for (int i = 0; i < n; ++i) {
        if (i % 2 == 0) {
            store.add_message(id, "user", QString("Question %1: how does part %1 of the plan work?").arg(i / 2));
            continue;
        }
        QString reply = QString("Part %1 works in **three steps**.\n\nFirst, the input is read and checked; a "
                                "line that is too long is cut.\nSecond, each record is parsed.\n\n")
                            .arg(i / 2);
        if (i % 10 == 1) reply += "```cpp\nint main() {\n    return run(argc, argv);\n}\n```\n\n";
        reply += QString("Last, the results are written out (reply %1).").arg(i);
        store.add_message(id, "assistant", reply, {}, true, "endless");
    }
    return id;
}

// A shown window over a fresh history.
struct Window {
    QTemporaryDir dir;
    HistoryStore store{dir.filePath("h.sqlite3")};
    AppSettings settings;
    MainWindow w{settings, store};
    Window() { w.show(); }
};

// The tiny LLaVA (a 2,048-token context, 576 tokens an image) built into `dir`, and a photo for it.
fs::path build_llava(const QTemporaryDir& dir) {
    const TinyVlmSpec spec = load_tiny_vlm_spec();
    build_tiny_vlm(spec, spec.models.front(), *shared_data() / "tokenizers", path_of(dir));
    return path_of(dir);
}

ImageAttachment photo(const char* name) {
    QFile f(QString::fromStdString((*shared_data() / "images" / name).string()));
    if (!f.open(QIODevice::ReadOnly)) return {};
    const ImageResult image = image_from_bytes(f.readAll(), name);
    return image.image ? *image.image : ImageAttachment{};
}

}  // namespace

class TestLongUse : public QObject {
    Q_OBJECT
private:
    QTemporaryDir data_;
    fs::path stories_;
    QTemporaryDir endless_dir_, slow_dir_;
    fs::path endless_, slow_;

    bool load(MainWindow& w, const fs::path& model) {
        QSignalSpy loaded(&w.worker(), &EngineWorker::loaded);
        w.load_model(QString::fromStdString(model.string()));
        return loaded.wait(60000);
    }
    void type_and_send(MainWindow& w, const QString& text) {
        w.composer()->edit()->setFocus();
        QTest::keyClicks(w.composer()->edit(), text);
        QTest::keyClick(w.composer()->edit(), Qt::Key_Return);
    }

private slots:
    void initTestCase() {
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests run real tokenizers and stories260K");
        LUMEN_REQUIRE_TOKENIZER(*data, "llava15");  // the random models' and the tiny LLaVA's
        stories_ = *data / "models" / "stories260K-hf";
        endless_ = build_endless_model(path_of(endless_dir_), 32, 1, 1, "float32");
        slow_ = build_endless_model(path_of(slow_dir_), 256, 6, 4, "bfloat16");
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, data_.path());
        qputenv("HF_HUB_CACHE", (data_.path() + "/no-hub").toUtf8());
        AppSettings().set_model_folders({});
        // The CPU's KV cache takes a share of the free memory, as on a GPU; these models need
        // little of it, and a smaller pool is quicker to give back under AddressSanitizer.
        ModelSettings small_cache;
        small_cache.cache_share = 0.05;
        AppSettings().set_model_settings(QString::fromStdString(slow_.string()), small_cache);
    }

    void aThirtyThousandTokenReplyStaysDrawn() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        MainWindow w(settings, store);
        w.resize(1200, 800);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));
        QVERIFY(load(w, endless_));
        const qint64 chat = store.create_conversation("Long", {}, ChatSampling{.max_new_tokens = 30000});
        w.conversations()->reload();
        w.open_conversation(chat);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        type_and_send(w, "Write without end");
        StallMeter stall;
        QElapsedTimer clock;
        clock.start();
        // The user types the next question while the reply streams.
        QTimer typing;
        typing.setInterval(40);
        qint64 worst_key = 0;
        connect(&typing, &QTimer::timeout, this, [&] {
            QElapsedTimer key;
            key.start();
            QTest::keyClick(w.composer()->edit(), Qt::Key_A);
            worst_key = std::max(worst_key, key.elapsed());
        });
        typing.start();
        // While it streams the view follows the end and paints it.
        QTRY_VERIFY_WITH_TIMEOUT(w.chat_view()->messages().last().text.size() > 20000, 120000);
        stall.exclude([&] { verify_end_drawn(w.chat_view()); });
        QVERIFY(done.wait(300000));
        const qint64 worst = stall.worst();
        typing.stop();
        QVERIFY(w.composer()->text().size() > 100);
        QCOMPARE(FinishReason(done.last().at(0).toInt()), FinishReason::Length);
        const QString reply = w.chat_view()->messages().last().text;
        qInfo("30,000 tokens (%lld characters) in %lld ms; longest event-loop stall %lld ms (%.0f ms of it working), "
              "slowest key press %lld ms; %d blocks laid out",
              qint64(reply.size()), clock.elapsed(), worst, stall.worst_cpu(), worst_key, w.chat_view()->laid_out_blocks());
        QVERIFY2(worst <= 50, qPrintable(QString("event loop stalled %1 ms, %2 ms of it working").arg(worst).arg(stall.worst_cpu(), 0, 'f', 0)));
        QTest::qWait(100);
        verify_end_drawn(w.chat_view());
        // Only what is near the viewport holds a text layout.
        QVERIFY(w.chat_view()->laid_out_blocks() < 40);
        QCOMPARE(store.messages(chat).last().text, reply);
        QCOMPARE(store.messages(chat).last().stats.value("generated_tokens").toInt(), 30000);

        // Scrolling up stops the following; the top is drawn, and End returns to the end.
        w.chat_view()->verticalScrollBar()->setValue(0);
        QVERIFY(!w.chat_view()->following());
        QTest::qWait(50);
        QVERIFY(w.chat_view()->last_line_rect(0).top() >= 0);
        w.chat_view()->setFocus();
        QTest::keyClick(w.chat_view(), Qt::Key_End);
        QTest::qWait(50);
        verify_end_drawn(w.chat_view());

        // Narrower: heights are measured again where they are seen; the end stays drawn.
        w.resize(700, 800);
        QTest::qWait(100);
        verify_end_drawn(w.chat_view());

        // Reopened, it opens at its end.
        w.new_chat();
        w.open_conversation(chat);
        QTest::qWait(100);
        verify_end_drawn(w.chat_view());
    }

    void aFiveHundredMessageChatStaysDrawn() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        const qint64 small = write_long_chat(store, 100);
        const qint64 large = write_long_chat(store, 500);
        AppSettings settings;
        MainWindow w(settings, store);
        w.resize(1200, 800);
        w.show();
        QVERIFY(QTest::qWaitForWindowExposed(&w));

        w.open_conversation(small);
        w.chat_view()->viewport()->grab();
        const int small_blocks = w.chat_view()->laid_out_blocks();
        w.new_chat();
        QElapsedTimer clock;
        clock.start();
        w.open_conversation(large);
        w.chat_view()->viewport()->grab();
        const qint64 open_ms = clock.elapsed();
        const int large_blocks = w.chat_view()->laid_out_blocks();
        qInfo("500 messages: opened and drawn in %lld ms; %d blocks laid out (%d at 100 messages)", open_ms, large_blocks,
              small_blocks);
        QCOMPARE(w.chat_view()->messages().size(), 500);
        verify_end_drawn(w.chat_view());
        // What is laid out depends on the viewport, not on the length of the chat.
        QVERIFY(large_blocks <= small_blocks + 10);
        QVERIFY2(open_ms < 1000, qPrintable(QString::number(open_ms)));

        // Scrolling through the whole chat a page at a time: every page is painted, none stalls.
        w.chat_view()->verticalScrollBar()->setValue(0);
        QElapsedTimer page_clock;
        qint64 worst_page = 0;
        int pages = 0;
        while (w.chat_view()->verticalScrollBar()->value() < w.chat_view()->verticalScrollBar()->maximum() && pages < 2000) {
            page_clock.start();
            QTest::keyClick(w.chat_view(), Qt::Key_PageDown);
            w.chat_view()->viewport()->grab();
            worst_page = std::max(worst_page, page_clock.elapsed());
            ++pages;
        }
        qInfo("%d pages, the slowest drawn in %lld ms", pages, worst_page);
        QVERIFY(worst_page <= 50);
        verify_end_drawn(w.chat_view());
    }

    void switchingModelMidReplyEndsItCleanly() {
        Window window;
        MainWindow& w = window.w;
        HistoryStore& store = window.store;
        QVERIFY(load(w, slow_));
        type_and_send(w, "Tell me a long story");
        QTRY_VERIFY_WITH_TIMEOUT(w.chat_view()->messages().size() == 2 && !w.chat_view()->messages().last().text.isEmpty(), 30000);
        QVERIFY(w.generating());
        QElapsedTimer clock;
        clock.start();
        QSignalSpy loaded(&w.worker(), &EngineWorker::loaded);
        w.load_model(QString::fromStdString(stories_.string()));
        // The reply ends at once, saved as interrupted; Send is back.
        QVERIFY(!w.generating());
        QVERIFY2(clock.elapsed() < 2000, qPrintable(QString::number(clock.elapsed())));
        auto messages = store.messages(w.current_conversation());
        QCOMPARE(messages.size(), 2);
        QVERIFY(messages[1].complete);
        QVERIFY(messages[1].stats.value("interrupted").toBool());
        QVERIFY(messages[1].stats.value("generated_tokens").toInt() > 0);
        const QString slow_name = QString::fromStdString(slow_.filename().string());
        QCOMPARE(messages[1].model, slow_name);
        QVERIFY(w.chat_view()->messages().last().stats.startsWith("interrupted"));
        // The reply keeps the name of the model that wrote it; the next one is written by the new model.
        QVERIFY(loaded.wait(60000));
        QCOMPARE(w.chat_view()->messages().last().author, slow_name);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        type_and_send(w, "Once upon a time");
        QVERIFY(done.wait(60000));
        QCOMPARE(w.chat_view()->messages().last().author, QString("stories260K-hf"));
        QCOMPARE(w.chat_view()->messages()[1].author, slow_name);

        // Unloading mid-reply does the same.
        w.load_model(QString::fromStdString(slow_.string()));
        QVERIFY(loaded.wait(60000));
        type_and_send(w, "Another long story");
        QTRY_VERIFY_WITH_TIMEOUT(!w.chat_view()->messages().last().text.isEmpty(), 30000);
        clock.restart();
        w.worker().unload();
        QVERIFY(!w.generating());
        QVERIFY(clock.elapsed() < 2000);
        QVERIFY(store.messages(w.current_conversation()).last().stats.value("interrupted").toBool());
    }

    void closingTheWindowMidReplySavesIt() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        qint64 chat = 0;
        {
            auto w = std::make_unique<MainWindow>(settings, store);
            w->show();
            QVERIFY(load(*w, slow_));
            type_and_send(*w, "Tell me a long story");
            QTRY_VERIFY_WITH_TIMEOUT(!w->chat_view()->messages().last().text.isEmpty() &&
                                         w->chat_view()->messages().last().role == "assistant",
                                     30000);
            chat = w->current_conversation();
            QElapsedTimer clock;
            clock.start();
            w->close();
            w.reset();  // joins the engine's thread
            QVERIFY2(clock.elapsed() < 2000, qPrintable(QString::number(clock.elapsed())));
        }
        const auto messages = store.messages(chat);
        QCOMPARE(messages.size(), 2);
        QVERIFY(messages[1].complete);
        QVERIFY(messages[1].stats.value("interrupted").toBool());
        QVERIFY(!messages[1].text.isEmpty());
    }

    void unloadingDuringAnImagePrefetch() {
        QTemporaryDir model;
        const fs::path llava = build_llava(model);
        const ImageAttachment image = photo("llava_waterview.jpg");
        QVERIFY(!image.bytes.isEmpty());
        Window window;
        MainWindow& w = window.w;
        for (int delay : {0, 1, 5, 20}) {
            QVERIFY(load(w, llava));
            QVERIFY(w.worker().model().sees_images);
            w.composer()->add_image(image);  // prepared and encoded in the background
            QTest::qWait(delay);
            QElapsedTimer clock;
            clock.start();
            w.worker().unload();
            QVERIFY2(clock.elapsed() < 2000, qPrintable(QString::number(clock.elapsed())));
            w.composer()->clear();
        }
    }

    void aConversationLongerThanTheContextGoesOn() {
        Window window;
        MainWindow& w = window.w;
        HistoryStore& store = window.store;
        QVERIFY(load(w, stories_));  // a 512-token context
        // Replies as long as the context allows (by default a reply takes at most half of it).
        const qint64 chat = store.create_conversation("Stories", {}, ChatSampling{.max_new_tokens = 1024});
        w.conversations()->reload();
        w.open_conversation(chat);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        type_and_send(w, "Once upon a time");
        QVERIFY(done.wait(60000));
        QCOMPARE(FinishReason(done.last().at(0).toInt()), FinishReason::Length);  // the context is full
        QCOMPARE(store.messages(chat).last().stats.value("prompt_tokens").toInt() +
                     store.messages(chat).last().stats.value("generated_tokens").toInt(),
                 512);
        type_and_send(w, "The little dog");
        QVERIFY(done.wait(60000));
        QCOMPARE(FinishReason(done.last().at(0).toInt()), FinishReason::Length);
        QVERIFY(w.composer()->problem().isEmpty());
        const auto& shown = w.chat_view()->messages();
        QCOMPARE(shown.size(), 4);
        // The first turn was dropped from the prompt, with a note where the model's view begins.
        QVERIFY(shown[0].note.isEmpty());
        QVERIFY(!shown[2].note.isEmpty());
        // The reply is the one lumen-cli gives for the prompt that is left.
        const auto r = run_cli({"chat", "--model", QString::fromStdString(stories_.string()), "--prompt", "The little dog",
                                "--max-new-tokens", "1024"});
        QCOMPARE(r.exit_code, 0);
        QString expected = QString::fromUtf8(r.out);
        expected.chop(1);
        QCOMPARE(shown[3].text, expected);
        QVERIFY(store.messages(w.current_conversation())[3].complete);
    }

    // With images, the prompt's length is known once they are prepared: turns are dropped then.
    void anImageConversationLongerThanTheContextGoesOn() {
        QTemporaryDir model;
        const fs::path llava = build_llava(model);
        const ImageAttachment image = photo("view500x336.png");
        QVERIFY(!image.bytes.isEmpty());
        Window window;
        MainWindow& w = window.w;
        HistoryStore& store = window.store;
        QVERIFY(load(w, llava));
        const qint64 chat = store.create_conversation("Photos", {}, ChatSampling{.max_new_tokens = 8});
        w.conversations()->reload();
        w.open_conversation(chat);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        for (int turn = 0; turn < 4; ++turn) {
            w.composer()->add_image(image);
            type_and_send(w, QString("What is in photo %1?").arg(turn + 1));
            QVERIFY(done.wait(60000));
            QCOMPARE(FinishReason(done.last().at(0).toInt()), FinishReason::Length);
        }
        const auto& shown = w.chat_view()->messages();
        QCOMPARE(shown.size(), 8);
        QVERIFY(shown[0].note.isEmpty());
        QVERIFY(!shown[2].note.isEmpty());  // three images fit beside a reply; four do not
        QVERIFY(store.messages(chat).last().stats.value("prompt_tokens").toInt() < 2048);
    }

    void newChatSettingsApplyToItsFirstMessage() {
        Window window;
        MainWindow& w = window.w;
        HistoryStore& store = window.store;
        QVERIFY(load(w, stories_));
        QTest::keyClick(&w, Qt::Key_N, Qt::ControlModifier);
        QCOMPARE(w.current_conversation(), 0);
        bool set = false;
        QTimer::singleShot(200, [&] {
            auto* dialog = qobject_cast<SettingsDialog*>(QApplication::activeModalWidget());
            if (!dialog) return;
            for (auto* spin : dialog->findChildren<QSpinBox*>())
                if (spin->accessibleName() == "Longest reply") spin->setValue(7), set = true;
            for (auto* spin : dialog->findChildren<QDoubleSpinBox*>())
                if (spin->accessibleName() == "Min-p") spin->setValue(0.1);
            dialog->accept();
        });
        w.open_settings();
        QVERIFY(set);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        type_and_send(w, "Once upon a time");
        QVERIFY(done.wait(60000));
        QCOMPARE(FinishReason(done.last().at(0).toInt()), FinishReason::Length);
        const auto messages = store.messages(w.current_conversation());
        QCOMPARE(messages.last().stats.value("generated_tokens").toInt(), 7);
        QCOMPARE(store.conversation(w.current_conversation()).sampling.max_new_tokens.value_or(0), 7);
        QCOMPARE(store.conversation(w.current_conversation()).sampling.min_p.value_or(0), 0.1);
        // Cut by its limit, the reply can be continued, and grows.
        const QString cut = w.chat_view()->messages().last().text;
        QVERIFY(w.chat_view()->messages().last().can_continue);
        w.continue_reply();
        QVERIFY(done.wait(60000));
        QCOMPARE(w.chat_view()->messages().size(), 2);
        QVERIFY(w.chat_view()->messages().last().text.startsWith(cut));
        QVERIFY(w.chat_view()->messages().last().text.size() > cut.size());
        QCOMPARE(store.messages(w.current_conversation()).last().text, w.chat_view()->messages().last().text);
    }

    // Settings marked for new chats become the model's preset: later new chats start from them.
    void newChatsStartFromTheModelsPreset() {
        Window window;
        MainWindow& w = window.w;
        HistoryStore& store = window.store;
        QVERIFY(load(w, stories_));
        bool set = false;
        QTimer::singleShot(200, [&] {
            auto* dialog = qobject_cast<SettingsDialog*>(QApplication::activeModalWidget());
            if (!dialog) return;
            for (auto* spin : dialog->findChildren<QSpinBox*>())
                if (spin->accessibleName() == "Longest reply") spin->setValue(5), set = true;
            for (auto* box : dialog->findChildren<QCheckBox*>())
                if (box->text().startsWith("Start new chats")) box->setChecked(true);
            dialog->accept();
        });
        w.open_settings();
        QVERIFY(set);
        QSignalSpy done(&w, &MainWindow::reply_finished);
        for (int chat = 0; chat < 2; ++chat) {
            w.new_chat();
            type_and_send(w, "Once upon a time");
            QVERIFY(done.wait(60000));
            QCOMPARE(store.messages(w.current_conversation()).last().stats.value("generated_tokens").toInt(), 5);
        }
        QCOMPARE(store.conversations().size(), 2);
        window.settings.set_chat_preset(QString::fromStdString(stories_.string()), {});
    }

    void messagesStayTrue() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        AppSettings settings;
        qint64 chat = 0;
        QString stats;
        {
            MainWindow w(settings, store);
            w.show();
            QVERIFY(load(w, stories_));
            QSignalSpy done(&w, &MainWindow::reply_finished);
            type_and_send(w, "Once upon a time");
            QVERIFY(done.wait(60000));
            chat = w.current_conversation();
            stats = w.chat_view()->messages().last().stats;
            QVERIFY(stats.startsWith("reached the length limit"));
            QVERIFY(stats.contains("tokens/s"));
        }
        // After a restart: the model that wrote the reply, how it ended and its timings.
        {
            MainWindow w(settings, store);
            w.open_conversation(chat);
            QCOMPARE(w.chat_view()->messages().size(), 2);
            QCOMPARE(w.chat_view()->messages().last().author, QString("stories260K-hf"));
            QCOMPARE(w.chat_view()->messages().last().stats, stats);
            // Screen readers see the transcript as a list of messages.
            QAccessibleInterface* list = QAccessible::queryAccessibleInterface(w.chat_view());
            QVERIFY(list);
            QCOMPARE(list->role(), QAccessible::List);
            QCOMPARE(list->childCount(), 2);
            QCOMPARE(list->child(0)->text(QAccessible::Name), QString("Your message"));
            QCOMPARE(list->child(1)->text(QAccessible::Name), QString("Reply from stories260K-hf"));
            QVERIFY(list->child(1)->text(QAccessible::Value).startsWith(w.chat_view()->messages().last().text));

            // Delete, then undo: the message is back, in its place and in the history.
            const qint64 reply = w.chat_view()->messages().last().id;
            emit w.chat_view()->delete_requested(reply);
            QCOMPARE(w.chat_view()->messages().size(), 1);
            QVERIFY(w.notice()->active());
            w.notice()->action_button()->click();
            QCOMPARE(w.chat_view()->messages().size(), 2);
            QCOMPARE(w.chat_view()->messages().last().id, reply);
            QCOMPARE(store.messages(chat).size(), 2);
            // Deleted without undo, it is gone from the history too.
            emit w.chat_view()->delete_requested(reply);
            w.notice()->dismiss();
            QCOMPARE(store.messages(chat).size(), 1);

            // A question without an answer can be answered.
            QVERIFY(load(w, stories_));
            QVERIFY(w.chat_view()->messages().last().can_regenerate);
            QSignalSpy done(&w, &MainWindow::reply_finished);
            emit w.chat_view()->regenerate_requested(w.chat_view()->messages().last().id);
            QVERIFY(done.wait(60000));
            QCOMPARE(store.messages(chat).size(), 2);
            QVERIFY(!store.messages(chat).last().text.isEmpty());
        }
    }

    void regenerateSamplesAnotherReply() {
        Window window;
        MainWindow& w = window.w;
        HistoryStore& store = window.store;
        QVERIFY(load(w, stories_));  // greedy by its generation_config
        QSignalSpy done(&w, &MainWindow::reply_finished);
        type_and_send(w, "Once upon a time");
        QVERIFY(done.wait(60000));
        const QString first = w.chat_view()->messages().last().text;
        emit w.chat_view()->regenerate_requested(w.chat_view()->messages().last().id);
        QVERIFY(done.wait(60000));
        const QString second = w.chat_view()->messages().last().text;
        QVERIFY(second != first);
        // Both versions are kept: the newest is shown, the older one is a click away.
        const qint64 reply = w.chat_view()->messages().last().id;
        QCOMPARE(w.chat_view()->messages().last().versions, 2);
        QCOMPARE(w.chat_view()->messages().last().version, 2);
        emit w.chat_view()->version_requested(reply, -1);
        QCOMPARE(w.chat_view()->messages().last().text, first);
        QCOMPARE(w.chat_view()->messages().last().version, 1);
        QCOMPARE(store.messages(w.current_conversation()).last().text, first);
        // The shown version is the conversation's: kept through a restart, and a third joins them.
        const qint64 chat = w.current_conversation();
        w.new_chat();
        w.open_conversation(chat);
        QCOMPARE(w.chat_view()->messages().last().text, first);
        QCOMPARE(w.chat_view()->messages().last().version, 1);
        QCOMPARE(w.chat_view()->messages().last().versions, 2);
        emit w.chat_view()->regenerate_requested(w.chat_view()->messages().last().id);
        QVERIFY(done.wait(60000));
        QCOMPARE(w.chat_view()->messages().last().versions, 3);
        emit w.chat_view()->version_requested(w.chat_view()->messages().last().id, -1);
        QCOMPARE(w.chat_view()->messages().last().text, second);
    }
};

QTEST_MAIN(TestLongUse)
#include "test_long_use.moc"
