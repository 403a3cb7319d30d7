#pragma once
// The main window: conversations on the left, the transcript and the composer on the right, the
// model and device in the status bar. The model is a local one (the engine worker's) or one on a
// remote server the user added. It runs a turn: stores the user's message, asks the chat
// controller for the request (built from the history, trimmed to the context), submits it,
// streams the reply into the transcript (coalesced to ~33 updates a second) while the
// controller keeps it in the history, and shows how it ended and its timings. A reply cut short
// by a model switch, an unload or closing the window is saved as interrupted.
#include <QJsonArray>
#include <QMainWindow>

#include "engine/runtime/engine.h"
#include "ui/chat_controller.h"
#include "ui/chat_view.h"
#include "ui/engine_worker.h"
#include "ui/settings_dialog.h"

class QLabel;
class QTimer;

namespace lumen::ui {

class AppSettings;
class Composer;
class ConversationList;
class HistoryStore;
class ModelPicker;
class NoticeBar;
class RemoteServer;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    MainWindow(AppSettings& settings, HistoryStore& store, QWidget* parent = nullptr);
    ~MainWindow() override;

    Composer* composer() const { return composer_; }
    ChatView* chat_view() const { return chat_; }
    ConversationList* conversations() const { return list_; }
    NoticeBar* notice() const { return notice_; }
    EngineWorker& worker() { return worker_; }
    qint64 current_conversation() const { return conversation_; }
    bool generating() const { return request_ != 0 || preparing_ != 0; }
    // A model to chat with: loaded here, or on a remote server.
    bool has_model() const { return worker_.is_loaded() || remote_ != nullptr; }
    // Sends `text` as soon as a model is loaded (the --prompt option).
    void send_when_ready(const QString& text);

public slots:
    void new_chat();
    void send();
    void stop();
    void load_model(const QString& path);
    // Chats with `model` on the remote server at `server` (one added in the model list; its API
    // key comes from where it was kept). A local model is unloaded first.
    void use_remote(const QString& server, const QString& model);
    void unload_model();  // or stops using the remote model
    void open_model_picker();
    void get_models();  // from the Hugging Face Hub
    void open_settings();
    void take_screenshot();
    void open_conversation(qint64 id);
    // What the transcript's actions do, by message id.
    void regenerate(qint64 id);
    void edit(qint64 id);
    void remove_message(qint64 id);
    void continue_reply();
    void show_version(qint64 id, int step);  // a regenerated reply's older (-1) or newer (+1) version
    void set_zoom(int percent);  // the conversation's text size, kept across runs

signals:
    void reply_finished(int reason);

protected:
    void closeEvent(QCloseEvent* e) override;

private:
    // `versions`: the reply's earlier versions when it is written again (kept to flip through).
    void start_reply(bool resample = false, bool continuing = false, const QJsonArray& versions = {});
    void flush_reply();
    void on_delta(quint64 request, const QString& text, int tokens);
    void on_finished(quint64 request, int reason, const QString& error, const lumen::Timings& timings);
    void on_prepared(quint64 ticket, const PreparedInput& input);
    void finish_reply(int reason, const QString& error, const lumen::Timings& timings, bool interrupted = false);
    // Ends the reply in flight now (the engine that writes it is going away) and saves it as
    // interrupted, with the timings seen so far.
    void interrupt_reply();
    void commit_pending_delete();
    void end_editing();
    void on_loaded(const LoadedModel& model);
    void model_ready();  // what a model (local or remote) becoming usable changes
    void drop_remote();
    void cancel_request(RequestId id);
    void update_placeholder();
    void update_status();
    // Serves the loaded model as Settings > Server says (or stops serving it).
    void apply_server();
    void update_regenerate_buttons();
    ChatSampling model_defaults() const;
    QString author_name() const;
    int reply_index() const;
    void show_context_start();  // notes in the view where the model's view of the conversation begins

    AppSettings& settings_;
    HistoryStore& store_;
    EngineWorker worker_;
    ConversationList* list_;
    ChatView* chat_;
    Composer* composer_;
    NoticeBar* notice_;
    QLabel* model_label_;
    QLabel* device_label_;
    QLabel* memory_label_;
    QLabel* server_label_;  // "Serving http://...": shown while the model is served
    QTimer* flush_timer_;
    QTimer* memory_timer_;

    ChatController controller_{store_};
    RemoteServer* remote_ = nullptr;  // the server whose model writes the replies (none: the local one)
    QString remote_model_;
    qint64 conversation_ = 0;
    RequestId request_ = 0;
    quint64 preparing_ = 0;         // the images of the reply being prepared (ticket), before submission
    bool reply_dirty_ = false;      // text streamed since the transcript was last updated
    std::optional<ConversationSettings> draft_;  // the settings of a new chat not yet sent, when chosen
    qint64 editing_ = 0;            // the message being edited (sending replaces it and what follows)
    struct PendingDelete {
        int index = 0;
        TranscriptMessage message;
    };
    std::optional<PendingDelete> pending_delete_;  // shown as gone; deleted for good when the undo expires
    QString pending_prompt_;
    bool scan_found_models_ = true;
};

// The engine options the app's settings give for a model folder.
EngineOptions engine_options_for(const AppSettings& settings, const QString& model_path);

}  // namespace lumen::ui
