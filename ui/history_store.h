#pragma once
// Conversations kept in SQLite (Qt SQL) in the app data folder: WAL mode, a transaction per
// message, images stored once by content hash, a streamed reply updated as it grows, and a
// versioned schema migrated forward on open.
#include <memory>

#include <QByteArray>
#include <QDateTime>
#include <QJsonObject>
#include <QList>
#include <QString>
#include <QStringList>

#include "ui/chat_sampling.h"

namespace lumen::ui {

struct ConversationInfo {
    qint64 id = 0;
    QString title;
    QDateTime updated;
    QString system_prompt;
    ChatSampling sampling;  // stored as JSON text; unset fields take the model's defaults
};

struct StoredMessage {
    qint64 id = 0;
    QString role;  // "user" or "assistant"
    QString text;
    bool complete = true;  // false: a reply that was still streaming when last saved
    QJsonObject stats;     // how a reply ended (finish, error, interrupted) and its timings
    QStringList images;    // content hashes, in order
    QString model;         // the model that wrote a reply (empty: not known, an older history)
};

class HistoryStore {
public:
    static constexpr int kSchemaVersion = 2;

    explicit HistoryStore(const QString& path);  // opens or creates; check ok()
    ~HistoryStore();
    HistoryStore(const HistoryStore&) = delete;
    HistoryStore& operator=(const HistoryStore&) = delete;

    bool ok() const { return error_.isEmpty(); }
    const QString& error() const { return error_; }
    int schema_version() const;
    // The default location: <app data>/history.sqlite3.
    static QString default_path();

    // Newest first; `search` matches titles and message text.
    QList<ConversationInfo> conversations(const QString& search = {}) const;
    ConversationInfo conversation(qint64 id) const;
    qint64 create_conversation(const QString& title, const QString& system_prompt = {}, const ChatSampling& sampling = {});
    void rename_conversation(qint64 id, const QString& title);
    void set_conversation_settings(qint64 id, const QString& system_prompt, const ChatSampling& sampling);
    void delete_conversation(qint64 id);

    QList<StoredMessage> messages(qint64 conversation) const;
    StoredMessage message(qint64 id) const;  // id 0 when there is none
    // Appends a message (images as their encoded file bytes) in one transaction; returns its id.
    qint64 add_message(qint64 conversation, const QString& role, const QString& text, const QList<QByteArray>& images = {},
                       bool complete = true, const QString& model = {});
    void update_message(qint64 message, const QString& text, bool complete, const QJsonObject& stats = {});
    void set_message_model(qint64 message, const QString& model);
    // Deletes a message and every later one of its conversation (edit-and-resend, regenerate).
    void delete_from(qint64 message);
    void delete_message(qint64 message);
    QByteArray image(const QString& hash) const;

    static QString hash_of(const QByteArray& bytes);
    // Checkpoints the background thread has finished (tests wait for one).
    int checkpoints() const;

private:
    class Checkpointer;

    bool exec(const QString& sql) const;
    QList<StoredMessage> select_messages(const char* column, qint64 value) const;  // messages where column = value
    void migrate();
    void touch(qint64 conversation);
    void drop_unused_images();
    void written(qint64 bytes = 4096);  // about what the log gained

    QString connection_;
    QString error_;
    std::unique_ptr<Checkpointer> checkpointer_;
};

}  // namespace lumen::ui
