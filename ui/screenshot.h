#pragma once
// Screenshot questions: every screen is grabbed and covered by an overlay on which the user drags
// a region (Esc cancels; Enter or a double click takes the whole screen). Where the platform
// refuses grabs (Wayland), the xdg-desktop-portal Screenshot interface is asked over D-Bus.
#include <QImage>
#include <QList>
#include <functional>
#include <QObject>
#include <QPixmap>
#include <QPointer>
#include <QVariantMap>
#include <QRect>
#include <QWidget>

namespace lumen::ui {

// The device pixels a selection covers, given in logical (widget) coordinates on a screen with
// `dpr` device pixels per logical pixel, clipped to an image of `device_size`.
QRect selection_to_device_pixels(const QRect& logical, qreal dpr, const QSize& device_size);

class ScreenshotOverlay : public QWidget {
    Q_OBJECT
public:
    // `grab` is the screen's image at device resolution (its devicePixelRatio set).
    ScreenshotOverlay(const QPixmap& grab, const QRect& screen_geometry, QWidget* parent = nullptr);

signals:
    void captured(const QImage& image);
    void cancelled();

protected:
    void paintEvent(QPaintEvent*) override;
    void mousePressEvent(QMouseEvent* e) override;
    void mouseMoveEvent(QMouseEvent* e) override;
    void mouseReleaseEvent(QMouseEvent* e) override;
    void mouseDoubleClickEvent(QMouseEvent* e) override;
    void keyPressEvent(QKeyEvent* e) override;

private:
    void finish(const QRect& logical);

    QPixmap grab_;
    QPoint anchor_;
    QRect selection_;
    bool dragging_ = false;
};

// Runs one capture: grabs every screen (or asks the portal) and shows the overlays. Emits
// `captured` with the chosen pixels, or `failed` with what went wrong (an empty message when the
// user cancelled). Deletes itself when done.
class ScreenshotSession : public QObject {
    Q_OBJECT
public:
    explicit ScreenshotSession(QObject* parent = nullptr);
    void start();

signals:
    void captured(const QImage& image);
    void failed(const QString& why);

private slots:
    void portal_response(uint code, const QVariantMap& results);

private:
    void show_overlays(const QList<QPair<QPixmap, QRect>>& grabs);
    void use_portal();
    void done();

    QList<QPointer<ScreenshotOverlay>> overlays_;
    bool finished_ = false;
};

// One capture with `window` out of the way: hidden while the screens are grabbed, it is shown again
// where it was before `captured` or `failed` (an empty message: the user cancelled) is called.
void capture_screen_region(QWidget* window, std::function<void(const QImage&)> captured,
                           std::function<void(const QString&)> failed);

}  // namespace lumen::ui
