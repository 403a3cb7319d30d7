#include "ui/screenshot.h"

#include <QDBusConnection>
#include <QDBusInterface>
#include <QDBusPendingCallWatcher>
#include <QDBusPendingReply>
#include <QDBusObjectPath>
#include <QGuiApplication>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QPainter>
#include <QScreen>
#include <QTimer>
#include <QUrl>
#include <QUuid>
#include <cmath>

namespace lumen::ui {

QRect selection_to_device_pixels(const QRect& logical, qreal dpr, const QSize& device_size) {
    const QRect n = logical.normalized();
    // Whole device pixels covering the logical rectangle: floor the start, ceil the end.
    const int x0 = int(std::floor(n.left() * dpr)), y0 = int(std::floor(n.top() * dpr));
    const int x1 = int(std::ceil((n.left() + n.width()) * dpr)), y1 = int(std::ceil((n.top() + n.height()) * dpr));
    return QRect(QPoint(x0, y0), QPoint(x1 - 1, y1 - 1)).intersected(QRect(QPoint(0, 0), device_size));
}

ScreenshotOverlay::ScreenshotOverlay(const QPixmap& grab, const QRect& screen_geometry, QWidget* parent)
    : QWidget(parent, Qt::FramelessWindowHint | Qt::WindowStaysOnTopHint | Qt::Tool), grab_(grab) {
    setCursor(Qt::CrossCursor);
    setGeometry(screen_geometry);
    setAccessibleName(tr("Screenshot: drag a region, Enter for the whole screen, Esc to cancel"));
    setMouseTracking(true);
}

void ScreenshotOverlay::paintEvent(QPaintEvent*) {
    QPainter p(this);
    p.drawPixmap(rect(), grab_);
    p.fillRect(rect(), QColor(0, 0, 0, 110));  // dim all but the selection
    if (!selection_.isEmpty()) {
        const QRect s = selection_.normalized();
        const qreal dpr = grab_.devicePixelRatio();
        p.drawPixmap(s, grab_, QRectF(s.x() * dpr, s.y() * dpr, s.width() * dpr, s.height() * dpr));
        p.setPen(QPen(palette().color(QPalette::Highlight), 2));
        p.drawRect(s);
        p.setPen(Qt::white);
        p.drawText(s.bottomLeft() + QPoint(4, 18),
                   QString("%1 x %2").arg(int(s.width() * dpr)).arg(int(s.height() * dpr)));
    } else {
        p.setPen(Qt::white);
        p.drawText(rect(), Qt::AlignCenter,
                   tr("Drag to choose a region · Enter or double-click for the whole screen · Esc to cancel"));
    }
}

void ScreenshotOverlay::mousePressEvent(QMouseEvent* e) {
    anchor_ = e->position().toPoint();
    selection_ = QRect(anchor_, anchor_);
    dragging_ = true;
    update();
}

void ScreenshotOverlay::mouseMoveEvent(QMouseEvent* e) {
    if (!dragging_) return;
    // From the press to the pointer, the pointer's own pixel excluded (a drag of 30 is 30 wide).
    const QPoint p = e->position().toPoint();
    selection_ = QRect(QPoint(std::min(anchor_.x(), p.x()), std::min(anchor_.y(), p.y())),
                       QSize(std::abs(p.x() - anchor_.x()), std::abs(p.y() - anchor_.y())));
    update();
}

void ScreenshotOverlay::mouseReleaseEvent(QMouseEvent*) {
    dragging_ = false;
    if (selection_.width() > 3 && selection_.height() > 3) finish(selection_);
}

void ScreenshotOverlay::mouseDoubleClickEvent(QMouseEvent*) { finish(rect()); }

void ScreenshotOverlay::keyPressEvent(QKeyEvent* e) {
    if (e->key() == Qt::Key_Escape) {
        emit cancelled();
        close();
    } else if (e->key() == Qt::Key_Return || e->key() == Qt::Key_Enter) {
        finish(selection_.isEmpty() ? rect() : selection_);
    }
}

void ScreenshotOverlay::finish(const QRect& logical) {
    const QImage image = grab_.toImage();
    const QRect device = selection_to_device_pixels(logical, grab_.devicePixelRatio(), image.size());
    QImage part = image.copy(device);
    part.setDevicePixelRatio(1.0);
    emit captured(part);
    close();
}

ScreenshotSession::ScreenshotSession(QObject* parent) : QObject(parent) {}

void ScreenshotSession::start() {
    // Wayland compositors refuse grabs; ask the portal there.
    if (QGuiApplication::platformName().startsWith("wayland")) {
        use_portal();
        return;
    }
    QList<QPair<QPixmap, QRect>> grabs;
    for (QScreen* screen : QGuiApplication::screens()) {
        QPixmap pixmap = screen->grabWindow(0);
        if (pixmap.isNull()) {
            use_portal();
            return;
        }
        grabs.push_back({pixmap, screen->geometry()});
    }
    if (grabs.isEmpty()) {
        emit failed(tr("No screen to capture"));
        done();
        return;
    }

    show_overlays(grabs);
}

void ScreenshotSession::show_overlays(const QList<QPair<QPixmap, QRect>>& grabs) {
    for (const auto& [pixmap, geometry] : grabs) {
        auto* overlay = new ScreenshotOverlay(pixmap, geometry);
        overlays_.push_back(overlay);
        connect(overlay, &ScreenshotOverlay::captured, this, [this](const QImage& image) {
            if (finished_) return;
            emit captured(image);
            done();
        });
        connect(overlay, &ScreenshotOverlay::cancelled, this, [this] {
            if (finished_) return;
            emit failed(QString());
            done();
        });
        overlay->showFullScreen();
        overlay->activateWindow();
        overlay->setFocus();
    }
}

void ScreenshotSession::use_portal() {
    QDBusInterface portal("org.freedesktop.portal.Desktop", "/org/freedesktop/portal/desktop",
                          "org.freedesktop.portal.Screenshot", QDBusConnection::sessionBus());
    if (!portal.isValid()) {
        emit failed(tr("This desktop does not let applications capture the screen, and its screenshot portal "
                       "(xdg-desktop-portal) is not available. Take a screenshot with your desktop's tool and paste it "
                       "with Ctrl+V."));
        done();
        return;
    }
    const QString token = "lumen" + QUuid::createUuid().toString(QUuid::Id128);
    const QVariantMap options{{"interactive", true}, {"handle_token", token}};
    const QString sender = QDBusConnection::sessionBus().baseService().mid(1).replace('.', '_');
    const QString request = "/org/freedesktop/portal/desktop/request/" + sender + "/" + token;
    QDBusConnection::sessionBus().connect("org.freedesktop.portal.Desktop", request, "org.freedesktop.portal.Request",
                                          "Response", this, SLOT(portal_response(uint, QVariantMap)));
    portal.asyncCall("Screenshot", QString(), options);
    // The answer comes as a Response signal; give up after two minutes.
    QTimer::singleShot(120000, this, [this] {
        if (finished_) return;
        emit failed(tr("The screenshot portal did not answer"));
        done();
    });
}

void ScreenshotSession::portal_response(uint code, const QVariantMap& results) {
    if (finished_) return;
    if (code != 0) {
        emit failed(code == 1 ? QString() : tr("The screenshot portal refused the capture"));
    } else {
        const QImage image(QUrl(results.value("uri").toString()).toLocalFile());
        if (image.isNull()) emit failed(tr("The screenshot portal returned no image"));
        else emit captured(image);
    }
    done();
}

void capture_screen_region(QWidget* window, std::function<void(const QImage&)> captured,
                           std::function<void(const QString&)> failed) {
    // Shown again where it was: a window manager may place a window that is shown again anew.
    const QByteArray geometry = window->saveGeometry();
    auto back = [window, geometry] {
        window->show();
        window->restoreGeometry(geometry);
        window->raise();
        window->activateWindow();
    };
    window->hide();
    // Give the compositor a moment to take the window off the screen before grabbing it.
    QTimer::singleShot(300, window, [window, back, captured, failed] {
        auto* session = new ScreenshotSession(window);
        QObject::connect(session, &ScreenshotSession::captured, window, [back, captured](const QImage& image) {
            back();
            captured(image);
        });
        QObject::connect(session, &ScreenshotSession::failed, window, [back, failed](const QString& why) {
            back();
            failed(why);
        });
        session->start();
    });
}

void ScreenshotSession::done() {
    if (finished_) return;
    finished_ = true;
    for (auto& o : overlays_)
        if (o) {
            o->close();
            o->deleteLater();
        }
    overlays_.clear();
    deleteLater();
}

}  // namespace lumen::ui
