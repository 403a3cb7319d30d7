#include "ui/image_attachment.h"

#include <algorithm>

#include <QBuffer>
#include <QDialog>
#include <QFile>
#include <QFileInfo>
#include <QImageReader>
#include <QLabel>
#include <QObject>
#include <QScrollArea>
#include <QVBoxLayout>

namespace lumen::ui {
namespace {

QImage make_thumbnail(const QImage& image) { return image.scaled(160, 160, Qt::KeepAspectRatio, Qt::SmoothTransformation); }

}  // namespace

ImageResult image_from_bytes(const QByteArray& bytes, const QString& label) {
    if (bytes.isEmpty()) return {std::nullopt, QObject::tr("%1 is empty").arg(label)};
    QBuffer buffer;
    buffer.setData(bytes);
    buffer.open(QIODevice::ReadOnly);
    QImageReader reader(&buffer);
    if (!reader.canRead()) return {std::nullopt, QObject::tr("%1 is not an image Lumen can read (PNG, JPEG, WebP, BMP or GIF)").arg(label)};
    const QSize size = reader.size();  // from the header, before any pixel is decoded
    if (size.isValid() && qint64(size.width()) * size.height() > kMaxImagePixels)
        return {std::nullopt, QObject::tr("%1 is %2x%3 pixels; the limit is 50 megapixels").arg(label).arg(size.width()).arg(size.height())};
    reader.setAutoTransform(true);  // EXIF orientation
    const QImage image = reader.read();
    if (image.isNull()) return {std::nullopt, QObject::tr("%1 could not be decoded (%2)").arg(label, reader.errorString())};
    return {ImageAttachment{bytes, make_thumbnail(image), image.size(), label}, {}};
}

ImageResult image_from_file(const QString& path) {
    const QString name = QFileInfo(path).fileName();
    QFile f(path);
    if (!f.open(QIODevice::ReadOnly)) return {std::nullopt, QObject::tr("%1 cannot be opened: %2").arg(name, f.errorString())};
    if (f.size() > 512ll << 20) return {std::nullopt, QObject::tr("%1 is larger than 512 MB").arg(name)};
    return image_from_bytes(f.readAll(), name);
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
