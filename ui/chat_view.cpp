#include "ui/chat_view.h"

#include <QApplication>
#include <QClipboard>
#include <QFontDatabase>
#include <QHBoxLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QScrollBar>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>

#include "ui/markdown_segments.h"

namespace lumen::ui {
namespace {

// A fenced code block: monospace, its language, and a copy button.
class CodeBlock : public QFrame {
public:
    explicit CodeBlock(QWidget* parent) : QFrame(parent) {
        setFrameShape(QFrame::StyledPanel);
        setObjectName("codeBlock");
        // As tall as its lines: a long reply's layout must not pad the block.
        setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Fixed);
        language_ = new QLabel(this);
        language_->setForegroundRole(QPalette::PlaceholderText);
        auto* copy = new QToolButton(this);
        copy->setText(tr("Copy"));
        copy->setToolTip(tr("Copy this code"));
        copy->setAccessibleName(tr("Copy code"));
        copy->setAutoRaise(true);
        edit_ = new QPlainTextEdit(this);
        edit_->setReadOnly(true);
        edit_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
        edit_->setLineWrapMode(QPlainTextEdit::NoWrap);
        edit_->setFrameShape(QFrame::NoFrame);
        edit_->setVerticalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
        edit_->setAccessibleName(tr("Code"));
        auto* top = new QHBoxLayout;
        top->addWidget(language_);
        top->addStretch();
        top->addWidget(copy);
        auto* layout = new QVBoxLayout(this);
        layout->setContentsMargins(6, 2, 6, 6);
        layout->addLayout(top);
        layout->addWidget(edit_);
        connect(copy, &QToolButton::clicked, this, [this] { QApplication::clipboard()->setText(edit_->toPlainText()); });
    }
    void set(const Segment& s) {
        language_->setText(s.language.isEmpty() ? tr("code") : s.language);
        if (edit_->toPlainText() != s.text) {
            // Appending keeps the cursor and avoids re-laying the whole block while it streams.
            if (s.text.startsWith(edit_->toPlainText()) && !edit_->toPlainText().isEmpty()) {
                QTextCursor c(edit_->document());
                c.movePosition(QTextCursor::End);
                c.insertText(s.text.mid(edit_->toPlainText().size()));
            } else {
                edit_->setPlainText(s.text);
            }
        }
        const int lines = edit_->document()->blockCount();
        const QFontMetrics fm(edit_->font());
        edit_->setFixedHeight(lines * fm.lineSpacing() + 2 * int(edit_->document()->documentMargin()) + 4 +
                              (edit_->horizontalScrollBar()->isVisible() ? edit_->horizontalScrollBar()->height() : 0));
    }

private:
    QLabel* language_;
    QPlainTextEdit* edit_;
};

QLabel* prose_label(QWidget* parent) {
    auto* l = new QLabel(parent);
    l->setTextFormat(Qt::MarkdownText);
    l->setWordWrap(true);
    l->setTextInteractionFlags(Qt::TextSelectableByMouse | Qt::LinksAccessibleByMouse);
    l->setOpenExternalLinks(true);
    l->setSizePolicy(QSizePolicy::Preferred, QSizePolicy::Minimum);
    return l;
}

QToolButton* action(const QString& text, const QString& tip, QWidget* parent) {
    auto* b = new QToolButton(parent);
    b->setText(text);
    b->setToolTip(tip);
    b->setAccessibleName(tip);
    b->setAutoRaise(true);
    return b;
}

}  // namespace

MessageWidget::MessageWidget(const QString& role, const QString& author, QWidget* parent) : QFrame(parent), role_(role) {
    setObjectName(role == "user" ? "userMessage" : "assistantMessage");
    setFrameShape(QFrame::NoFrame);
    setAccessibleName(role == "user" ? tr("Your message") : tr("Reply"));
    auto* name = new QLabel("<b>" + author.toHtmlEscaped() + "</b>", this);
    content_ = new QVBoxLayout;
    content_->setSpacing(4);
    images_ = new QWidget(this);
    images_->setLayout(new QHBoxLayout);
    images_->layout()->setContentsMargins(0, 0, 0, 0);
    images_->hide();
    stats_ = new QLabel(this);
    stats_->setObjectName("stats");
    QPalette muted = stats_->palette();
    muted.setColor(QPalette::WindowText, muted.color(QPalette::Disabled, QPalette::WindowText));
    stats_->setPalette(muted);
    stats_->hide();

    auto* copy = action(tr("Copy"), tr("Copy this message"), this);
    regenerate_ = action(tr("Regenerate"), tr("Write this reply again"), this);
    auto* edit = action(tr("Edit"), tr("Edit this message and send it again"), this);
    auto* remove = action(tr("Delete"), tr("Delete this message"), this);
    regenerate_->setVisible(false);
    edit->setVisible(role == "user");
    auto* actions = new QHBoxLayout;
    actions->addWidget(stats_);
    actions->addStretch();
    for (QToolButton* b : {copy, regenerate_, edit, remove}) actions->addWidget(b);

    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(12, 8, 12, 4);
    layout->addWidget(name);
    layout->addWidget(images_);
    layout->addLayout(content_);
    layout->addLayout(actions);
    connect(copy, &QToolButton::clicked, this, [this] { emit copy_requested(this); });
    connect(regenerate_, &QToolButton::clicked, this, [this] { emit regenerate_requested(this); });
    connect(edit, &QToolButton::clicked, this, [this] { emit edit_requested(this); });
    connect(remove, &QToolButton::clicked, this, [this] { emit delete_requested(this); });
}

void MessageWidget::set_text(const QString& text) {
    if (text == text_) return;
    text_ = text;
    rebuild_content();
}

void MessageWidget::rebuild_content() {
    // User text is shown as written; replies are Markdown with code blocks.
    QList<Segment> segments;
    if (role_ == "user") segments.push_back(Segment{Segment::Kind::Prose, text_, {}, false});
    else segments = split_markdown(text_);
    // Reuse the widgets that are already there (only the last one changes while streaming).
    for (int i = 0; i < segments.size(); ++i) {
        const int kind = int(segments[i].kind);
        if (i < segment_widgets_.size() && segment_kinds_[i] != kind) {
            while (segment_widgets_.size() > i) {
                delete segment_widgets_.takeLast();
                segment_kinds_.removeLast();
            }
        }
        if (i >= segment_widgets_.size()) {
            QWidget* w = kind == int(Segment::Kind::Code) ? static_cast<QWidget*>(new CodeBlock(this)) : prose_label(this);
            content_->addWidget(w);
            segment_widgets_.push_back(w);
            segment_kinds_.push_back(kind);
        }
        if (segments[i].kind == Segment::Kind::Code) {
            static_cast<CodeBlock*>(segment_widgets_[i])->set(segments[i]);
        } else {
            auto* label = static_cast<QLabel*>(segment_widgets_[i]);
            if (role_ == "user") {
                label->setTextFormat(Qt::PlainText);
                label->setText(segments[i].text);
            } else if (label->text() != segments[i].text) {
                label->setText(segments[i].text);
            }
        }
    }
    while (segment_widgets_.size() > segments.size()) {
        delete segment_widgets_.takeLast();
        segment_kinds_.removeLast();
    }
}

void MessageWidget::set_images(const QList<QImage>& thumbnails, const QList<QByteArray>& originals) {
    images_bytes_ = originals;
    QLayout* row = images_->layout();
    while (QLayoutItem* item = row->takeAt(0)) {
        delete item->widget();
        delete item;
    }
    for (int i = 0; i < thumbnails.size(); ++i) {
        auto* b = new QToolButton(images_);
        b->setIcon(QPixmap::fromImage(thumbnails[i]));
        b->setIconSize(thumbnails[i].size().boundedTo(QSize(160, 160)));
        b->setAutoRaise(true);
        b->setToolTip(tr("Open the image"));
        b->setAccessibleName(tr("Attached image %1").arg(i + 1));
        const QByteArray original = i < originals.size() ? originals[i] : QByteArray();
        connect(b, &QToolButton::clicked, this, [this, original] { emit image_opened(original); });
        row->addWidget(b);
    }
    static_cast<QHBoxLayout*>(row)->addStretch();
    images_->setVisible(!thumbnails.isEmpty());
}

void MessageWidget::set_stats(const QString& line) {
    stats_->setText(line);
    stats_->setVisible(!line.isEmpty());
}

void MessageWidget::set_streaming(bool on) { streaming_ = on; }

void MessageWidget::set_can_regenerate(bool on) { regenerate_->setVisible(on); }

ChatView::ChatView(QWidget* parent) : QScrollArea(parent) {
    setWidgetResizable(true);
    setFrameShape(QFrame::NoFrame);
    setAccessibleName(tr("Conversation"));
    container_ = new QWidget(this);
    layout_ = new QVBoxLayout(container_);
    layout_->setSpacing(2);
    placeholder_ = new QLabel(container_);
    placeholder_->setWordWrap(true);
    placeholder_->setAlignment(Qt::AlignCenter);
    placeholder_->setTextFormat(Qt::RichText);
    placeholder_->setMargin(32);
    placeholder_->setTextInteractionFlags(Qt::LinksAccessibleByMouse | Qt::LinksAccessibleByKeyboard);
    connect(placeholder_, &QLabel::linkActivated, this, &ChatView::link_activated);
    layout_->addWidget(placeholder_);
    layout_->addStretch();
    setWidget(container_);
    // Follow the end while the user is at the end; stop following when they scroll up.
    connect(verticalScrollBar(), &QScrollBar::valueChanged, this, [this](int v) {
        following_ = v >= verticalScrollBar()->maximum() - 4;
    });
    connect(verticalScrollBar(), &QScrollBar::rangeChanged, this, [this](int, int max) {
        if (following_) verticalScrollBar()->setValue(max);
    });
}

MessageWidget* ChatView::add_message(const QString& role, const QString& author) {
    auto* m = new MessageWidget(role, author, container_);
    layout_->insertWidget(layout_->count() - 1, m);
    messages_.push_back(m);
    placeholder_->hide();
    following_ = true;
    return m;
}

void ChatView::clear_messages() {
    for (auto* m : messages_) delete m;
    messages_.clear();
    placeholder_->setVisible(!placeholder_->text().isEmpty());
}

void ChatView::remove_from(MessageWidget* m) {
    const int i = int(messages_.indexOf(m));
    if (i < 0) return;
    while (messages_.size() > i) delete messages_.takeLast();
    placeholder_->setVisible(messages_.isEmpty() && !placeholder_->text().isEmpty());
}

void ChatView::remove(MessageWidget* m) {
    if (messages_.removeOne(m)) delete m;
    placeholder_->setVisible(messages_.isEmpty() && !placeholder_->text().isEmpty());
}

void ChatView::scroll_to_end_if_following() {
    if (following_) verticalScrollBar()->setValue(verticalScrollBar()->maximum());
}

void ChatView::set_placeholder(const QString& rich_text) {
    placeholder_->setText(rich_text);
    placeholder_->setVisible(messages_.isEmpty() && !rich_text.isEmpty());
}

}  // namespace lumen::ui
