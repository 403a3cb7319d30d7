#pragma once
// Where the user writes: the text, the images attached to it (drop, paste, attach button,
// screenshot), and the send / stop button. Enter sends, Shift+Enter breaks the line.
#include <QList>
#include <QPlainTextEdit>
#include <QWidget>
#include <functional>

#include "ui/image_attachment.h"

class QLabel;
class QMimeData;
class QPushButton;
class QToolButton;
class QHBoxLayout;

namespace lumen::ui {

class ComposerEdit : public QPlainTextEdit {
    Q_OBJECT
public:
    using QPlainTextEdit::QPlainTextEdit;

signals:
    void submit();
    void images_offered(const QMimeData* data);

protected:
    void keyPressEvent(QKeyEvent* e) override;
    bool canInsertFromMimeData(const QMimeData* source) const override;
    void insertFromMimeData(const QMimeData* source) override;
};

class Composer : public QWidget {
    Q_OBJECT
public:
    explicit Composer(QWidget* parent = nullptr);

    QString text() const;
    void set_text(const QString& text);
    const QList<ImageAttachment>& images() const { return images_; }
    void clear();
    void set_generating(bool on);
    void focus_text();
    ComposerEdit* edit() const { return edit_; }

    // Adds what a drop or paste carries: image files, image data, or says why not.
    void take_mime(const QMimeData* data);
    void add_image(const ImageAttachment& image);
    // Inline, under the text; `action` names a button that emits problem_action_clicked.
    void show_problem(const QString& message, const QString& action = {});
    QString problem() const;  // the message shown, or empty
    // The file chooser the attach button uses (replaceable for tests).
    std::function<QStringList(QWidget*)> choose_files;

signals:
    void send_requested();
    void stop_requested();
    void screenshot_requested();
    void problem_action_clicked();
    void image_added(const lumen::ui::ImageAttachment& image);

protected:
    void dragEnterEvent(QDragEnterEvent* e) override;
    void dropEvent(QDropEvent* e) override;

private:
    void rebuild_thumbnails();
    void attach_files();

    ComposerEdit* edit_;
    QWidget* strip_;
    QHBoxLayout* strip_layout_;
    QWidget* problem_;
    QLabel* problem_text_;
    QPushButton* problem_action_;
    QToolButton* attach_;
    QToolButton* screenshot_;
    QToolButton* send_;
    QList<ImageAttachment> images_;
    bool generating_ = false;
};

}  // namespace lumen::ui
