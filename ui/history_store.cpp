#include "ui/history_store.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <QCryptographicHash>
#include <QDir>
#include <QJsonDocument>
#include <QSqlDatabase>
#include <QSqlError>
#include <QSqlQuery>
#include <QStandardPaths>
#include <QUuid>
#include <QVariant>

namespace lumen::ui {
namespace {

// Each entry moves the schema from version i to i + 1.
const char* const kMigrations[] = {
    R"(CREATE TABLE conversations (
         id INTEGER PRIMARY KEY,
         title TEXT NOT NULL,
         created INTEGER NOT NULL,
         updated INTEGER NOT NULL,
         system_prompt TEXT NOT NULL DEFAULT '',
         sampling TEXT NOT NULL DEFAULT '{}');
       CREATE TABLE messages (
         id INTEGER PRIMARY KEY,
         conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
         role TEXT NOT NULL,
         text TEXT NOT NULL,
         complete INTEGER NOT NULL DEFAULT 1,
         stats TEXT NOT NULL DEFAULT '{}',
         created INTEGER NOT NULL);
       CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
       CREATE TABLE images (
         hash TEXT PRIMARY KEY,
         data BLOB NOT NULL);
       CREATE TABLE message_images (
         message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
         ord INTEGER NOT NULL,
         hash TEXT NOT NULL REFERENCES images(hash),
         PRIMARY KEY (message_id, ord));)",
    // Which model wrote each reply.
    R"(ALTER TABLE messages ADD COLUMN model TEXT NOT NULL DEFAULT '')",
};

qint64 now_ms() { return QDateTime::currentMSecsSinceEpoch(); }

QJsonObject json_object(const QString& text) { return QJsonDocument::fromJson(text.toUtf8()).object(); }
QString json_text(const QJsonObject& o) { return QString::fromUtf8(QJsonDocument(o).toJson(QJsonDocument::Compact)); }

// A null QString binds as SQL NULL; the text columns hold '' instead.
QString text_value(const QString& s) { return s.isNull() ? QString("") : s; }

}  // namespace

// Copies the write-ahead log into the database on a thread of its own, once writing pauses. A
// checkpoint is where SQLite waits for the disk (fsync): done by the committing connection, as
// SQLite does by default, it stalled the window for up to a third of a second on a busy disk while
// a reply streamed; run beside the window's writes it slowed each of them as much. So it waits for
// a pause (a reply streams, saving once a second, then ends), unless the log has grown large.
class HistoryStore::Checkpointer {
public:
    static constexpr auto kQuiet = std::chrono::seconds(2);
    static constexpr qint64 kMaxLogBytes = 32 << 20;

    explicit Checkpointer(const QString& path) : thread_([this, path] { run(path); }) {}
    ~Checkpointer() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }
    Checkpointer(const Checkpointer&) = delete;
    Checkpointer& operator=(const Checkpointer&) = delete;

    void wrote(qint64 bytes) {
        {
            std::lock_guard lock(mutex_);
            logged_ += bytes;
            last_write_ = std::chrono::steady_clock::now();
        }
        wake_.notify_one();
    }
    int done() const {
        std::lock_guard lock(mutex_);
        return done_;
    }

private:
    void run(const QString& path) {
        const QString name = "history-checkpoint-" + QUuid::createUuid().toString(QUuid::WithoutBraces);
        {
            QSqlDatabase db = QSqlDatabase::addDatabase("QSQLITE", name);
            db.setDatabaseName(path);
            const bool open = db.open();
            std::unique_lock lock(mutex_);
            for (;;) {
                wake_.wait(lock, [this] { return stop_ || logged_ > 0; });
                while (!stop_ && logged_ < kMaxLogBytes && std::chrono::steady_clock::now() < last_write_ + kQuiet)
                    wake_.wait_until(lock, last_write_ + kQuiet);
                if (stop_) break;
                logged_ = 0;
                lock.unlock();
                // PASSIVE: never blocks the window's reads or writes; what a reader still holds is
                // copied by the next one.
                if (open) QSqlQuery(db).exec("PRAGMA wal_checkpoint(PASSIVE)");
                lock.lock();
                ++done_;
            }
            lock.unlock();
            db.close();
        }
        QSqlDatabase::removeDatabase(name);
    }

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
    qint64 logged_ = 0;  // bytes written since the last checkpoint, about
    std::chrono::steady_clock::time_point last_write_;
    int done_ = 0;
    std::thread thread_;  // last: starts once the members above exist
};

QString HistoryStore::default_path() {
    const QString dir = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation);
    QDir().mkpath(dir);
    return QDir(dir).filePath("history.sqlite3");
}

QString HistoryStore::hash_of(const QByteArray& bytes) {
    return QString::fromLatin1(QCryptographicHash::hash(bytes, QCryptographicHash::Sha256).toHex());
}

HistoryStore::HistoryStore(const QString& path) : connection_("history-" + QUuid::createUuid().toString(QUuid::WithoutBraces)) {
    QSqlDatabase db = QSqlDatabase::addDatabase("QSQLITE", connection_);
    db.setDatabaseName(path);
    if (!db.open()) {
        error_ = "cannot open the conversation history at " + path + ": " + db.lastError().text();
        return;
    }
    // WAL: a reader never blocks the writer, and a killed process loses at most the last commit.
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
    exec("PRAGMA wal_autocheckpoint=0");      // the checkpointer's thread does it
    exec("PRAGMA journal_size_limit=4194304");  // the log file shrinks back after a long reply
    migrate();
    if (ok()) checkpointer_ = std::make_unique<Checkpointer>(path);
}

HistoryStore::~HistoryStore() {
    checkpointer_.reset();
    {
        QSqlDatabase db = QSqlDatabase::database(connection_, false);
        if (db.isOpen()) db.close();
    }
    QSqlDatabase::removeDatabase(connection_);
}

bool HistoryStore::exec(const QString& sql) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    if (q.exec(sql)) return true;
    const_cast<HistoryStore*>(this)->error_ = q.lastError().text();
    return false;
}

void HistoryStore::written(qint64 bytes) {
    if (checkpointer_) checkpointer_->wrote(bytes);
}

int HistoryStore::checkpoints() const { return checkpointer_ ? checkpointer_->done() : 0; }

int HistoryStore::schema_version() const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    return q.exec("PRAGMA user_version") && q.next() ? q.value(0).toInt() : -1;
}

void HistoryStore::migrate() {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    const int version = schema_version();
    if (version > kSchemaVersion) {
        error_ = QString("the conversation history was written by a newer Lumen (schema %1, this one knows %2)")
                     .arg(version)
                     .arg(kSchemaVersion);
        return;
    }
    for (int v = version; v < kSchemaVersion; ++v) {
        db.transaction();
        bool ok = true;
        for (const QString& statement : QString(kMigrations[v]).split(';', Qt::SkipEmptyParts))
            if (!statement.trimmed().isEmpty()) ok = ok && exec(statement);
        ok = ok && exec(QString("PRAGMA user_version=%1").arg(v + 1));
        if (!ok) {
            db.rollback();
            error_ = "could not upgrade the conversation history: " + error_;
            return;
        }
        db.commit();
    }
}

QList<ConversationInfo> HistoryStore::conversations(const QString& search) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    if (search.isEmpty()) {
        q.prepare("SELECT id, title, updated, system_prompt, sampling FROM conversations ORDER BY updated DESC, id DESC");
    } else {
        q.prepare("SELECT id, title, updated, system_prompt, sampling FROM conversations c WHERE title LIKE :s ESCAPE '\\' "
                  "OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.text LIKE :s ESCAPE '\\') "
                  "ORDER BY updated DESC, id DESC");
        QString escaped = search;
        escaped.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_");
        q.bindValue(":s", "%" + escaped + "%");
    }
    QList<ConversationInfo> out;
    if (!q.exec()) return out;
    while (q.next())
        out.push_back({q.value(0).toLongLong(), q.value(1).toString(), QDateTime::fromMSecsSinceEpoch(q.value(2).toLongLong()),
                       q.value(3).toString(), ChatSampling::from_json(json_object(q.value(4).toString()))});
    return out;
}

ConversationInfo HistoryStore::conversation(qint64 id) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("SELECT id, title, updated, system_prompt, sampling FROM conversations WHERE id = ?");
    q.addBindValue(id);
    if (!q.exec() || !q.next()) return {};
    return {q.value(0).toLongLong(), q.value(1).toString(), QDateTime::fromMSecsSinceEpoch(q.value(2).toLongLong()),
            q.value(3).toString(), ChatSampling::from_json(json_object(q.value(4).toString()))};
}

qint64 HistoryStore::create_conversation(const QString& title, const QString& system_prompt, const ChatSampling& sampling) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("INSERT INTO conversations (title, created, updated, system_prompt, sampling) VALUES (?, ?, ?, ?, ?)");
    const qint64 t = now_ms();
    q.addBindValue(text_value(title));
    q.addBindValue(t);
    q.addBindValue(t);
    q.addBindValue(text_value(system_prompt));
    q.addBindValue(json_text(sampling.to_json()));
    if (!q.exec()) {
        error_ = q.lastError().text();
        return 0;
    }
    written();
    return q.lastInsertId().toLongLong();
}

void HistoryStore::rename_conversation(qint64 id, const QString& title) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE conversations SET title = ? WHERE id = ?");
    q.addBindValue(text_value(title));
    q.addBindValue(id);
    q.exec();
    written();
}

void HistoryStore::set_conversation_settings(qint64 id, const QString& system_prompt, const ChatSampling& sampling) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE conversations SET system_prompt = ?, sampling = ? WHERE id = ?");
    q.addBindValue(text_value(system_prompt));
    q.addBindValue(json_text(sampling.to_json()));
    q.addBindValue(id);
    q.exec();
    written();
}

void HistoryStore::delete_conversation(qint64 id) {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    db.transaction();
    QSqlQuery q(db);
    q.prepare("DELETE FROM conversations WHERE id = ?");
    q.addBindValue(id);
    q.exec();
    drop_unused_images();
    db.commit();
    written();
}

QList<StoredMessage> HistoryStore::messages(qint64 conversation) const { return select_messages("conversation_id", conversation); }

StoredMessage HistoryStore::message(qint64 id) const {
    const QList<StoredMessage> found = select_messages("id", id);
    return found.isEmpty() ? StoredMessage{} : found.first();
}

QList<StoredMessage> HistoryStore::select_messages(const char* column, qint64 value) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare(QString("SELECT id, role, text, complete, stats, model FROM messages WHERE %1 = ? ORDER BY id").arg(column));
    q.addBindValue(value);
    QList<StoredMessage> out;
    if (!q.exec()) return out;
    while (q.next())
        out.push_back({q.value(0).toLongLong(), q.value(1).toString(), q.value(2).toString(), q.value(3).toBool(),
                       json_object(q.value(4).toString()), {}, q.value(5).toString()});
    QSqlQuery images(QSqlDatabase::database(connection_));
    images.prepare("SELECT hash FROM message_images WHERE message_id = ? ORDER BY ord");
    for (auto& m : out) {
        images.bindValue(0, m.id);
        if (images.exec())
            while (images.next()) m.images.push_back(images.value(0).toString());
    }
    return out;
}

qint64 HistoryStore::add_message(qint64 conversation, const QString& role, const QString& text, const QList<QByteArray>& images,
                                 bool complete, const QString& model) {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    db.transaction();
    QSqlQuery q(db);
    q.prepare("INSERT INTO messages (conversation_id, role, text, complete, created, model) VALUES (?, ?, ?, ?, ?, ?)");
    q.addBindValue(conversation);
    q.addBindValue(text_value(role));
    q.addBindValue(text_value(text));
    q.addBindValue(complete ? 1 : 0);
    q.addBindValue(now_ms());
    q.addBindValue(text_value(model));
    if (!q.exec()) {
        error_ = q.lastError().text();
        db.rollback();
        return 0;
    }
    const qint64 id = q.lastInsertId().toLongLong();
    for (int i = 0; i < images.size(); ++i) {
        const QString hash = hash_of(images[i]);
        QSqlQuery put(db);
        put.prepare("INSERT OR IGNORE INTO images (hash, data) VALUES (?, ?)");
        put.addBindValue(hash);
        put.addBindValue(images[i]);
        put.exec();
        QSqlQuery link(db);
        link.prepare("INSERT INTO message_images (message_id, ord, hash) VALUES (?, ?, ?)");
        link.addBindValue(id);
        link.addBindValue(i);
        link.addBindValue(hash);
        link.exec();
    }
    touch(conversation);
    db.commit();
    qint64 bytes = text.size();
    for (const QByteArray& image : images) bytes += image.size();
    written(bytes);
    return id;
}

void HistoryStore::update_message(qint64 message, const QString& text, bool complete, const QJsonObject& stats) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE messages SET text = ?, complete = ?, stats = ? WHERE id = ?");
    q.addBindValue(text_value(text));
    q.addBindValue(complete ? 1 : 0);
    q.addBindValue(json_text(stats));
    q.addBindValue(message);
    q.exec();
    written(text.size());
}

void HistoryStore::set_message_model(qint64 message, const QString& model) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE messages SET model = ? WHERE id = ?");
    q.addBindValue(text_value(model));
    q.addBindValue(message);
    q.exec();
    written();
}

void HistoryStore::delete_from(qint64 message) {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    db.transaction();
    QSqlQuery q(db);
    q.prepare("DELETE FROM messages WHERE conversation_id = (SELECT conversation_id FROM messages WHERE id = :m) AND id >= :m");
    q.bindValue(":m", message);
    q.exec();
    drop_unused_images();
    db.commit();
    written();
}

void HistoryStore::delete_message(qint64 message) {
    QSqlDatabase db = QSqlDatabase::database(connection_);
    db.transaction();
    QSqlQuery q(db);
    q.prepare("DELETE FROM messages WHERE id = ?");
    q.addBindValue(message);
    q.exec();
    drop_unused_images();
    db.commit();
    written();
}

QByteArray HistoryStore::image(const QString& hash) const {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("SELECT data FROM images WHERE hash = ?");
    q.addBindValue(hash);
    return q.exec() && q.next() ? q.value(0).toByteArray() : QByteArray();
}

void HistoryStore::touch(qint64 conversation) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE conversations SET updated = ? WHERE id = ?");
    q.addBindValue(now_ms());
    q.addBindValue(conversation);
    q.exec();
}

void HistoryStore::drop_unused_images() {
    exec("DELETE FROM images WHERE hash NOT IN (SELECT hash FROM message_images)");
}

}  // namespace lumen::ui
