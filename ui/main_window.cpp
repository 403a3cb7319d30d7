#include "ui/main_window.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QCloseEvent>
#include <QDialog>
#include <QDir>
#include <QImage>
#include <QJsonObject>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QScrollArea>
#include <QShortcut>
#include <QSplitter>
#include <QStatusBar>
#include <QTimer>
#include <QVBoxLayout>

#include "engine/error.h"
#include "engine/model_scanner.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "ui/app_settings.h"
#include "ui/chat_view.h"
#include "ui/composer.h"
#include "ui/conversation_list.h"
#include "ui/history_store.h"
#include "ui/model_list_model.h"
#include "ui/model_picker.h"
#include "ui/screenshot.h"
#include "ui/settings_dialog.h"
#include "ui/theme.h"
#ifdef LUMEN_HAVE_CUDA
#include "kernels/device_info.h"
#endif

namespace lumen::ui {

EngineOptions engine_options_for(const AppSettings& settings, const QString& model_path) {
    const ModelSettings m = settings.model_settings(model_path);
    EngineOptions o;
    o.device = m.device.toStdString();
    o.session_len = m.session_len;
    o.cache_max_entry_count = m.cache_share;
    o.dtype = m.compute.toStdString();
    return o;
}

namespace {

bool gpu_available() {
#ifdef LUMEN_HAVE_CUDA
    return !cuda::list_devices().empty();
#else
    return false;
#endif
}

QString title_from(const QString& text) {
    QString t = text.simplified();
    if (t.isEmpty()) t = QObject::tr("Image question");
    return t.size() > 48 ? t.left(47) + "…" : t;
}

QString stats_line(const Timings& t, qint64 session_len) {
    QStringList parts;
    if (t.generated_tokens > 0) parts << QObject::tr("first token %1 ms").arg(qRound(t.first_token_ms));
    if (t.decode_tokens_per_second > 0) parts << QObject::tr("%1 tokens/s").arg(t.decode_tokens_per_second, 0, 'f', 1);
    parts << QObject::tr("%n token(s)", "", t.generated_tokens);
    parts << QObject::tr("context %1 / %2").arg(t.prompt_tokens + t.generated_tokens).arg(session_len);
    if (t.reused_tokens > 0) parts << QObject::tr("%1 reused").arg(t.reused_tokens);
    return parts.join(" · ");
}

QJsonObject timings_json(const Timings& t, qint64 session_len) {
    return {{"first_token_ms", t.first_token_ms},   {"tokens_per_second", t.decode_tokens_per_second},
            {"generated_tokens", t.generated_tokens}, {"prompt_tokens", t.prompt_tokens},
            {"reused_tokens", t.reused_tokens},      {"session_len", double(session_len)}};
}

Timings timings_from(const QJsonObject& o) {
    Timings t;
    t.first_token_ms = o.value("first_token_ms").toDouble();
    t.decode_tokens_per_second = o.value("tokens_per_second").toDouble();
    t.generated_tokens = o.value("generated_tokens").toInt();
    t.prompt_tokens = o.value("prompt_tokens").toInt();
    t.reused_tokens = o.value("reused_tokens").toInt();
    return t;
}

}  // namespace

MainWindow::MainWindow(AppSettings& settings, HistoryStore& store, QWidget* parent)
    : QMainWindow(parent), settings_(settings), store_(store) {
    setWindowTitle(tr("Lumen"));
    list_ = new ConversationList(store_, this);
    chat_ = new ChatView(this);
    composer_ = new Composer(this);
    auto* right = new QWidget(this);
    auto* right_layout = new QVBoxLayout(right);
    right_layout->setContentsMargins(0, 0, 0, 0);
    right_layout->setSpacing(0);
    right_layout->addWidget(chat_, 1);
    right_layout->addWidget(composer_);
    auto* split = new QSplitter(this);
    split->addWidget(list_);
    split->addWidget(right);
    split->setStretchFactor(1, 1);
    split->setSizes({260, 1000});
    setCentralWidget(split);

    model_label_ = new QLabel(this);
    device_label_ = new QLabel(this);
    memory_label_ = new QLabel(this);
    statusBar()->addWidget(model_label_, 1);
    statusBar()->addPermanentWidget(device_label_);
    statusBar()->addPermanentWidget(memory_label_);

    auto* file = menuBar()->addMenu(tr("&Chat"));
    file->addAction(tr("&New chat"), QKeySequence::New, this, &MainWindow::new_chat);
    file->addAction(tr("&Screenshot question…"), QKeySequence("Ctrl+Shift+S"), this, &MainWindow::take_screenshot);
    file->addSeparator();
    file->addAction(tr("&Quit"), QKeySequence::Quit, qApp, &QApplication::quit);
    auto* model = menuBar()->addMenu(tr("&Model"));
    model->addAction(tr("&Choose model…"), QKeySequence("Ctrl+Shift+M"), this, &MainWindow::open_model_picker);
    model->addAction(tr("&Unload"), &worker_, &EngineWorker::unload);
    auto* prefs = menuBar()->addMenu(tr("&Settings"));
    QAction* settings_action = prefs->addAction(tr("&Settings…"), this, &MainWindow::open_settings);
    settings_action->setShortcuts({QKeySequence("Ctrl+,"), QKeySequence::Preferences});

    auto* stop_key = new QShortcut(QKeySequence(Qt::Key_Escape), this);
    connect(stop_key, &QShortcut::activated, this, &MainWindow::stop);
    auto* paste = new QShortcut(QKeySequence::Paste, this);
    connect(paste, &QShortcut::activated, this, [this] {
        composer_->take_mime(QApplication::clipboard()->mimeData());
        composer_->focus_text();
    });

    flush_timer_ = new QTimer(this);
    flush_timer_->setInterval(30);  // ~33 updates a second, however fast tokens arrive
    connect(flush_timer_, &QTimer::timeout, this, &MainWindow::flush_reply);
    memory_timer_ = new QTimer(this);
    memory_timer_->setInterval(3000);
    connect(memory_timer_, &QTimer::timeout, this, &MainWindow::update_status);
    memory_timer_->start();

    connect(list_, &ConversationList::new_requested, this, &MainWindow::new_chat);
    connect(list_, &ConversationList::selected_changed, this, &MainWindow::open_conversation);
    connect(list_, &ConversationList::deleted, this, [this](qint64 id) {
        if (id == conversation_) new_chat();
    });
    connect(composer_, &Composer::send_requested, this, &MainWindow::send);
    connect(composer_, &Composer::stop_requested, this, &MainWindow::stop);
    connect(composer_, &Composer::screenshot_requested, this, &MainWindow::take_screenshot);
    connect(composer_, &Composer::problem_action_clicked, this, &MainWindow::open_model_picker);
    // Decoded, preprocessed and encoded while the question is being written.
    connect(composer_, &Composer::image_added, this, [this](const ImageAttachment& image) { worker_.prefetch(image.bytes); });
    connect(chat_, &ChatView::link_activated, this, [this](const QString& link) {
        if (link == "models") open_model_picker();
    });
    connect(&worker_, &EngineWorker::delta, this, &MainWindow::on_delta);
    connect(&worker_, &EngineWorker::finished, this, &MainWindow::on_finished);
    connect(&worker_, &EngineWorker::prepared, this, &MainWindow::on_prepared);
    connect(&worker_, &EngineWorker::preparation_failed, this, [this](quint64 ticket, const QString& error) {
        if (ticket != preparing_) return;
        preparing_ = 0;
        finish_reply(int(FinishReason::Error), error, {});
    });
    connect(&worker_, &EngineWorker::loaded, this, &MainWindow::on_loaded);
    connect(&worker_, &EngineWorker::load_started, this, [this](const QString& path) {
        model_label_->setText(tr("Loading %1…").arg(QDir(path).dirName()));
        update_placeholder();
    });
    connect(&worker_, &EngineWorker::load_failed, this, [this](const QString& path, const QString& error) {
        model_label_->setText(tr("%1 did not load").arg(QDir(path).dirName()));
        update_placeholder();
        if (isVisible()) QMessageBox::warning(this, tr("The model did not load"), error);
    });
    connect(&worker_, &EngineWorker::unloaded, this, [this] {
        template_.reset();
        update_status();
        update_placeholder();
    });

    resize(1280, 820);
    if (!settings_.window_state().isEmpty()) restoreGeometry(settings_.window_state());
    list_->reload();
    update_status();
    // Whether any model is installed decides what the empty window says.
    const auto models = scan_models({}, false);
    std::vector<std::filesystem::path> folders;
    for (const auto& f : settings_.model_folders()) folders.emplace_back(f.toStdString());
    scan_found_models_ = !scan_models(folders, settings_.scan_hf_cache()).empty();
    update_placeholder();
    // The last model loads again, in the background.
    const QString last = settings_.last_model();
    if (!last.isEmpty() && QDir(last).exists()) load_model(last);
}

MainWindow::~MainWindow() { stop(); }

void MainWindow::send_when_ready(const QString& text) {
    if (worker_.is_loaded()) {
        composer_->set_text(text);
        send();
    } else {
        pending_prompt_ = text;
    }
}

void MainWindow::load_model(const QString& path) {
    settings_.set_last_model(path);
    worker_.load(path, engine_options_for(settings_, path));
}

void MainWindow::on_loaded(const LoadedModel& model) {
    try {
        template_ = ChatTemplate::for_model(worker_.engine()->model_config(), worker_.engine()->tokenizer());
    } catch (const std::exception& e) {
        template_ = ChatTemplate::by_name("plain");
    }
    update_status();
    update_placeholder();
    composer_->focus_text();
    statusBar()->showMessage(tr("%1 is ready on %2").arg(model.name, model.device), 5000);
    // Images attached while the model was loading are prepared for it now.
    for (const ImageAttachment& image : composer_->images()) worker_.prefetch(image.bytes);
    if (!pending_prompt_.isEmpty()) {
        composer_->set_text(pending_prompt_);
        pending_prompt_.clear();
        send();
    }
}

void MainWindow::new_chat() {
    if (generating()) stop();
    conversation_ = 0;
    chat_->clear_messages();
    list_->select(0);
    composer_->clear();
    composer_->focus_text();
    update_placeholder();
}

void MainWindow::open_conversation(qint64 id) {
    if (id == conversation_) return;
    if (generating()) stop();
    if (id == 0) {
        new_chat();
        return;
    }
    conversation_ = id;
    chat_->clear_messages();
    for (const StoredMessage& m : store_.messages(id)) {
        MessageWidget* w = chat_->add_message(m.role, m.role == "user" ? tr("You") : author_name());
        w->set_message_id(m.id);
        w->set_text(m.text);
        QList<QImage> thumbs;
        QList<QByteArray> originals;
        for (const QString& hash : m.images) {
            const QByteArray bytes = store_.image(hash);
            const ImageResult r = image_from_bytes(bytes, tr("image"));
            if (r.image) thumbs << r.image->thumbnail, originals << bytes;
        }
        w->set_images(thumbs, originals);
        if (m.role == "assistant")
            // A message written without timings (an import, an older history) shows none.
            w->set_stats(!m.complete        ? tr("interrupted")
                         : m.stats.isEmpty() ? QString()
                                             : stats_line(timings_from(m.stats), qint64(m.stats.value("session_len").toDouble())));
        connect_message(w);
    }
    update_regenerate_buttons();
    update_placeholder();
}

void MainWindow::send() {
    if (generating()) return;
    const QString text = composer_->text().trimmed();
    const QList<ImageAttachment> images = composer_->images();
    if (text.isEmpty() && images.isEmpty()) return;
    if (!worker_.is_loaded()) {
        composer_->show_problem(worker_.loading() ? tr("The model is still loading; send again when it is ready.")
                                                  : tr("Choose a model first (Model ▸ Choose model…, Ctrl+Shift+M)."));
        if (!worker_.loading()) open_model_picker();
        return;
    }
    if (!images.isEmpty() && !worker_.model().sees_images) {
        if (worker_.model().vision)
            composer_->show_problem(tr("%1 is a vision model, but its image encoder could not be loaded.").arg(worker_.model().name));
        else
            composer_->show_problem(tr("%1 reads text only: choose a vision model to ask about images.").arg(worker_.model().name),
                                    tr("Choose a model…"));
        return;
    }
    if (conversation_ == 0) {
        conversation_ = store_.create_conversation(title_from(text));
        list_->reload();
        list_->select(conversation_);
    }
    QList<QByteArray> encoded;
    for (const auto& img : images) encoded << img.bytes;
    MessageWidget* user = chat_->add_message("user", tr("You"));
    user->set_text(text);
    QList<QImage> thumbs;
    for (const auto& img : images) thumbs << img.thumbnail;
    user->set_images(thumbs, encoded);
    user->set_message_id(store_.add_message(conversation_, "user", text, encoded));
    connect_message(user);
    composer_->clear();
    start_reply();
}

void MainWindow::start_reply() {
    Engine* engine = worker_.engine();
    if (!engine || !template_) return;
    const ConversationInfo info = store_.conversation(conversation_);
    std::vector<ChatMessage> messages;
    QList<QByteArray> images;  // of the whole conversation, in order: earlier ones come from the KV cache
    if (!info.system_prompt.trimmed().isEmpty()) messages.push_back({"system", info.system_prompt.toStdString(), 0});
    for (MessageWidget* m : chat_->messages()) {
        messages.push_back({m->role().toStdString(), m->text().toStdString(), int(m->images().size())});
        images += m->images();
    }
    if (!images.isEmpty() && !worker_.model().sees_images) {
        // An earlier turn's images, and now a model that cannot see them.
        composer_->show_problem(tr("This conversation has images, and %1 reads text only.").arg(worker_.model().name),
                                tr("Choose a model…"));
        return;
    }

    GenerationRequest request;
    std::string prompt;
    const EncodeOptions encode{.add_special_tokens = template_->tokenize_with_special_tokens()};
    try {
        prompt = template_->render(messages);
        if (images.isEmpty()) request.prompt = engine->tokenizer().encode(prompt, encode);
    } catch (const std::exception& e) {
        composer_->show_problem(QString::fromUtf8(e.what()));
        return;
    }
    const QJsonObject s = info.sampling;
    const QJsonObject d = model_defaults();
    auto pick = [&](const char* key, double fallback) {
        return s.contains(key) ? s.value(key).toDouble() : d.contains(key) ? d.value(key).toDouble() : fallback;
    };
    request.sampling.temperature = float(pick("temperature", 0.7));
    request.sampling.top_p = float(pick("top_p", 1.0));
    request.sampling.top_k = int32_t(pick("top_k", 0));
    request.sampling.repetition_penalty = float(pick("repetition_penalty", 1.0));
    request.sampling.seed = uint64_t(pick("seed", 0));
    request.max_new_tokens = int32_t(pick("max_new_tokens", 1024));
    for (const auto& stop_token : template_->stop_tokens())
        if (const auto id = engine->tokenizer().token_id(stop_token)) request.stop_ids.push_back(*id);
    request.session = uint64_t(conversation_);

    reply_widget_ = chat_->add_message("assistant", author_name());
    reply_widget_->set_streaming(true);
    reply_message_ = store_.add_message(conversation_, "assistant", QString(), {}, false);
    reply_widget_->set_message_id(reply_message_);
    connect_message(reply_widget_);
    reply_text_.clear();
    reply_dirty_ = false;
    since_save_.start();
    if (images.isEmpty()) {
        request_ = worker_.submit(std::move(request));
    } else {
        // Decoding and preprocessing happen off the GUI thread; the request goes when they are done.
        pending_ = std::move(request);
        preparing_ = worker_.prepare(prompt, images, encode);
    }
    composer_->set_generating(true);
    flush_timer_->start();
    update_regenerate_buttons();
}

void MainWindow::on_delta(quint64 request, const QString& text, int) {
    if (request != request_ || text.isEmpty()) return;
    reply_text_ += text;
    reply_dirty_ = true;
}

void MainWindow::flush_reply() {
    if (!reply_dirty_) return;
    reply_dirty_ = false;
    if (reply_widget_) reply_widget_->set_text(reply_text_);
    chat_->scroll_to_end_if_following();
    // What has streamed so far survives a crash: saved at least once a second.
    if (since_save_.elapsed() >= 1000) {
        store_.update_message(reply_message_, reply_text_, false);
        since_save_.restart();
    }
}

void MainWindow::on_finished(quint64 request, int reason, const QString& error, const Timings& timings) {
    if (request != request_) return;
    finish_reply(reason, error, timings);
}

void MainWindow::on_prepared(quint64 ticket, const PreparedInput& input) {
    if (ticket != preparing_) return;  // stopped meanwhile
    preparing_ = 0;
    pending_.prompt = input.ids;
    pending_.images = input.images;
    request_ = worker_.submit(std::move(pending_));
    pending_ = GenerationRequest{};
}

void MainWindow::finish_reply(int reason, const QString& error, const Timings& timings) {
    flush_timer_->stop();
    reply_dirty_ = true;
    flush_reply();
    const qint64 session_len = worker_.model().session_len;
    QJsonObject stats = timings_json(timings, session_len);
    if (reply_widget_) {
        reply_widget_->set_streaming(false);
        QString line = stats_line(timings, session_len);
        if (FinishReason(reason) == FinishReason::Cancelled) line = tr("stopped") + " · " + line;
        if (FinishReason(reason) == FinishReason::Length) line = tr("reached the length limit") + " · " + line;
        if (FinishReason(reason) == FinishReason::Error) {
            line = tr("error: %1").arg(error);
            if (reply_text_.isEmpty()) reply_widget_->set_text(tr("*The model could not answer: %1*").arg(error));
        }
        reply_widget_->set_stats(line);
    }
    stats.insert("finish", reason);
    store_.update_message(reply_message_, reply_text_, true, stats);
    request_ = 0;
    composer_->set_generating(false);
    update_regenerate_buttons();
    update_status();
    emit reply_finished(reason);
}

void MainWindow::stop() {
    if (request_) {
        worker_.cancel(request_);
    } else if (preparing_) {
        preparing_ = 0;
        finish_reply(int(FinishReason::Cancelled), {}, {});
    }
}

void MainWindow::connect_message(MessageWidget* m) {
    connect(m, &MessageWidget::copy_requested, this, [](MessageWidget* w) { QApplication::clipboard()->setText(w->text()); });
    connect(m, &MessageWidget::delete_requested, this, [this](MessageWidget* w) {
        if (generating()) return;
        store_.delete_message(w->message_id());
        chat_->remove(w);
        update_regenerate_buttons();
    });
    connect(m, &MessageWidget::regenerate_requested, this, [this](MessageWidget* w) {
        if (generating()) return;
        store_.delete_from(w->message_id());
        chat_->remove_from(w);
        start_reply();
    });
    connect(m, &MessageWidget::edit_requested, this, [this](MessageWidget* w) {
        if (generating()) return;
        composer_->clear();
        composer_->set_text(w->text());
        for (const StoredMessage& stored : store_.messages(conversation_))
            if (stored.id == w->message_id())
                for (const QString& hash : stored.images)
                    if (const ImageResult r = image_from_bytes(store_.image(hash), tr("image")); r.image) composer_->add_image(*r.image);
        store_.delete_from(w->message_id());
        chat_->remove_from(w);
        update_regenerate_buttons();
        composer_->focus_text();
    });
    connect(m, &MessageWidget::image_opened, this, &MainWindow::show_image);
}

void MainWindow::update_regenerate_buttons() {
    const auto messages = chat_->messages();
    for (int i = 0; i < messages.size(); ++i)
        messages[i]->set_can_regenerate(!generating() && i == messages.size() - 1 && messages[i]->role() == "assistant");
}

void MainWindow::show_image(const QByteArray& bytes) {
    QImage image = QImage::fromData(bytes);
    if (image.isNull()) return;
    auto* dialog = new QDialog(this);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setWindowTitle(tr("Image (%1 x %2)").arg(image.width()).arg(image.height()));
    auto* area = new QScrollArea(dialog);
    auto* label = new QLabel(area);
    label->setPixmap(QPixmap::fromImage(image));
    area->setWidget(label);
    auto* layout = new QVBoxLayout(dialog);
    layout->addWidget(area);
    dialog->resize(std::min(image.width() + 40, 1400), std::min(image.height() + 40, 900));
    dialog->show();
}

void MainWindow::open_model_picker() {
    ModelPicker picker(settings_, worker_, this);
    picker.exec();
}

void MainWindow::open_settings() {
    const QString model = worker_.is_loaded() ? worker_.model().path : settings_.last_model();
    const ConversationInfo info = conversation_ ? store_.conversation(conversation_) : ConversationInfo{};
    SettingsDialog dialog(settings_, model, {info.system_prompt, info.sampling}, model_defaults(), gpu_available(), this);
    if (dialog.exec() != QDialog::Accepted) return;
    if (!model.isEmpty()) settings_.set_model_settings(model, dialog.model_settings());
    if (conversation_) {
        const ConversationSettings c = dialog.conversation_settings();
        store_.set_conversation_settings(conversation_, c.system_prompt, c.sampling);
    }
    if (dialog.theme() != settings_.theme()) {
        settings_.set_theme(dialog.theme());
        apply_theme(dialog.theme());
    }
    settings_.sync();
}

QJsonObject MainWindow::model_defaults() const {
    if (!worker_.is_loaded()) return {};
    const SamplingParams p = load_generation_config(worker_.model().path.toStdString());
    return {{"temperature", double(p.temperature)}, {"top_p", double(p.top_p)}, {"top_k", p.top_k},
            {"repetition_penalty", double(p.repetition_penalty)}};
}

void MainWindow::take_screenshot() {
    hide();
    // Give the compositor a moment to take the window off the screen before grabbing it.
    QTimer::singleShot(300, this, [this] {
        auto* session = new ScreenshotSession(this);
        connect(session, &ScreenshotSession::captured, this, [this](const QImage& image) {
            show();
            raise();
            activateWindow();
            const ImageResult r = image_from_qimage(image, tr("Screenshot"));
            if (r.image) composer_->add_image(*r.image);
            else composer_->show_problem(r.error);
            composer_->focus_text();
        });
        connect(session, &ScreenshotSession::failed, this, [this](const QString& why) {
            show();
            raise();
            if (!why.isEmpty()) QMessageBox::information(this, tr("No screenshot"), why);
            composer_->focus_text();
        });
        session->start();
    });
}

QString MainWindow::author_name() const { return worker_.is_loaded() ? worker_.model().name : tr("Model"); }

void MainWindow::update_status() {
    if (worker_.is_loaded()) {
        model_label_->setText(worker_.model().name);
        device_label_->setText(worker_.model().device);
    } else if (!worker_.loading()) {
        model_label_->setText(tr("No model loaded"));
        device_label_->setText(gpu_available() ? tr("GPU available") : tr("CPU"));
    }
#ifdef LUMEN_HAVE_CUDA
    if (worker_.is_loaded() && worker_.model().device.startsWith("cuda")) {
        const auto devices = cuda::list_devices();
        if (!devices.empty()) {
            const auto& d = devices.front();
            memory_label_->setText(tr("GPU memory %1 / %2")
                                       .arg(byte_size(d.total_memory - d.free_memory), byte_size(d.total_memory)));
            return;
        }
    }
#endif
    memory_label_->clear();
}

void MainWindow::update_placeholder() {
    QString text;
    if (worker_.is_loaded()) {
        text = tr("<h2>%1</h2><p>Ask anything. Drop or paste images, or press Ctrl+Shift+S to ask about part of "
                  "the screen.</p>")
                   .arg(worker_.model().name.toHtmlEscaped());
    } else if (worker_.loading()) {
        text = tr("<h2>Loading the model…</h2><p>You can write your first message meanwhile.</p>");
    } else if (!scan_found_models_) {
        QStringList places;
        for (const auto& f : settings_.model_folders()) places << "<code>" + f.toHtmlEscaped() + "</code>";
        if (settings_.scan_hf_cache()) places << "<code>" + QString::fromStdString(hf_hub_cache_dir().string()).toHtmlEscaped() + "</code>";
        text = tr("<h2>Welcome to Lumen</h2>"
                  "<p>Lumen runs language models on your own computer: on your NVIDIA GPU when there is one, "
                  "otherwise on the CPU. It has not found a model yet.</p>"
                  "<p>It looks in %1.</p>"
                  "<p>It runs Hugging Face model folders as they are downloaded (safetensors): InternLM2-chat, "
                  "Qwen2, Llama and, for their language side, InternVL2/2.5 and LLaVA-1.5-hf. For example:<br>"
                  "<code>huggingface-cli download internlm/internlm2-chat-1_8b</code></p>"
                  "<p><a href=\"models\">Open the model list</a> to add a folder or load a model.</p>")
                   .arg(places.join(", "));
    } else {
        text = tr("<h2>Choose a model</h2><p><a href=\"models\">Open the model list</a> (Ctrl+Shift+M) and load one "
                  "to start.</p>");
    }
    chat_->set_placeholder(text);
}

void MainWindow::closeEvent(QCloseEvent* e) {
    stop();
    if (reply_message_ && generating()) store_.update_message(reply_message_, reply_text_, false);
    settings_.set_window_state(saveGeometry());
    settings_.sync();
    QMainWindow::closeEvent(e);
}

}  // namespace lumen::ui
