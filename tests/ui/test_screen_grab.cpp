// The screenshot session on a real X server (Xvfb): a window of known colours is on the screen,
// the session grabs it, a region is dragged on the overlay, and the captured pixels are that
// region, at device pixel ratios 1 and 2 (QT_SCALE_FACTOR); a window asking for a capture steps
// aside while the screens are grabbed. CTest runs this under xvfb-run where it is installed;
// elsewhere it skips.
#include <QPainter>
#include <QScreen>
#include <QSignalSpy>
#include <QtTest>

#include "ui/screenshot.h"

using namespace lumen::ui;

namespace {

// Red on the left half, blue on the right, so a region across the seam shows both in place.
class Target : public QWidget {
protected:
    void paintEvent(QPaintEvent*) override {
        QPainter p(this);
        p.fillRect(QRect(0, 0, width() / 2, height()), QColor(220, 20, 30));
        p.fillRect(QRect(width() / 2, 0, width() - width() / 2, height()), QColor(20, 40, 210));
    }
};

ScreenshotOverlay* overlay() {
    for (QWidget* w : QApplication::topLevelWidgets())
        if (auto* o = qobject_cast<ScreenshotOverlay*>(w); o && o->isVisible()) return o;
    return nullptr;
}

}  // namespace

class TestScreenGrab : public QObject {
    Q_OBJECT
private slots:
    void initTestCase() {
        if (QGuiApplication::platformName() != "xcb")
            QSKIP("needs an X server: CTest runs this under xvfb-run where the xvfb package is installed");
    }

    void dragsARegionOfTheRealScreen() {
        Target target;
        target.setWindowFlags(Qt::FramelessWindowHint);
        target.setGeometry(100, 100, 400, 200);
        target.show();
        QVERIFY(QTest::qWaitForWindowExposed(&target));
        QTest::qWait(200);

        auto* session = new ScreenshotSession;
        QSignalSpy captured(session, &ScreenshotSession::captured);
        QSignalSpy failed(session, &ScreenshotSession::failed);
        session->start();
        QTRY_VERIFY(overlay());
        ScreenshotOverlay* o = overlay();
        QVERIFY(QTest::qWaitForWindowExposed(o));
        // Screen (250, 150) to (350, 250): 50 px of red, then 50 px of blue, 100 rows.
        const QPoint from = o->mapFromGlobal(QPoint(250, 150)), to = o->mapFromGlobal(QPoint(350, 250));
        QTest::mousePress(o, Qt::LeftButton, Qt::NoModifier, from);
        QTest::mouseMove(o, to);
        QTest::mouseRelease(o, Qt::LeftButton, Qt::NoModifier, to);
        QTRY_COMPARE(captured.size() + failed.size(), 1);
        QCOMPARE(failed.size(), 0);
        const QImage image = captured.first().first().value<QImage>();
        const qreal dpr = o->screen()->devicePixelRatio();
        qInfo("device pixel ratio %g: captured %dx%d", dpr, image.width(), image.height());
        if (qEnvironmentVariableIsSet("QT_SCALE_FACTOR")) QCOMPARE(dpr, qEnvironmentVariable("QT_SCALE_FACTOR").toDouble());
        QCOMPARE(image.size(), QSize(qRound(100 * dpr), qRound(100 * dpr)));
        QCOMPARE(QColor(image.pixel(2, 2)), QColor(220, 20, 30));
        QCOMPARE(QColor(image.pixel(image.width() / 2 - 2, image.height() - 2)), QColor(220, 20, 30));
        QCOMPARE(QColor(image.pixel(image.width() / 2 + 2, 2)), QColor(20, 40, 210));
        QCOMPARE(QColor(image.pixel(image.width() - 2, image.height() - 2)), QColor(20, 40, 210));
        QTRY_VERIFY(!overlay());
    }

    void escapeCancels() {
        auto* session = new ScreenshotSession;
        QSignalSpy captured(session, &ScreenshotSession::captured);
        QSignalSpy failed(session, &ScreenshotSession::failed);
        session->start();
        QTRY_VERIFY(overlay());
        QVERIFY(QTest::qWaitForWindowExposed(overlay()));
        QTest::keyClick(overlay(), Qt::Key_Escape);
        QTRY_COMPARE(failed.size(), 1);
        QCOMPARE(failed.first().first().toString(), QString());  // a cancel is not an error
        QCOMPARE(captured.size(), 0);
    }

    // A screenshot question: the asking window is off the screen while it is grabbed, and back
    // where it was before the picture is handed over.
    void theWindowStepsAsideForTheGrab() {
        Target window;
        window.setGeometry(120, 120, 300, 200);
        window.show();
        QVERIFY(QTest::qWaitForWindowExposed(&window));
        const QRect where = window.geometry();
        int captured = 0;
        bool shown_when_captured = false;
        capture_screen_region(
            &window,
            [&](const QImage&) {
                ++captured;
                shown_when_captured = window.isVisible();
            },
            [](const QString& why) { QFAIL(qPrintable("the capture failed: " + why)); });
        QVERIFY(!window.isVisible());
        QTRY_VERIFY(overlay());
        QVERIFY(!window.isVisible());
        QVERIFY(QTest::qWaitForWindowExposed(overlay()));
        QTest::keyClick(overlay(), Qt::Key_Return);  // the whole screen
        QTRY_COMPARE(captured, 1);
        QVERIFY(shown_when_captured);
        QCOMPARE(window.geometry(), where);
    }
};

QTEST_MAIN(TestScreenGrab)
#include "test_screen_grab.moc"
