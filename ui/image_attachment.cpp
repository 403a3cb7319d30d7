#include "ui/image_attachment.h"

#include <algorithm>
#include <span>
#include <vector>

#include <QBuffer>
#include <QDialog>
#include <QFileInfo>
#include <QLabel>
#include <QObject>
#include <QScrollArea>
#include <QVBoxLayout>

#include "engine/util/error.h"
#include "vision/image.h"

namespace lumen::ui {
namespace {

QImage make_thumbnail(const QImage& image) { return image.scaled(160, 160, Qt::KeepAspectRatio, Qt::SmoothTransformation); }

}  // namespace

// The engine's own loaders: what attaches here is what the model will be given, and a broken
// file gets the same message in the app as at the terminal.
ImageResult image_from_bytes(const QByteArray& bytes, const QString& label) {
    try {
        const std::span<const uint8_t> span(reinterpret_cast<const uint8_t*>(bytes.constData()), std::size_t(bytes.size()));
        const vision::RgbImage image = vision::decode_image(span, {kMaxImagePixels});
        const QImage view(image.pixels.data(), image.width, image.height, 3 * image.width, QImage::Format_RGB888);
        return {ImageAttachment{bytes, make_thumbnail(view), QSize(image.width, image.height), label}, {}};
    } catch (const std::exception& e) {
        return {std::nullopt, QObject::tr("%1: %2").arg(label, QString::fromStdString(user_message(e, "read the image")))};
    }
}

ImageResult image_from_file(const QString& path) {
    const QString name = QFileInfo(path).fileName();
    std::vector<uint8_t> bytes;
    try {
        bytes = vision::load_image_bytes(path.toStdString());  // regular files only, at most 512 MB
    } catch (const std::exception& e) {
        // The message starts with the path; the file name is enough in a window about that file.
        QString message = QString::fromStdString(user_message(e, "read the image"));
        if (message.startsWith(path)) message = name + message.mid(path.size());
        return {std::nullopt, message};
    }
    return image_from_bytes(QByteArray(reinterpret_cast<const char*>(bytes.data()), qsizetype(bytes.size())), name);
}

ImageResult image_from_qimage(const QImage& image, const QString& label) {
    if (image.isNull()) return {std::nullopt, QObject::tr("%1 holds no image").arg(label)};
    if (qint64(image.width()) * image.height() > kMaxImagePixels)
        return {std::nullopt, QObject::tr("%1 is %2x%3 pixels; the limit is 50 megapixels").arg(label).arg(image.width()).arg(image.height())};
    QByteArray png;
    QBuffer buffer(&png);
    buffer.open(QIODevice::WriteOnly);
    image.save(&buffer, "PNG");
    return {ImageAttachment{png, make_thumbnail(image), image.size(), label}, {}};
}

void show_image_window(const QByteArray& bytes, QWidget* parent) {
    QImage image = QImage::fromData(bytes);
    if (image.isNull()) return;
    auto* dialog = new QDialog(parent);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->setWindowTitle(QObject::tr("Image (%1 x %2)").arg(image.width()).arg(image.height()));
    auto* area = new QScrollArea(dialog);
    auto* label = new QLabel(area);
    label->setPixmap(QPixmap::fromImage(image));
    area->setWidget(label);
    auto* layout = new QVBoxLayout(dialog);
    layout->addWidget(area);
    dialog->resize(std::min(image.width() + 40, 1400), std::min(image.height() + 40, 900));
    dialog->show();
}

}  // namespace lumen::ui
