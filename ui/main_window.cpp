#include "ui/main_window.h"

// Over 700 lines: one window, its wiring (menus, shortcuts, the engine's and a remote server's
// signals) and what it shows of a turn; building the turn and keeping it in the history are
// ChatController's.

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
#include <QShortcut>
#include <QSplitter>
#include <QStatusBar>
#include <QTimer>
#include <QVBoxLayout>

#include "engine/util/error.h"
#include "engine/model/model_scanner.h"
#include "engine/backend/device.h"
#include "engine/model/chat_template_choice.h"
#include "engine/model/generation_config.h"
#include "ui/app_settings.h"
#include "ui/chat_view.h"
#include "ui/composer.h"
#include "ui/conversation_list.h"
#include "ui/get_models_dialog.h"
#include "ui/history_store.h"
#include "ui/model_list_model.h"
#include "ui/model_picker.h"
#include "ui/notice_bar.h"
#include "ui/remote_entries.h"
#include "ui/remote_server.h"
#include "ui/screenshot.h"
#include "ui/settings_dialog.h"
#include "ui/theme.h"
#include "vision/encoder.h"

namespace lumen::ui {

EngineOptions engine_options_for(const AppSettings& settings, const QString& model_path) {
    const ModelSettings m = settings.model_settings(model_path);
    EngineOptions o;
    o.device = m.device.toStdString();
    o.session_len = m.session_len;
    o.cache_max_entry_count = m.cache_share;
    o.dtype = m.compute.toStdString();
    // A setting from elsewhere that names no format: the 16-bit cache.
    o.quant_policy = m.kv_bits == 8 || m.kv_bits == 4 ? m.kv_bits : 0;
    try {
        o.weights = WeightChoice::parse(m.weights.toStdString());
    } catch (const std::exception&) {
        // A setting from elsewhere that names no choice: the weights as stored.
    }
    // Likewise the image encoder.
    o.image_encoder = vision::image_encoder_factory(m.vision == "fp8" ? vision::TowerWeights::Fp8 : vision::TowerWeights::AsStored);
    return o;
}

namespace {

// GPUs do not come and go while the app runs: asked once (the CUDA runtime's first call takes a while).
bool gpu_available() {
    static const bool any = !list_gpus().empty();
    return any;
}

uint64_t gpu_free_memory() {
    if (!gpu_available()) return 0;
    const auto gpus = list_gpus();
    return gpus.empty() ? 0 : gpus.front().free_memory;
}

QString title_from(const QString& text) {
    QString t = text.simplified();
    if (t.isEmpty()) t = QObject::tr("Image question");
    return t.size() > 48 ? t.left(47) + "…" : t;
}

}  // namespace

MainWindow::MainWindow(AppSettings& settings, HistoryStore& store, QWidget* parent)
    : QMainWindow(parent), settings_(settings), store_(store) {
    setWindowTitle(tr("Lumen"));
    list_ = new ConversationList(store_, this);
    chat_ = new ChatView(this);
    composer_ = new Composer(this);
    notice_ = new NoticeBar(this);
    auto* right = new QWidget(this);
    auto* right_layout = new QVBoxLayout(right);
    right_layout->setContentsMargins(0, 0, 0, 0);
    right_layout->setSpacing(0);
    right_layout->addWidget(chat_, 1);
    right_layout->addWidget(notice_);
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
    server_label_ = new QLabel(this);
    server_label_->setAccessibleName(tr("Server"));
    server_label_->hide();
    statusBar()->addPermanentWidget(server_label_);
    statusBar()->addPermanentWidget(device_label_);
    statusBar()->addPermanentWidget(memory_label_);

    auto* file = menuBar()->addMenu(tr("&Chat"));
    file->addAction(tr("&New chat"), QKeySequence::New, this, &MainWindow::new_chat);
    file->addAction(tr("&Screenshot question…"), QKeySequence("Ctrl+Shift+S"), this, &MainWindow::take_screenshot);
    file->addSeparator();
    file->addAction(tr("&Quit"), QKeySequence::Quit, qApp, &QApplication::quit);
    auto* model = menuBar()->addMenu(tr("&Model"));
    model->addAction(tr("&Choose model…"), QKeySequence("Ctrl+Shift+M"), this, &MainWindow::open_model_picker);
    model->addAction(tr("&Unload"), this, &MainWindow::unload_model);
    auto* view = menuBar()->addMenu(tr("&View"));
    QAction* zoom_in = view->addAction(tr("Zoom &in"), this, [this] { set_zoom(settings_.zoom() + 10); });
    zoom_in->setShortcuts({QKeySequence::ZoomIn, QKeySequence("Ctrl+=")});
    view->addAction(tr("Zoom &out"), QKeySequence::ZoomOut, this, [this] { set_zoom(settings_.zoom() - 10); });
    view->addAction(tr("&Actual size"), QKeySequence("Ctrl+0"), this, [this] { set_zoom(100); });
    auto* prefs = menuBar()->addMenu(tr("&Settings"));
    QAction* settings_action = prefs->addAction(tr("&Settings…"), this, &MainWindow::open_settings);
    settings_action->setShortcuts({QKeySequence("Ctrl+,"), QKeySequence::Preferences});

    auto* stop_key = new QShortcut(QKeySequence(Qt::Key_Escape), this);
    connect(stop_key, &QShortcut::activated, this, [this] {
        if (generating()) stop();
        else if (editing_) end_editing();
    });
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
        if (link == "get") get_models();
    });
    connect(chat_, &ChatView::regenerate_requested, this, &MainWindow::regenerate);
    connect(chat_, &ChatView::continue_requested, this, [this] { continue_reply(); });
    connect(chat_, &ChatView::version_requested, this, &MainWindow::show_version);
    connect(chat_, &ChatView::edit_requested, this, &MainWindow::edit);
    connect(chat_, &ChatView::delete_requested, this, &MainWindow::remove_message);
    connect(chat_, &ChatView::image_opened, this, [this](const QByteArray& image) { show_image_window(image, this); });
    // A local request's events; one queued before a switch to a remote model is not for its requests.
    connect(&worker_, &EngineWorker::delta, this, [this](quint64 request, const QString& text, int tokens) {
        if (!remote_) on_delta(request, text, tokens);
    });
    connect(&worker_, &EngineWorker::finished, this,
            [this](quint64 request, int reason, const QString& error, const lumen::Timings& timings) {
                if (!remote_) on_finished(request, reason, error, timings);
            });
    connect(&worker_, &EngineWorker::prepared, this, &MainWindow::on_prepared);
    connect(&worker_, &EngineWorker::preparation_failed, this, [this](quint64 ticket, const QString& error) {
        if (ticket != preparing_) return;
        preparing_ = 0;
        finish_reply(int(FinishReason::Error), error, {});
    });
    connect(&worker_, &EngineWorker::loaded, this, &MainWindow::on_loaded);
    connect(&worker_, &EngineWorker::load_started, this, [this](const QString& path) {
        drop_remote();
        model_label_->setText(tr("Loading %1…").arg(QDir(path).dirName()));
        update_placeholder();
    });
    connect(&worker_, &EngineWorker::load_failed, this, [this](const QString& path, const QString& error) {
        model_label_->setText(tr("%1 did not load").arg(QDir(path).dirName()));
        update_placeholder();
        if (isVisible()) QMessageBox::warning(this, tr("The model did not load"), error);
    });
    // The engine writing a reply is going away (another model loads, or this one is unloaded).
    connect(&worker_, &EngineWorker::unloaded, this, [this] {
        interrupt_reply();
        controller_.clear_model();
        update_status();
        update_placeholder();
    });

    set_zoom(settings_.zoom());
    resize(1280, 820);
    if (!settings_.window_state().isEmpty()) restoreGeometry(settings_.window_state());
    list_->reload();
    update_status();
    // Whether any model is installed decides what the empty window says.
    std::vector<std::filesystem::path> folders;
    for (const auto& f : settings_.model_folders()) folders.emplace_back(f.toStdString());
    scan_found_models_ = !scan_models(folders, settings_.scan_hf_cache()).empty();
    update_placeholder();
    // The last model loads again, in the background (or the remote one is used again).
    const QString last = settings_.last_model();
    if (!last.isEmpty() && QDir(last).exists()) load_model(last);
    else if (!settings_.last_remote_model().isEmpty()) use_remote(settings_.last_remote_server(), settings_.last_remote_model());
}

MainWindow::~MainWindow() {
    interrupt_reply();
    commit_pending_delete();
}

void MainWindow::set_zoom(int percent) {
    settings_.set_zoom(percent);
    QFont f = QApplication::font();
    f.setPointSizeF(f.pointSizeF() * settings_.zoom() / 100.0);
    chat_->setFont(f);
    composer_->edit()->setFont(f);
}

void MainWindow::send_when_ready(const QString& text) {
    if (has_model()) {
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
    const Engine& engine = *worker_.engine();
    std::optional<ChatTemplate> chat_template;
    try {
        chat_template = chat_template_for(engine.model_config(), engine.tokenizer());
    } catch (const std::exception&) {
        chat_template = ChatTemplate::by_name("plain");
    }
    controller_.set_model(*chat_template, engine.tokenizer(), model.session_len);
    statusBar()->showMessage(tr("%1 is ready on %2, weights %3, KV cache %4").arg(model.name, model.device, model.weights, model.kv_cache),
                             5000);
    apply_server();
    // Images attached while the model was loading are prepared for it now.
    for (const ImageAttachment& image : composer_->images()) worker_.prefetch(image.bytes);
    model_ready();
}

void MainWindow::model_ready() {
    composer_->show_problem({});  // "choose a model first" and the like no longer hold
    update_status();
    update_placeholder();
    update_regenerate_buttons();
    composer_->focus_text();
    if (!pending_prompt_.isEmpty()) {
        composer_->set_text(pending_prompt_);
        pending_prompt_.clear();
        send();
    }
}

void MainWindow::use_remote(const QString& server, const QString& model) {
    if (worker_.is_loaded() || worker_.loading()) worker_.unload();  // the window chats with one model
    drop_remote();
    settings_.set_last_remote(server, model);
    model_label_->setText(tr("Connecting to %1…").arg(model));
    auto* entries = new RemoteEntries(settings_, this);
    entries->read_key(server, [this, entries, server, model](const QString& key, const QString& problem) {
        entries->deleteLater();
        if (settings_.last_remote_server() != server || settings_.last_remote_model() != model) return;  // chosen otherwise meanwhile
        if (!problem.isEmpty()) {
            model_label_->setText(tr("%1 cannot be used").arg(model));
            if (isVisible()) QMessageBox::warning(this, tr("The server's API key is missing"), problem);
            return;
        }
        remote_ = new RemoteServer(server, key, this);
        remote_model_ = model;
        connect(remote_, &RemoteServer::delta, this, &MainWindow::on_delta);
        connect(remote_, &RemoteServer::finished, this, &MainWindow::on_finished);
        controller_.set_remote_model();
        statusBar()->showMessage(tr("Chatting with %1 on the server at %2").arg(model, remote_->base_url().toString()), 5000);
        model_ready();
    });
}

void MainWindow::drop_remote() {
    if (!remote_) return;
    interrupt_reply();
    remote_->deleteLater();
    remote_ = nullptr;
    remote_model_.clear();
    controller_.clear_model();
    update_status();
    update_placeholder();
    update_regenerate_buttons();
}

void MainWindow::unload_model() {
    if (remote_) {
        drop_remote();
        settings_.set_last_remote({}, {});
    } else {
        worker_.unload();
    }
}

void MainWindow::new_chat() {
    if (generating()) stop();
    commit_pending_delete();
    end_editing();
    conversation_ = 0;
    controller_.forget_context_start();
    draft_.reset();
    chat_->clear_messages();
    list_->select(0);
    composer_->clear();
    composer_->focus_text();
    update_placeholder();
}

void MainWindow::open_conversation(qint64 id) {
    if (id == conversation_) return;
    if (generating()) stop();
    commit_pending_delete();
    end_editing();
    if (id == 0) {
        new_chat();
        return;
    }
    conversation_ = id;
    controller_.forget_context_start();
    chat_->clear_messages();
    for (const TranscriptMessage& m : controller_.transcript(id)) chat_->add_message(m);
    update_regenerate_buttons();
    update_placeholder();
}

void MainWindow::send() {
    if (generating()) return;
    const QString text = composer_->text().trimmed();
    const QList<ImageAttachment> images = composer_->images();
    if (text.isEmpty() && images.isEmpty()) return;
    if (!has_model()) {
        composer_->show_problem(worker_.loading() ? tr("The model is still loading; send again when it is ready.")
                                                  : tr("Choose a model first (Model ▸ Choose model…, Ctrl+Shift+M)."));
        if (!worker_.loading()) open_model_picker();
        return;
    }
    // Nothing is stored or cleared when the model cannot take the message as it is.
    bool earlier_images = false;
    for (const TranscriptMessage& m : chat_->messages())
        earlier_images = earlier_images || (!m.images.isEmpty() && (!editing_ || m.id < editing_));
    // A remote server says for itself whether its model reads images.
    if ((!images.isEmpty() || earlier_images) && !remote_ && !worker_.model().sees_images) {
        const QString name = worker_.model().name;
        if (worker_.model().vision)
            composer_->show_problem(tr("%1 is a vision model, but its image encoder could not be loaded.").arg(name));
        else if (!images.isEmpty())
            composer_->show_problem(tr("%1 reads text only: choose a vision model to ask about images.").arg(name),
                                    tr("Choose a model…"));
        else
            composer_->show_problem(tr("This conversation has images, and %1 reads text only.").arg(name), tr("Choose a model…"));
        return;
    }
    commit_pending_delete();
    if (editing_) {
        // The edited message replaces the original and everything after it.
        const int at = chat_->index_of(editing_);
        store_.delete_from(editing_);
        chat_->remove_from(at);
        end_editing();
    }
    if (conversation_ == 0) {
        // A new chat starts from the settings chosen for it, else from the model's preset.
        const ConversationSettings c = draft_ ? *draft_ : remote_ ? ConversationSettings{} : settings_.chat_preset(worker_.model().path);
        conversation_ = store_.create_conversation(title_from(text), c.system_prompt, c.sampling);
        draft_.reset();
        list_->reload();
        list_->select(conversation_);
    }
    TranscriptMessage user;
    user.role = "user";
    user.author = tr("You");
    user.text = text;
    for (const auto& img : images) user.images << img.bytes;
    user.id = store_.add_message(conversation_, "user", text, user.images);
    chat_->add_message(user);
    composer_->clear();
    start_reply();
}

void MainWindow::start_reply(bool resample, bool continuing, const QJsonArray& versions) {
    if (!has_model() || !controller_.has_model()) return;
    ChatController::Turn turn =
        controller_.begin_reply(conversation_, model_defaults(), resample, continuing, versions, author_name());
    if (!turn.problem.isEmpty()) {
        composer_->show_problem(turn.problem);
        update_regenerate_buttons();
        return;
    }
    show_context_start();
    if (continuing) {
        chat_->set_can_continue(reply_index(), false);
    } else {
        TranscriptMessage reply;
        reply.role = "assistant";
        reply.author = author_name();
        reply.versions = reply.version = int(versions.size()) + 1;
        reply.id = controller_.reply_message();
        chat_->add_message(reply);
    }
    chat_->scroll_to_end();
    reply_dirty_ = false;
    if (turn.remote) {
        request_ = remote_->chat(remote_model_, turn.remote->messages, turn.remote->sampling);
    } else if (turn.images_to_prepare) {
        // Decoding and preprocessing happen off the GUI thread; the request goes when they are done.
        const RenderedTurns& p = *turn.images_to_prepare;
        preparing_ = worker_.prepare(p.text, p.images, p.encode);
    } else {
        request_ = worker_.submit(std::move(turn.request));
    }
    composer_->set_generating(true);
    flush_timer_->start();
    update_regenerate_buttons();
}

int MainWindow::reply_index() const { return chat_->index_of(controller_.reply_message()); }

void MainWindow::show_context_start() {
    const qint64 first = controller_.context_start();
    const QList<TranscriptMessage>& all = chat_->messages();
    const QString note = tr("Earlier messages no longer fit; the model sees from here on");
    for (int i = 0; i < all.size(); ++i) chat_->set_note(i, first && all[i].id == first ? note : QString());
}

void MainWindow::on_delta(quint64 request, const QString& text, int tokens) {
    if (request != request_) return;
    controller_.add_to_reply(text, tokens);
    if (!text.isEmpty()) reply_dirty_ = true;
}

void MainWindow::flush_reply() {
    if (!reply_dirty_) return;
    reply_dirty_ = false;
    chat_->set_text(reply_index(), controller_.reply_text());
    controller_.save_reply_if_due();
}

void MainWindow::on_finished(quint64 request, int reason, const QString& error, const Timings& timings) {
    if (request != request_) return;
    finish_reply(reason, error, timings);
}

void MainWindow::on_prepared(quint64 ticket, const PreparedInput& input) {
    if (ticket != preparing_) return;  // stopped meanwhile
    preparing_ = 0;
    // With its images counted the prompt may not leave room for the reply: one more turn goes.
    if (const std::optional<RenderedTurns> shorter = controller_.drop_turn_if_too_long(input.ids.size())) {
        show_context_start();
        preparing_ = worker_.prepare(shorter->text, shorter->images, shorter->encode);
        return;
    }
    request_ = worker_.submit(controller_.take_request(input));
}

void MainWindow::finish_reply(int reason, const QString& error, const Timings& timings, bool interrupted) {
    flush_timer_->stop();
    reply_dirty_ = true;
    flush_reply();
    const int index = reply_index();
    const int64_t context = worker_.is_loaded() ? worker_.model().session_len : 0;
    const QJsonObject stats =
        controller_.finish_reply(reason, error, timings, interrupted, context, chat_->messages().value(index).author);
    if (stats.contains("version")) {
        const int versions = int(stats.value("versions").toArray().size());
        chat_->set_version(index, versions, versions);
    }
    if (FinishReason(reason) == FinishReason::Error && controller_.reply_text().isEmpty())
        chat_->set_text(index, tr("*The model could not answer: %1*").arg(error));
    chat_->set_stats(index, reply_footer(stats, true));
    // Continue is offered where the reply limit cut the reply, not where the context is full.
    chat_->set_can_continue(index, FinishReason(reason) == FinishReason::Length &&
                                       timings.prompt_tokens + timings.generated_tokens + 1 < context);
    request_ = 0;
    preparing_ = 0;
    composer_->set_generating(false);
    update_regenerate_buttons();
    update_status();
    emit reply_finished(reason);
}

void MainWindow::interrupt_reply() {
    if (!generating()) return;
    // Ended here, not by the (possibly immediate) event the cancel brings.
    const RequestId request = std::exchange(request_, 0);
    if (request) cancel_request(request);
    finish_reply(int(FinishReason::Cancelled), {}, controller_.timings_so_far(), true);
}

void MainWindow::cancel_request(RequestId id) {
    if (remote_) remote_->cancel(id);
    else worker_.cancel(id);
}

void MainWindow::stop() {
    if (request_) {
        cancel_request(request_);
    } else if (preparing_) {
        preparing_ = 0;
        finish_reply(int(FinishReason::Cancelled), {}, {});
    }
}

void MainWindow::regenerate(qint64 id) {
    if (generating() || !has_model()) return;
    const int index = chat_->index_of(id);
    if (index < 0) return;
    commit_pending_delete();
    if (chat_->messages()[index].role == "assistant") {
        const QJsonArray versions = controller_.remove_for_regenerating(id);
        chat_->remove_from(index);
        start_reply(true, false, versions);
    } else {
        start_reply();  // a question left without an answer
    }
}

void MainWindow::continue_reply() {
    // OpenAI's API cannot continue a reply: a remote model's replies are not offered it.
    if (generating() || !worker_.is_loaded() || remote_ || chat_->messages().isEmpty()) return;
    if (chat_->messages().last().role != "assistant") return;
    commit_pending_delete();
    // A continued version becomes the newest of the reply's versions.
    start_reply(false, true, controller_.other_versions(chat_->messages().last().id));
}

void MainWindow::show_version(qint64 id, int step) {
    if (generating()) return;
    const int index = chat_->index_of(id);
    if (index < 0) return;
    const std::optional<ReplyVersion> v = controller_.show_version(id, step);
    if (!v) return;
    chat_->set_text(index, v->text);
    chat_->set_author(index, v->model.isEmpty() ? tr("Model") : v->model);
    chat_->set_stats(index, reply_footer(v->stats, true));
    chat_->set_version(index, v->number, v->count);
    chat_->set_can_continue(index, false);
}

void MainWindow::edit(qint64 id) {
    if (generating()) return;
    const int index = chat_->index_of(id);
    if (index < 0) return;
    // Nothing is deleted until the edited message is sent; Cancel (or Esc) leaves all as it was.
    end_editing();
    editing_ = id;
    const TranscriptMessage& m = chat_->messages()[index];
    composer_->clear();
    composer_->set_text(m.text);
    for (const QByteArray& bytes : m.images)
        if (const ImageResult r = image_from_bytes(bytes, tr("image")); r.image) composer_->add_image(*r.image);
    const int later = int(chat_->messages().size()) - index - 1;
    notice_->show_notice("edit", later > 0 ? tr("Editing a message: sending it replaces it and the %n message(s) after it.", "", later)
                                   : tr("Editing your last message: sending it replaces it."),
                         tr("Cancel editing"), [this] { end_editing(); });
    composer_->focus_text();
}

void MainWindow::end_editing() {
    if (!editing_) return;
    editing_ = 0;
    notice_->dismiss_kind("edit");
    composer_->clear();
}

void MainWindow::remove_message(qint64 id) {
    if (generating()) return;
    const int index = chat_->index_of(id);
    if (index < 0) return;
    if (editing_ == id) end_editing();
    commit_pending_delete();
    // Gone from view at once; deleted from the history when the undo offer ends.
    pending_delete_ = PendingDelete{index, chat_->messages()[index]};
    chat_->remove(index);
    update_regenerate_buttons();
    notice_->show_notice(
        "delete", tr("Message deleted."), tr("Undo"),
        [this] {
            if (!pending_delete_) return;
            chat_->insert_message(pending_delete_->index, pending_delete_->message);
            pending_delete_.reset();
            update_regenerate_buttons();
        },
        [this] { commit_pending_delete(); }, 8000);
}

void MainWindow::commit_pending_delete() {
    if (!pending_delete_) return;
    const qint64 id = pending_delete_->message.id;
    pending_delete_.reset();
    store_.delete_message(id);
    controller_.message_deleted(id);
    notice_->dismiss_kind("delete");
}

void MainWindow::update_regenerate_buttons() {
    const auto& messages = chat_->messages();
    const bool ready = !generating() && has_model();
    for (int i = 0; i < messages.size(); ++i) chat_->set_can_regenerate(i, ready && i == messages.size() - 1);
}

void MainWindow::open_model_picker() {
    ModelPicker picker(settings_, worker_, this);
    if (remote_) picker.set_remote_in_use(remote_->base_url().toString(), remote_model_);
    connect(&picker, &ModelPicker::remote_chosen, this, &MainWindow::use_remote);
    picker.exec();
}

void MainWindow::get_models() {
    GetModelsDialog dialog(settings_, this);
    connect(&dialog, &GetModelsDialog::downloaded, this, [this](const QString& folder) {
        settings_.set_scan_hf_cache(true);
        scan_found_models_ = true;
        update_placeholder();
        if (!has_model() && !worker_.loading()) load_model(folder);  // the first model: ready to chat
    });
    dialog.exec();
}

void MainWindow::open_settings() {
    const QString model = worker_.is_loaded() ? worker_.model().path : settings_.last_model();
    const ConversationInfo info = conversation_ ? store_.conversation(conversation_) : ConversationInfo{};
    const ConversationSettings current = conversation_ ? ConversationSettings{info.system_prompt, info.sampling}
                                         : draft_                ? *draft_
                                         : model.isEmpty()       ? ConversationSettings{}
                                                                 : settings_.chat_preset(model);
    SettingsDialog dialog(settings_, model, current, model_defaults(), gpu_available(), gpu_free_memory(), conversation_ == 0,
                          this);
    if (dialog.exec() != QDialog::Accepted) return;
    if (!model.isEmpty()) {
        const ModelSettings before = settings_.model_settings(model), after = dialog.model_settings();
        settings_.set_model_settings(model, after);
        // How the loaded model runs changed: load it again that way (a reply in progress stops).
        if (!(before == after) && worker_.is_loaded() && worker_.model().path == model) {
            if (generating()) stop();
            load_model(model);
        }
    }
    // A new chat keeps its settings until its first message creates it.
    const ConversationSettings c = dialog.conversation_settings();
    if (conversation_) store_.set_conversation_settings(conversation_, c.system_prompt, c.sampling);
    else draft_ = c;
    if (dialog.use_for_new_chats() && !model.isEmpty()) settings_.set_chat_preset(model, c);
    if (!(dialog.server_settings() == settings_.server_settings())) {
        settings_.set_server_settings(dialog.server_settings());
        apply_server();
    }
    if (dialog.theme() != settings_.theme()) {
        settings_.set_theme(dialog.theme());
        apply_theme(dialog.theme());
    }
    settings_.sync();
}

void MainWindow::apply_server() {
    const ServerSettings s = settings_.server_settings();
    worker_.stop_serving();
    server_label_->hide();
    if (!s.enabled || !worker_.is_loaded()) return;
    api::ServerOptions options;
    options.host = s.network ? "0.0.0.0" : "127.0.0.1";
    options.port = s.port;
    options.api_key = s.api_key.toStdString();
    try {
        const QString url = worker_.serve(options);
        server_label_->setText(tr("Serving %1").arg(url));
        server_label_->setToolTip(tr("Other programs can use %1 at %2 (OpenAI API)%3")
                                      .arg(worker_.model().name, url,
                                           s.api_key.isEmpty() ? tr("; no API key is asked") : tr(" with the API key set in Settings")));
        server_label_->show();
    } catch (const std::exception& e) {
        statusBar()->showMessage(tr("The model could not be served: %1").arg(QString::fromStdString(e.what())), 10000);
    }
}

ChatSampling MainWindow::model_defaults() const {
    if (!worker_.is_loaded()) return {};
    // The model's generation_config.json, under what was chosen for its new chats.
    const SamplingParams config = load_generation_config(worker_.model().path.toStdString());
    const ChatSampling model = ChatSampling::model_defaults(config, worker_.model().session_len);
    return settings_.chat_preset(worker_.model().path).sampling.over(model);
}

void MainWindow::take_screenshot() {
    capture_screen_region(
        this,
        [this](const QImage& image) {
            const ImageResult r = image_from_qimage(image, tr("Screenshot"));
            if (r.image) composer_->add_image(*r.image);
            else composer_->show_problem(r.error);
            composer_->focus_text();
        },
        [this](const QString& why) {
            if (!why.isEmpty()) QMessageBox::information(this, tr("No screenshot"), why);
            composer_->focus_text();
        });
}

QString MainWindow::author_name() const {
    return remote_ ? remote_model_ : worker_.is_loaded() ? worker_.model().name : tr("Model");
}

void MainWindow::update_status() {
    if (worker_.serving_url().isEmpty()) server_label_->hide();  // the model went, and its server with it
    if (remote_) {
        model_label_->setText(remote_model_);
        model_label_->setToolTip(tr("On the server at %1").arg(remote_->base_url().toString()));
        device_label_->setText(tr("Server %1").arg(remote_->address()));
    } else if (worker_.is_loaded()) {
        model_label_->setText(worker_.model().name);
        model_label_->setToolTip(tr("Weights: %1\nKV cache: %2").arg(worker_.model().weights, worker_.model().kv_cache));
        device_label_->setText(worker_.model().device);
    } else if (!worker_.loading()) {
        model_label_->setText(tr("No model loaded"));
        model_label_->setToolTip({});
        device_label_->setText(gpu_available() ? tr("GPU available") : tr("CPU"));
    }
    if (worker_.is_loaded() && worker_.model().device.startsWith("cuda")) {
        const DeviceInfo d = worker_.engine()->device();
        memory_label_->setText(tr("GPU memory %1 / %2").arg(byte_size(d.total_memory - d.free_memory), byte_size(d.total_memory)));
        return;
    }
    memory_label_->clear();
}

void MainWindow::update_placeholder() {
    QString text;
    if (remote_) {
        text = tr("<h2>%1</h2><p>On the server at %2. Ask anything; images are sent along when the model reads them.</p>")
                   .arg(remote_model_.toHtmlEscaped(), remote_->base_url().toString().toHtmlEscaped());
    } else if (worker_.is_loaded()) {
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
                  "<p>It runs Hugging Face model folders as they are downloaded (safetensors): InternVL2 and 2.5 "
                  "and LLaVA-1.5 with images, InternLM2-chat, Qwen2 and Llama.</p>"
                  "<p><a href=\"get\">Get a model from Hugging Face</a>, or <a href=\"models\">open the model "
                  "list</a> to add a folder or a server.</p>")
                   .arg(places.join(", "));
    } else {
        text = tr("<h2>Choose a model</h2><p><a href=\"models\">Open the model list</a> (Ctrl+Shift+M) and load one "
                  "to start.</p>");
    }
    chat_->set_placeholder(text);
}

void MainWindow::closeEvent(QCloseEvent* e) {
    interrupt_reply();
    commit_pending_delete();
    settings_.set_window_state(saveGeometry());
    settings_.sync();
    QMainWindow::closeEvent(e);
}

}  // namespace lumen::ui
