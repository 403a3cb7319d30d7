#pragma once
// An image the user attached (file, drop, paste or screenshot): read and decoded by the engine's
// loaders (regular files only, size checked from the header before decoding), kept as its
// encoded bytes, shown as a thumbnail.
#include <QByteArray>
#include <QImage>
#include <QString>
#include <optional>

class QWidget;

namespace lumen::ui {

struct ImageAttachment {
    QByteArray bytes;   // the encoded file (PNG for pasted or captured pixels)
    QImage thumbnail;   // at most 160 px on its longer side
    QSize size;         // full size in pixels
    QString label;      // file name or "Pasted image"
};

// Pixels an image may have (50 megapixels, as the vision preprocessor's default).
inline constexpr qint64 kMaxImagePixels = 50'000'000;

struct ImageResult {
    std::optional<ImageAttachment> image;
    QString error;  // why it was refused, for the user
};

ImageResult image_from_file(const QString& path);
ImageResult image_from_bytes(const QByteArray& bytes, const QString& label);
ImageResult image_from_qimage(const QImage& image, const QString& label);

// Opens an image (its encoded file) at full size in a window of its own, scrolled when large.
void show_image_window(const QByteArray& bytes, QWidget* parent);

}  // namespace lumen::ui
