// The conversation history: what is stored comes back, images are kept once, a streamed reply is
// updated in place, the schema is versioned, the file survives the process being killed, and the
// disk waits (checkpoints) happen off the window's thread.
#include <QProcess>
#include <QSqlDatabase>
#include <QSqlError>
#include <QSqlQuery>
#include <QtTest>

#include "tests/support/test_support.h"
#include "ui/history_store.h"

using namespace lumen::ui;

class TestHistoryStore : public QObject {
    Q_OBJECT
private slots:
    void roundTrip() {
        QTemporaryDir dir;
        const QString path = dir.filePath("h.sqlite3");
        HistoryStore store(path);
        QVERIFY2(store.ok(), qPrintable(store.error()));
        QCOMPARE(store.schema_version(), HistoryStore::kSchemaVersion);
        const qint64 a = store.create_conversation("First", "Be brief.", ChatSampling{.temperature = 0.5});
        QVERIFY(a > 0);
        const QByteArray png = QByteArray::fromHex("89504e470d0a1a0a") + "pixels";
        const qint64 m1 = store.add_message(a, "user", "Hello 你好 👋", {png, png});
        const qint64 m2 = store.add_message(a, "assistant", "", {}, false);
        QVERIFY(m1 > 0 && m2 > m1);
        store.update_message(m2, "Hi there", false);
        auto messages = store.messages(a);
        QCOMPARE(messages.size(), 2);
        QCOMPARE(messages[0].text, QString("Hello 你好 👋"));
        QCOMPARE(messages[0].images.size(), 2);
        QCOMPARE(messages[0].images[0], messages[0].images[1]);  // stored once, referenced twice
        QCOMPARE(store.image(messages[0].images[0]), png);
        QVERIFY(!messages[1].complete);
        store.update_message(m2, "Hi there!", true, {{"generated_tokens", 3}});
        messages = store.messages(a);
        QVERIFY(messages[1].complete);
        QCOMPARE(messages[1].stats.value("generated_tokens").toInt(), 3);

        const qint64 b = store.create_conversation("Second about cats");
        QVERIFY2(b > 0, qPrintable(store.error()));
        store.add_message(b, "user", "cats are great");
        QCOMPARE(store.conversations().size(), 2);
        QCOMPARE(store.conversations().first().id, b);  // newest first
        QCOMPARE(store.conversations("cats").size(), 1);
        QCOMPARE(store.conversations("你好").first().id, a);  // matches message text too
        QCOMPARE(store.conversations("100%").size(), 0);
        store.rename_conversation(a, "Renamed");
        QCOMPARE(store.conversation(a).title, QString("Renamed"));
        QCOMPARE(store.conversation(a).system_prompt, QString("Be brief."));
        QCOMPARE(store.conversation(a).sampling, ChatSampling{.temperature = 0.5});
        // Stored as JSON text holding the values that are set.
        store.set_conversation_settings(a, "Be brief.", ChatSampling{.min_p = 0.1, .max_new_tokens = 300});
        {
            QSqlDatabase db = QSqlDatabase::addDatabase("QSQLITE", "peek");
            db.setDatabaseName(path);
            QVERIFY(db.open());
            QSqlQuery q(db);
            QVERIFY(q.exec(QString("SELECT sampling FROM conversations WHERE id = %1").arg(a)) && q.next());
            QCOMPARE(q.value(0).toString(), QString(R"({"max_new_tokens":300,"min_p":0.1})"));
        }
        QSqlDatabase::removeDatabase("peek");
        QCOMPARE(store.conversation(a).sampling, (ChatSampling{.min_p = 0.1, .max_new_tokens = 300}));

        store.delete_from(m1);
        QCOMPARE(store.messages(a).size(), 0);
        QVERIFY(store.image(HistoryStore::hash_of(png)).isEmpty());  // no longer referenced: gone
        store.delete_conversation(b);
        QCOMPARE(store.conversations().size(), 1);
    }

    void reopensAndRefusesNewerSchemas() {
        QTemporaryDir dir;
        const QString path = dir.filePath("h.sqlite3");
        {
            HistoryStore store(path);
            store.add_message(store.create_conversation("kept"), "user", "still here");
        }
        {
            HistoryStore again(path);
            QVERIFY(again.ok());
            QCOMPARE(again.messages(again.conversations().first().id).first().text, QString("still here"));
        }
        {
            QSqlDatabase db = QSqlDatabase::addDatabase("QSQLITE", "bump");
            db.setDatabaseName(path);
            QVERIFY(db.open());
            QSqlQuery(db).exec("PRAGMA user_version=99");
            db.close();
        }
        QSqlDatabase::removeDatabase("bump");
        HistoryStore newer(path);
        QVERIFY(!newer.ok());
        QVERIFY(newer.error().contains("newer Lumen"));
    }

    // A history written by the first schema (before replies kept their model) opens migrated,
    // with every message, and takes the model of new replies.
    void checkpointsOffTheWritingThreadOnceWritingPauses() {
        QTemporaryDir dir;
        const QString path = dir.filePath("h.sqlite3");
        HistoryStore store(path);
        QVERIFY2(store.ok(), qPrintable(store.error()));
        const qint64 chat = store.create_conversation("Long");
        const qint64 reply = store.add_message(chat, "assistant", "", {}, false);
        // A long reply saved as it grows: the log holds every version until writing pauses...
        QString text;
        for (int i = 0; i < 100; ++i) {
            text += QString(1000, QChar('a' + i % 26));
            store.update_message(reply, text, false);
        }
        QCOMPARE(store.checkpoints(), 0);
        const qint64 grown = QFileInfo(path + "-wal").size();
        QVERIFY2(grown > 5'000'000, qPrintable(QString::number(grown)));
        // ...then the store's own thread copies it into the database, and the next write starts
        // the log again, cut back to its limit.
        QTRY_VERIFY_WITH_TIMEOUT(store.checkpoints() == 1, 10000);
        store.update_message(reply, text + "!", true);
        const qint64 after = QFileInfo(path + "-wal").size();
        qInfo("write-ahead log: %lld bytes after 100 saves of up to 100,000 characters, %lld after the checkpoint", grown,
              after);
        QVERIFY2(after <= 4 << 20, qPrintable(QString::number(after)));
        QCOMPARE(store.message(reply).text, text + "!");
    }

    void migratesAVersionOneHistory() {
        QTemporaryDir dir;
        const QString path = dir.filePath("h.sqlite3");
        {
            QSqlDatabase db = QSqlDatabase::addDatabase("QSQLITE", "v1");
            db.setDatabaseName(path);
            QVERIFY(db.open());
            QSqlQuery q(db);
            for (const char* sql :
                 {"CREATE TABLE conversations (id INTEGER PRIMARY KEY, title TEXT NOT NULL, created INTEGER NOT NULL, "
                  "updated INTEGER NOT NULL, system_prompt TEXT NOT NULL DEFAULT '', sampling TEXT NOT NULL DEFAULT '{}')",
                  "CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER NOT NULL REFERENCES "
                  "conversations(id) ON DELETE CASCADE, role TEXT NOT NULL, text TEXT NOT NULL, complete INTEGER NOT NULL "
                  "DEFAULT 1, stats TEXT NOT NULL DEFAULT '{}', created INTEGER NOT NULL)",
                  "CREATE TABLE images (hash TEXT PRIMARY KEY, data BLOB NOT NULL)",
                  "CREATE TABLE message_images (message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE, "
                  "ord INTEGER NOT NULL, hash TEXT NOT NULL REFERENCES images(hash), PRIMARY KEY (message_id, ord))",
                  "INSERT INTO conversations VALUES (1, 'old', 0, 0, '', '{\"temperature\":0.3,\"mirostat\":2}')",
                  "INSERT INTO messages VALUES (1, 1, 'user', 'hello', 1, '{}', 0)",
                  "INSERT INTO messages VALUES (2, 1, 'assistant', 'hi there', 1, '{\"finish\":1}', 0)",
                  "PRAGMA user_version=1"})
                QVERIFY2(q.exec(sql), qPrintable(q.lastError().text()));
            db.close();
        }
        QSqlDatabase::removeDatabase("v1");
        HistoryStore store(path);
        QVERIFY2(store.ok(), qPrintable(store.error()));
        QCOMPARE(store.schema_version(), 2);
        auto messages = store.messages(1);
        QCOMPARE(messages.size(), 2);
        QCOMPARE(messages[1].text, QString("hi there"));
        QVERIFY(messages[1].model.isEmpty());
        QCOMPARE(messages[1].stats.value("finish").toInt(), 1);
        // Sampling keys this version does not know are ignored; those it lacks are unset.
        QCOMPARE(store.conversation(1).sampling, ChatSampling{.temperature = 0.3});
        store.add_message(1, "assistant", "again", {}, true, "stories260K-hf");
        QCOMPARE(store.messages(1).last().model, QString("stories260K-hf"));
    }
};

QTEST_GUILESS_MAIN(TestHistoryStore)
#include "test_history_store.moc"
