// How a reply is cut for the transcript: prose and fenced code (an unfinished fence too), and
// blocks whose cuts do not move while the text grows (the blocks a stream has laid out stay).
#include <QtTest>

#include "ui/markdown_segments.h"

using namespace lumen::ui;

class TestMarkdownSegments : public QObject {
    Q_OBJECT
private slots:
    void proseAndCode() {
        const auto s = split_markdown("Intro\n\n```python\nprint(1)\n```\nAfter\n```cpp\nint x;");
        QCOMPARE(s.size(), 4);
        QCOMPARE(s[0].kind, Segment::Kind::Prose);
        QCOMPARE(s[1].kind, Segment::Kind::Code);
        QCOMPARE(s[1].language, QString("python"));
        QCOMPARE(s[1].text, QString("print(1)"));
        QVERIFY(!s[1].open);
        QCOMPARE(s[2].text, QString("After"));
        QVERIFY(s[3].open);  // still being written
        QCOMPARE(s[3].text, QString("int x;"));
    }

    void blocksAreBoundedAndLoseNothing() {
        QString text;
        for (int i = 0; i < 3000; ++i) text += QString("word%1").arg(i) + (i % 37 == 0 ? "\n" : " ");
        const QStringList blocks = split_into_blocks(text, 500);
        QVERIFY(blocks.size() > 10);
        qsizetype total = 0;
        for (const QString& b : blocks) {
            QVERIFY(b.size() <= 3 * 500);
            total += b.size();
        }
        // Each cut drops the one line break or space it was made at, and nothing else.
        QCOMPARE(total + blocks.size() - 1, text.size());
    }

    void cutsStayWhereTheyAreWhileTheTextGrows() {
        QString text;
        for (int i = 0; i < 4000; ++i) text += QString("w%1").arg(i % 97) + (i % 151 == 0 ? "\n" : " ");
        const QStringList whole = split_into_blocks(text, 400);
        for (qsizetype n = 1; n < text.size(); n += 97) {
            const QStringList part = split_into_blocks(text.left(n), 400);
            // Every block but the last (the one still growing) is a block of the whole text.
            for (qsizetype i = 0; i + 1 < part.size(); ++i) QCOMPARE(part[i], whole[i]);
        }
    }

    void aLongLineWithoutSpacesIsCutAnywhereButNotInsideACharacter() {
        QString text;
        for (int i = 0; i < 3000; ++i) text += QString::fromUtf8("😀");  // two UTF-16 units each
        for (const QString& b : split_into_blocks(text, 500)) {
            QVERIFY(!b.isEmpty());
            QVERIFY(!b.front().isLowSurrogate());
            QVERIFY(!b.back().isHighSurrogate());
        }
    }

    void paragraphsKeepSingleLineBreaks() {
        const QStringList p = markdown_paragraphs("one\ntwo\n\n| a | b |\n|---|---|\n\nthree", 2000);
        QCOMPARE(p.size(), 3);
        QCOMPARE(p[0], QString("one  \ntwo"));      // a hard break: shown on two lines
        QCOMPARE(p[1], QString("| a | b |\n|---|---|"));  // table rows as they are
        QCOMPARE(p[2], QString("three"));
    }
};

QTEST_GUILESS_MAIN(TestMarkdownSegments)
#include "test_markdown_segments.moc"
