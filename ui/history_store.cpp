#include "ui/history_store.h"

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
    migrate();
}

HistoryStore::~HistoryStore() {
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
    return q.lastInsertId().toLongLong();
}

void HistoryStore::rename_conversation(qint64 id, const QString& title) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE conversations SET title = ? WHERE id = ?");
    q.addBindValue(text_value(title));
    q.addBindValue(id);
    q.exec();
}

void HistoryStore::set_conversation_settings(qint64 id, const QString& system_prompt, const ChatSampling& sampling) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE conversations SET system_prompt = ?, sampling = ? WHERE id = ?");
    q.addBindValue(text_value(system_prompt));
    q.addBindValue(json_text(sampling.to_json()));
    q.addBindValue(id);
    q.exec();
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
}

void HistoryStore::set_message_model(qint64 message, const QString& model) {
    QSqlQuery q(QSqlDatabase::database(connection_));
    q.prepare("UPDATE messages SET model = ? WHERE id = ?");
    q.addBindValue(text_value(model));
    q.addBindValue(message);
    q.exec();
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
