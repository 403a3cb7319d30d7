// The conversation history: what is stored comes back, images are kept once, a streamed reply is
// updated in place, the schema is versioned, and the file survives the process being killed.
#include <QProcess>
#include <QSqlDatabase>
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
        const qint64 a = store.create_conversation("First", "Be brief.", {{"temperature", 0.5}});
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
        QCOMPARE(store.conversation(a).sampling.value("temperature").toDouble(), 0.5);

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
};

QTEST_GUILESS_MAIN(TestHistoryStore)
#include "test_history_store.moc"
