#pragma once
// The main window: conversations on the left, the transcript and the composer on the right, the
// model and device in the status bar. It owns the flow of a turn: store the user's message,
// render the chat template, submit, stream the reply into its widget (coalesced to ~33 updates
// a second) and into the history (at least once a second), then record the timings.
#include <QElapsedTimer>
#include <QMainWindow>
#include <QPointer>

#include "engine/chat_template.h"
#include "engine/engine.h"
#include "ui/engine_worker.h"

class QLabel;
class QTimer;

namespace lumen::ui {

class AppSettings;
class ChatView;
class Composer;
class ConversationList;
class HistoryStore;
class MessageWidget;
class ModelPicker;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    MainWindow(AppSettings& settings, HistoryStore& store, QWidget* parent = nullptr);
    ~MainWindow() override;

    Composer* composer() const { return composer_; }
    ChatView* chat_view() const { return chat_; }
    ConversationList* conversations() const { return list_; }
    EngineWorker& worker() { return worker_; }
    qint64 current_conversation() const { return conversation_; }
    bool generating() const { return request_ != 0 || preparing_ != 0; }
    // Sends `text` as soon as a model is loaded (the --prompt option).
    void send_when_ready(const QString& text);

public slots:
    void new_chat();
    void send();
    void stop();
    void load_model(const QString& path);
    void open_model_picker();
    void open_settings();
    void take_screenshot();
    void open_conversation(qint64 id);

signals:
    void reply_finished(int reason);

protected:
    void closeEvent(QCloseEvent* e) override;

private:
    void start_reply();
    void flush_reply();
    void on_delta(quint64 request, const QString& text, int tokens);
    void on_finished(quint64 request, int reason, const QString& error, const lumen::Timings& timings);
    void on_prepared(quint64 ticket, const PreparedInput& input);
    void finish_reply(int reason, const QString& error, const lumen::Timings& timings);
    void on_loaded(const LoadedModel& model);
    void update_placeholder();
    void update_status();
    void update_regenerate_buttons();
    void connect_message(MessageWidget* m);
    void show_image(const QByteArray& bytes);
    QJsonObject model_defaults() const;
    QString author_name() const;

    AppSettings& settings_;
    HistoryStore& store_;
    EngineWorker worker_;
    ConversationList* list_;
    ChatView* chat_;
    Composer* composer_;
    QLabel* model_label_;
    QLabel* device_label_;
    QLabel* memory_label_;
    QTimer* flush_timer_;
    QTimer* memory_timer_;

    std::optional<ChatTemplate> template_;
    qint64 conversation_ = 0;
    RequestId request_ = 0;
    quint64 preparing_ = 0;         // the images of the reply being prepared (ticket), before submission
    GenerationRequest pending_;     // the request waiting for them
    QPointer<MessageWidget> reply_widget_;
    qint64 reply_message_ = 0;
    QString reply_text_;
    bool reply_dirty_ = false;
    QElapsedTimer since_save_;
    QString pending_prompt_;
    bool scan_found_models_ = true;
};

// The engine options the app's settings give for a model folder.
EngineOptions engine_options_for(const AppSettings& settings, const QString& model_path);

}  // namespace lumen::ui
