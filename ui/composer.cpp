#include "ui/composer.h"

#include <QDragEnterEvent>
#include <QTextDocument>
#include <algorithm>
#include <QDropEvent>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QImage>
#include <QKeyEvent>
#include <QLabel>
#include <QPushButton>
#include <QMimeData>
#include <QToolButton>
#include <QUrl>
#include <QVBoxLayout>

namespace lumen::ui {

void ComposerEdit::keyPressEvent(QKeyEvent* e) {
    if ((e->key() == Qt::Key_Return || e->key() == Qt::Key_Enter) && !(e->modifiers() & Qt::ShiftModifier)) {
        emit submit();
        return;
    }
    QPlainTextEdit::keyPressEvent(e);
}

bool ComposerEdit::canInsertFromMimeData(const QMimeData* source) const {
    return source->hasImage() || source->hasUrls() || QPlainTextEdit::canInsertFromMimeData(source);
}

void ComposerEdit::insertFromMimeData(const QMimeData* source) {
    // Images (and files) go to the attachments; text is pasted as text.
    if (source->hasImage() || (source->hasUrls() && !source->hasText())) {
        emit images_offered(source);
        return;
    }
    if (source->hasUrls() && source->urls().first().isLocalFile() && !source->text().contains('\n')) {
        emit images_offered(source);
        return;
    }
    QPlainTextEdit::insertFromMimeData(source);
}

Composer::Composer(QWidget* parent) : QWidget(parent) {
    setAcceptDrops(true);
    edit_ = new ComposerEdit(this);
    edit_->setPlaceholderText(tr("Ask anything. Drop, paste or attach images; Enter sends, Shift+Enter starts a new line."));
    edit_->setAccessibleName(tr("Message"));
    edit_->setTabChangesFocus(true);
    // Three lines to start with, growing with the text up to ten.
    const int line = edit_->fontMetrics().lineSpacing();
    edit_->setFixedHeight(line * 3 + 14);
    connect(edit_->document(), &QTextDocument::contentsChanged, this, [this, line] {
        const int lines = std::clamp(int(edit_->document()->size().height()), 3, 10);
        edit_->setFixedHeight(line * lines + 14);
    });
    setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Maximum);

    strip_ = new QWidget(this);
    strip_layout_ = new QHBoxLayout(strip_);
    strip_layout_->setContentsMargins(0, 0, 0, 0);
    strip_->hide();
    // A problem line under the text, with a button when there is something to do about it.
    problem_ = new QWidget(this);
    problem_text_ = new QLabel(problem_);
    problem_text_->setWordWrap(true);
    problem_text_->setTextFormat(Qt::PlainText);
    problem_text_->setObjectName("composerProblem");
    problem_action_ = new QPushButton(problem_);
    auto* problem_row = new QHBoxLayout(problem_);
    problem_row->setContentsMargins(0, 0, 0, 0);
    problem_row->addWidget(problem_text_, 1);
    problem_row->addWidget(problem_action_);
    problem_->hide();

    attach_ = new QToolButton(this);
    attach_->setText(tr("Attach"));
    attach_->setToolTip(tr("Attach images"));
    attach_->setAccessibleName(tr("Attach images"));
    screenshot_ = new QToolButton(this);
    screenshot_->setText(tr("Screenshot"));
    screenshot_->setToolTip(tr("Ask about a part of the screen (Ctrl+Shift+S)"));
    screenshot_->setAccessibleName(tr("Take a screenshot"));
    send_ = new QToolButton(this);
    send_->setText(tr("Send"));
    send_->setToolTip(tr("Send (Enter)"));
    send_->setAccessibleName(tr("Send"));

    auto* buttons = new QHBoxLayout;
    buttons->addWidget(attach_);
    buttons->addWidget(screenshot_);
    buttons->addStretch();
    buttons->addWidget(send_);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(8, 4, 8, 8);
    layout->addWidget(strip_);
    layout->addWidget(edit_);
    layout->addWidget(problem_);
    layout->addLayout(buttons);

    choose_files = [](QWidget* parent_widget) {
        return QFileDialog::getOpenFileNames(parent_widget, tr("Attach images"), QString(),
                                             tr("Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif);;All files (*)"));
    };
    connect(edit_, &ComposerEdit::submit, this, [this] {
        if (!generating_) emit send_requested();
    });
    connect(edit_, &ComposerEdit::images_offered, this, &Composer::take_mime);
    connect(attach_, &QToolButton::clicked, this, &Composer::attach_files);
    connect(screenshot_, &QToolButton::clicked, this, &Composer::screenshot_requested);
    connect(send_, &QToolButton::clicked, this, [this] {
        if (generating_) emit stop_requested();
        else emit send_requested();
    });
    connect(problem_action_, &QPushButton::clicked, this, [this] {
        problem_->hide();
        emit problem_action_clicked();
    });
    connect(edit_, &QPlainTextEdit::textChanged, this, [this] { problem_->hide(); });
}

QString Composer::text() const { return edit_->toPlainText(); }

void Composer::set_text(const QString& text) {
    edit_->setPlainText(text);
    edit_->moveCursor(QTextCursor::End);
}

void Composer::clear() {
    edit_->clear();
    images_.clear();
    rebuild_thumbnails();
    problem_->hide();
}

void Composer::set_generating(bool on) {
    generating_ = on;
    send_->setText(on ? tr("Stop") : tr("Send"));
    send_->setToolTip(on ? tr("Stop the reply (Esc)") : tr("Send (Enter)"));
    send_->setAccessibleName(on ? tr("Stop") : tr("Send"));
}

void Composer::focus_text() { edit_->setFocus(Qt::OtherFocusReason); }

void Composer::show_problem(const QString& message, const QString& action) {
    problem_text_->setText(message);
    problem_action_->setText(action);
    problem_action_->setAccessibleName(action);
    problem_action_->setVisible(!action.isEmpty());
    problem_->setVisible(!message.isEmpty());
}

QString Composer::problem() const { return problem_->isVisibleTo(this) ? problem_text_->text() : QString(); }

void Composer::add_image(const ImageAttachment& image) {
    images_.push_back(image);
    rebuild_thumbnails();
    emit image_added(image);
}

void Composer::take_mime(const QMimeData* mime) {
    QStringList problems;
    bool added = false;
    if (mime->hasUrls()) {
        for (const QUrl& url : mime->urls()) {
            if (!url.isLocalFile()) {
                problems << tr("%1 is not a local file").arg(url.toDisplayString());
                continue;
            }
            const ImageResult r = image_from_file(url.toLocalFile());
            if (r.image) add_image(*r.image), added = true;
            else problems << r.error;
        }
    } else if (mime->hasImage()) {
        const ImageResult r = image_from_qimage(qvariant_cast<QImage>(mime->imageData()), tr("Pasted image"));
        if (r.image) add_image(*r.image), added = true;
        else problems << r.error;
    } else {
        problems << tr("Only images can be attached");
    }
    show_problem(problems.join("\n"));
    if (added) focus_text();
}

void Composer::attach_files() {
    QStringList problems;
    for (const QString& path : choose_files(this)) {
        const ImageResult r = image_from_file(path);
        if (r.image) add_image(*r.image);
        else problems << r.error;
    }
    show_problem(problems.join("\n"));
    focus_text();
}

void Composer::rebuild_thumbnails() {
    while (QLayoutItem* item = strip_layout_->takeAt(0)) {
        delete item->widget();
        delete item;
    }
    for (int i = 0; i < images_.size(); ++i) {
        auto* tile = new QWidget(strip_);
        auto* v = new QVBoxLayout(tile);
        v->setContentsMargins(0, 0, 0, 0);
        auto* picture = new QLabel(tile);
        picture->setPixmap(QPixmap::fromImage(images_[i].thumbnail.scaled(72, 72, Qt::KeepAspectRatio, Qt::SmoothTransformation)));
        picture->setToolTip(QString("%1 (%2x%3)").arg(images_[i].label).arg(images_[i].size.width()).arg(images_[i].size.height()));
        picture->setAccessibleName(tr("Attached image: %1").arg(images_[i].label));
        auto* remove = new QToolButton(tile);
        remove->setText(tr("Remove"));
        remove->setAccessibleName(tr("Remove %1").arg(images_[i].label));
        remove->setAutoRaise(true);
        v->addWidget(picture);
        v->addWidget(remove);
        connect(remove, &QToolButton::clicked, this, [this, i] {
            images_.removeAt(i);
            rebuild_thumbnails();
        });
        strip_layout_->addWidget(tile);
    }
    strip_layout_->addStretch();
    strip_->setVisible(!images_.isEmpty());
}

void Composer::dragEnterEvent(QDragEnterEvent* e) {
    if (e->mimeData()->hasUrls() || e->mimeData()->hasImage()) e->acceptProposedAction();
}

void Composer::dropEvent(QDropEvent* e) {
    take_mime(e->mimeData());
    e->acceptProposedAction();
}

}  // namespace lumen::ui
