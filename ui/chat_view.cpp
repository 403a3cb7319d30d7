#include "ui/chat_view.h"

// One file, one concept, over 600 lines: the blocks are measured, painted and hit-tested against
// the same geometry (block_rect, the code header, the footer's actions, the selection); apart,
// each part would reach into the others' state.

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QBuffer>
#include <QClipboard>
#include <QContextMenuEvent>
#include <QDesktopServices>
#include <QFontDatabase>
#include <QImageReader>
#include <QLabel>
#include <QMenu>
#include <QPainter>
#include <QScrollBar>
#include <QTextBlock>
#include <QTextDocument>
#include <QTextDocumentFragment>
#include <QTextLayout>
#include <QUrl>
#include <algorithm>
#include <cmath>

#include "ui/markdown_segments.h"
#include "ui/transcript_accessible.h"

namespace lumen::ui {
namespace {

// A block holds at most about this many characters, so that the block a stream grows is cheap
// to lay out again; a longer paragraph is cut at a line break (else at a space) past it.
constexpr int kBlockChars = 2000;
constexpr int kCodeLines = 80;
constexpr int kColumnMax = 880;  // a readable line length, centred in a wide window
constexpr int kSideMargin = 16;
constexpr int kPad = 14;         // inside a message
constexpr int kCodePad = 10;     // inside a code block
constexpr int kMessageGap = 14;  // between messages
constexpr int kThumbnail = 160;

QColor blend(const QColor& a, const QColor& b, double t) {
    return QColor::fromRgbF(float(a.redF() * (1 - t) + b.redF() * t), float(a.greenF() * (1 - t) + b.greenF() * t),
                            float(a.blueF() * (1 - t) + b.blueF() * t));
}

}  // namespace

ChatView::ChatView(QWidget* parent) : QAbstractScrollArea(parent) {
    install_transcript_accessibility();
    setFrameShape(QFrame::NoFrame);
    setAccessibleName(tr("Conversation"));
    setFocusPolicy(Qt::StrongFocus);
    setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    viewport()->setBackgroundRole(QPalette::Window);
    viewport()->setMouseTracking(true);
    empty_text_ = new QLabel(viewport());
    empty_text_->setWordWrap(true);
    empty_text_->setAlignment(Qt::AlignCenter);
    empty_text_->setTextFormat(Qt::RichText);
    empty_text_->setMargin(32);
    empty_text_->setTextInteractionFlags(Qt::LinksAccessibleByMouse | Qt::LinksAccessibleByKeyboard);
    empty_text_->hide();
    connect(empty_text_, &QLabel::linkActivated, this, &ChatView::link_activated);
}

ChatView::~ChatView() = default;

int ChatView::index_of(qint64 id) const {
    for (int i = 0; i < messages_.size(); ++i)
        if (messages_[i].id == id) return i;
    return -1;
}

int ChatView::add_message(const TranscriptMessage& m) {
    insert_message(int(messages_.size()), m);
    following_ = true;
    return int(messages_.size()) - 1;
}

void ChatView::insert_message(int index, const TranscriptMessage& m) {
    index = std::clamp(index, 0, int(messages_.size()));
    messages_.insert(index, m);
    items_.emplace(items_.begin() + index);
    restructure(index);
    selection_anchor_ = selection_focus_ = {};
    hover_ = {};
    if (anchor_message_ >= index) ++anchor_message_;
    empty_text_->hide();
    viewport()->update();
}

void ChatView::set_text(int index, const QString& text) {
    if (index < 0 || index >= messages_.size() || messages_[index].text == text) return;
    messages_[index].text = text;
    restructure(index);
    viewport()->update();
}

void ChatView::set_stats(int index, const QString& stats) {
    if (index < 0 || index >= messages_.size()) return;
    messages_[index].stats = stats;
    viewport()->update();
}

void ChatView::set_message_id(int index, qint64 id) {
    if (index >= 0 && index < messages_.size()) messages_[index].id = id;
}

void ChatView::set_can_regenerate(int index, bool on) {
    if (index < 0 || index >= messages_.size() || messages_[index].can_regenerate == on) return;
    messages_[index].can_regenerate = on;
    viewport()->update();
}

void ChatView::set_can_continue(int index, bool on) {
    if (index < 0 || index >= messages_.size() || messages_[index].can_continue == on) return;
    messages_[index].can_continue = on;
    viewport()->update();
}

void ChatView::set_note(int index, const QString& note) {
    if (index < 0 || index >= messages_.size() || messages_[index].note == note) return;
    messages_[index].note = note;
    restructure(index);
    viewport()->update();
}

void ChatView::set_author(int index, const QString& author) {
    if (index < 0 || index >= messages_.size() || messages_[index].author == author) return;
    messages_[index].author = author;
    restructure(index);
    viewport()->update();
}

void ChatView::set_version(int index, int version, int versions) {
    if (index < 0 || index >= messages_.size()) return;
    messages_[index].version = version;
    messages_[index].versions = versions;
    viewport()->update();
}

void ChatView::remove(int index) {
    if (index < 0 || index >= messages_.size()) return;
    messages_.removeAt(index);
    items_.erase(items_.begin() + index);
    selection_anchor_ = selection_focus_ = {};
    hover_ = {};
    if (anchor_message_ >= index) anchor_message_ = -1;
    rows_dirty_ = true;
    empty_text_->setVisible(messages_.isEmpty() && !empty_text_->text().isEmpty());
    viewport()->update();
}

void ChatView::remove_from(int index) {
    while (index >= 0 && index < messages_.size()) remove(int(messages_.size()) - 1);
}

void ChatView::clear_messages() {
    messages_.clear();
    items_.clear();
    selection_anchor_ = selection_focus_ = {};
    hover_ = {};
    anchor_message_ = -1;
    following_ = true;
    rows_dirty_ = true;
    empty_text_->setVisible(!empty_text_->text().isEmpty());
    viewport()->update();
}

void ChatView::set_placeholder(const QString& rich_text) {
    empty_text_->setText(rich_text);
    empty_text_->setVisible(messages_.isEmpty() && !rich_text.isEmpty());
}

void ChatView::scroll_to_end() {
    following_ = true;
    viewport()->update();
}

// --- structure and measurement ---

std::vector<ChatView::Block> ChatView::blocks_for(const TranscriptMessage& m) const {
    std::vector<Block> out;
    auto add = [&](Kind kind, const QString& text, const QString& language = {}) {
        Block b;
        b.kind = kind;
        b.text = text;
        b.language = language;
        out.push_back(std::move(b));
    };
    if (!m.note.isEmpty()) add(Kind::Note, m.note);
    add(Kind::Header, m.author);
    if (!m.images.isEmpty()) add(Kind::Images, {});
    if (m.role == "user") {
        // The user's text is shown as written.
        if (!m.text.isEmpty())
            for (const QString& piece : split_into_blocks(m.text, kBlockChars)) add(Kind::Plain, piece);
    } else {
        for (const Segment& s : split_markdown(m.text)) {
            if (s.kind == Segment::Kind::Prose) {
                for (const QString& p : markdown_paragraphs(s.text, kBlockChars)) add(Kind::Prose, p);
                continue;
            }
            const QStringList lines = s.text.split('\n');
            const std::size_t first = out.size();
            for (qsizetype i = 0; i < lines.size(); i += kCodeLines)
                add(Kind::Code, lines.mid(i, kCodeLines).join('\n'), s.language);
            for (std::size_t i = first; i < out.size(); ++i) {
                out[i].group_start = i == first;
                out[i].group_end = i + 1 == out.size();
            }
        }
    }
    add(Kind::Footer, {});
    return out;
}

void ChatView::restructure(int index) {
    std::vector<Block> fresh = blocks_for(messages_[index]);
    std::vector<Block>& old = items_[std::size_t(index)].blocks;
    // Blocks that did not change keep their layout: while a reply streams, only its last grows,
    // and only the new ones are estimated.
    for (std::size_t i = 0; i < fresh.size(); ++i) {
        Block& f = fresh[i];
        if (i < old.size() && old[i].kind == f.kind && old[i].text == f.text && old[i].language == f.language &&
            old[i].group_start == f.group_start && old[i].group_end == f.group_end)
            f = std::move(old[i]);
        else
            f.height = estimate(f);
    }
    old = std::move(fresh);
    if (messages_[index].images.size() != items_[std::size_t(index)].thumbnails.size())
        items_[std::size_t(index)].thumbnails.clear();
    rows_dirty_ = true;
}

int ChatView::text_width() const {
    const int column = std::min(viewport()->width() - 2 * kSideMargin, kColumnMax);
    return std::max(column - 2 * kPad, 80);
}

int ChatView::column_left() const { return std::max(kSideMargin, (viewport()->width() - text_width() - 2 * kPad) / 2); }

int ChatView::block_extra(const Block& b) const {
    const QFontMetrics fm(font());
    switch (b.kind) {
    case Kind::Note: return fm.height() + 16;
    case Kind::Header: return fm.height() + 14;
    case Kind::Images: return 8;
    case Kind::Prose:
    case Kind::Plain: return 6;
    case Kind::Code: return (b.group_start ? fm.height() + 10 : 0) + (b.group_end ? kCodePad + 8 : 0);
    case Kind::Footer: return fm.height() + 10 + kMessageGap;
    }
    return 0;
}

int ChatView::estimate(const Block& b) const {
    if (b.kind == Kind::Note || b.kind == Kind::Header || b.kind == Kind::Footer) return block_extra(b);
    if (b.kind == Kind::Images) return kThumbnail + block_extra(b);
    const QFontMetrics fm(b.kind == Kind::Code ? QFontDatabase::systemFont(QFontDatabase::FixedFont) : font());
    const int width = std::max(text_width() - (b.kind == Kind::Code ? 2 * kCodePad : 0), 40);
    const int per_line = std::max(1, width / std::max(1, fm.averageCharWidth()));
    int lines = 0;
    for (const QString& l : b.text.split('\n')) lines += std::max<int>(1, int((l.size() + per_line - 1) / per_line));
    return lines * fm.lineSpacing() + block_extra(b);
}

QTextDocument* ChatView::document(int message, int block) {
    Block& b = items_[std::size_t(message)].blocks[std::size_t(block)];
    if (!has_text(b.kind)) return nullptr;
    const int width = text_width() - (b.kind == Kind::Code ? 2 * kCodePad : 0);
    if (!b.doc) {
        b.doc = std::make_unique<QTextDocument>();
        b.doc->setDocumentMargin(0);
        QTextOption option = b.doc->defaultTextOption();
        option.setWrapMode(QTextOption::WrapAtWordBoundaryOrAnywhere);  // a long URL wraps too
        b.doc->setDefaultTextOption(option);
        if (b.kind == Kind::Code) {
            QFont mono = QFontDatabase::systemFont(QFontDatabase::FixedFont);
            mono.setPointSizeF(font().pointSizeF() > 0 ? font().pointSizeF() : mono.pointSizeF());
            b.doc->setDefaultFont(mono);
            b.doc->setPlainText(b.text);
        } else {
            b.doc->setDefaultFont(font());
            if (b.kind == Kind::Prose) b.doc->setMarkdown(b.text);
            else b.doc->setPlainText(b.text);
        }
    }
    if (b.doc->textWidth() != width) b.doc->setTextWidth(width);
    return b.doc.get();
}

void ChatView::make_thumbnails(int message) {
    Item& item = items_[std::size_t(message)];
    if (!item.thumbnails.isEmpty() || messages_[message].images.isEmpty()) return;
    // Made from the original at the screen's pixel density, so they are sharp at 2x too.
    const qreal dpr = devicePixelRatioF();
    for (const QByteArray& bytes : messages_[message].images) {
        QBuffer buffer;
        buffer.setData(bytes);
        QImageReader reader(&buffer);
        reader.setAutoTransform(true);
        QImage image = reader.read();
        QPixmap pixmap;
        if (!image.isNull()) {
            const QSize box = QSize(kThumbnail, kThumbnail) * dpr;
            if (image.width() > box.width() || image.height() > box.height())
                image = image.scaled(box, Qt::KeepAspectRatio, Qt::SmoothTransformation);
            pixmap = QPixmap::fromImage(image);
            pixmap.setDevicePixelRatio(std::max(dpr, 1.0));
        }
        item.thumbnails << pixmap;
    }
}

void ChatView::measure(int message, int block) {
    Block& b = items_[std::size_t(message)].blocks[std::size_t(block)];
    const int width = text_width();
    if (b.measured_width == width) return;
    if (QTextDocument* doc = document(message, block)) {
        b.height = int(std::ceil(doc->size().height())) + block_extra(b);
    } else if (b.kind == Kind::Images) {
        make_thumbnails(message);
        int tallest = 24;
        for (const QPixmap& p : items_[std::size_t(message)].thumbnails)
            tallest = std::max(tallest, int(std::ceil(p.height() / p.devicePixelRatio())));
        b.height = tallest + block_extra(b);
    } else {
        b.height = block_extra(b);
    }
    b.measured_width = width;
}

void ChatView::relayout() {
    if (rows_dirty_) {
        rows_.clear();
        first_row_.assign(items_.size(), 0);
        for (std::size_t m = 0; m < items_.size(); ++m) {
            first_row_[m] = int(rows_.size());
            for (std::size_t b = 0; b < items_[m].blocks.size(); ++b) rows_.push_back({int(m), int(b), 0});
        }
        rows_dirty_ = false;
    }
    int y = 8;
    for (Row& r : rows_) {
        r.top = y;
        y += items_[std::size_t(r.message)].blocks[std::size_t(r.block)].height;
    }
    content_height_ = y;
    QScrollBar* bar = verticalScrollBar();
    const int max = std::max(0, content_height_ - viewport()->height());
    int value = bar->value();
    if (following_) {
        value = max;
    } else if (anchor_message_ >= 0 && anchor_message_ < int(items_.size())) {
        const int b = std::min<int>(anchor_block_, int(items_[std::size_t(anchor_message_)].blocks.size()) - 1);
        value = rows_[std::size_t(first_row_[std::size_t(anchor_message_)] + b)].top + anchor_offset_;
    }
    setting_value_ = true;
    bar->blockSignals(true);
    bar->setRange(0, max);
    bar->setPageStep(viewport()->height());
    bar->setSingleStep(QFontMetrics(font()).lineSpacing() * 3);
    bar->setValue(std::clamp(value, 0, max));
    bar->blockSignals(false);
    setting_value_ = false;
}

int ChatView::row_at(int y) const {
    // The last row whose top is at or above y.
    auto it = std::upper_bound(rows_.begin(), rows_.end(), y, [](int v, const Row& r) { return v < r.top; });
    return it == rows_.begin() ? 0 : int(it - rows_.begin()) - 1;
}

void ChatView::measure_visible() {
    // Measuring a block changes the positions below it (and the scroll range), so this repeats
    // until every block in and near the viewport has its real height.
    int first = 0, last = -1;
    for (int pass = 0; pass < 12; ++pass) {
        relayout();
        if (rows_.empty()) return;
        const int top = verticalScrollBar()->value();
        const int h = viewport()->height();
        first = row_at(std::max(0, top - h / 2));
        last = row_at(top + h + h / 2);
        bool changed = false;
        for (int r = first; r <= last; ++r) {
            Block& b = items_[std::size_t(rows_[std::size_t(r)].message)].blocks[std::size_t(rows_[std::size_t(r)].block)];
            if (b.measured_width != text_width()) {
                measure(rows_[std::size_t(r)].message, rows_[std::size_t(r)].block);
                changed = true;
            }
        }
        if (!changed) break;
    }
    trim_documents(first, last);
}

void ChatView::trim_documents(int first_row, int last_row) {
    // Text layouts are kept for what is on screen and near it; everything else holds only its
    // height, so the view's memory does not grow with the length of the chat.
    for (std::size_t r = 0; r < rows_.size(); ++r) {
        if (int(r) >= first_row && int(r) <= last_row) continue;
        Block& b = items_[std::size_t(rows_[r].message)].blocks[std::size_t(rows_[r].block)];
        if (b.doc) b.doc.reset();
    }
}

int ChatView::laid_out_blocks() const {
    int n = 0;
    for (const Item& item : items_)
        for (const Block& b : item.blocks) n += b.doc != nullptr;
    return n;
}

QRect ChatView::block_rect(const Row& r) const {
    const Block& b = items_[std::size_t(r.message)].blocks[std::size_t(r.block)];
    return QRect(column_left(), r.top - verticalScrollBar()->value(), text_width() + 2 * kPad, b.height);
}

// --- painting ---

void ChatView::paintEvent(QPaintEvent*) {
    measure_visible();
    if (rows_.empty()) return;
    QPainter p(viewport());
    p.setRenderHint(QPainter::Antialiasing);
    const QPalette& pal = palette();
    const bool dark = pal.color(QPalette::Window).lightness() < 128;
    const int top = verticalScrollBar()->value();
    const int bottom = top + viewport()->height();
    const int first = row_at(top);
    // The user's messages sit on a tinted band; replies on the window colour.
    const QColor band = blend(pal.color(QPalette::Window), pal.color(QPalette::Highlight), dark ? 0.12 : 0.07);
    for (int m = rows_[std::size_t(first)].message; m < int(items_.size()); ++m) {
        const bool noted = !messages_[m].note.isEmpty();
        const Row& head = rows_[std::size_t(first_row_[std::size_t(m)] + (noted ? 1 : 0))];
        if (head.top > bottom) break;
        if (messages_[m].role != "user") continue;
        const Row& foot = rows_[std::size_t(first_row_[std::size_t(m)]) + items_[std::size_t(m)].blocks.size() - 1];
        const int end = foot.top + items_[std::size_t(m)].blocks.back().height - kMessageGap;
        p.setPen(Qt::NoPen);
        p.setBrush(band);
        p.drawRoundedRect(QRect(column_left(), head.top - top, text_width() + 2 * kPad, end - head.top), 10, 10);
    }
    for (int r = first; r < int(rows_.size()) && rows_[std::size_t(r)].top < bottom; ++r)
        paint_block(p, rows_[std::size_t(r)], block_rect(rows_[std::size_t(r)]));
}

std::pair<int, int> ChatView::selection_in(int message, int block) {
    if (!selection_anchor_.valid()) return {-1, -1};
    const Position lo = std::min(selection_anchor_, selection_focus_);
    const Position hi = std::max(selection_anchor_, selection_focus_);
    const std::pair<int, int> here{message, block};
    if (here < std::pair{lo.message, lo.block} || here > std::pair{hi.message, hi.block}) return {-1, -1};
    const int start = here == std::pair{lo.message, lo.block} ? lo.offset : 0;
    const int end = here == std::pair{hi.message, hi.block} ? hi.offset : std::numeric_limits<int>::max();
    return start < end ? std::pair{start, end} : std::pair{-1, -1};
}

void ChatView::paint_block(QPainter& p, const Row& r, const QRect& rect) {
    const QPalette& pal = palette();
    const bool dark = pal.color(QPalette::Window).lightness() < 128;
    const QColor text = pal.color(QPalette::WindowText);
    const QColor muted = blend(pal.color(QPalette::Window), text, 0.62);
    const Block& b = items_[std::size_t(r.message)].blocks[std::size_t(r.block)];
    const TranscriptMessage& m = messages_[r.message];
    const int x = rect.left() + kPad;
    const QFontMetrics fm(font());
    switch (b.kind) {
    case Kind::Note: {
        // A thin rule with the note in the middle.
        const int mid = rect.top() + rect.height() / 2;
        const int w = fm.horizontalAdvance(b.text) + 24;
        const int left = rect.left() + kPad, right = rect.left() + kPad + text_width();
        const int centre = (left + right) / 2;
        p.setPen(blend(pal.color(QPalette::Window), text, 0.18));
        if (centre - w / 2 > left) {
            p.drawLine(left, mid, centre - w / 2, mid);
            p.drawLine(centre + w / 2, mid, right, mid);
        }
        p.setPen(muted);
        p.drawText(QRect(left, rect.top(), right - left, rect.height()), Qt::AlignCenter,
                   fm.elidedText(b.text, Qt::ElideRight, right - left));
        return;
    }
    case Kind::Header: {
        QFont bold = font();
        bold.setBold(true);
        p.setFont(bold);
        p.setPen(text);
        p.drawText(QRect(x, rect.top() + 10, text_width(), fm.height()), Qt::AlignLeft | Qt::AlignVCenter, m.author);
        p.setFont(font());
        return;
    }
    case Kind::Images: {
        const QList<QRect> rects = thumbnail_rects(r.message, rect);
        const QList<QPixmap>& thumbs = items_[std::size_t(r.message)].thumbnails;
        for (int i = 0; i < rects.size(); ++i) {
            if (!thumbs[i].isNull()) p.drawPixmap(rects[i], thumbs[i]);
            const bool hovered = hover_.message == r.message && hover_.action == Action::Image && hover_.image == i;
            p.setPen(QPen(hovered ? pal.color(QPalette::Highlight) : blend(pal.color(QPalette::Window), text, 0.2), hovered ? 2 : 1));
            p.setBrush(Qt::NoBrush);
            p.drawRoundedRect(QRectF(rects[i]).adjusted(0.5, 0.5, -0.5, -0.5), 4, 4);
        }
        return;
    }
    case Kind::Footer: {
        const QList<std::pair<Action, QRect>> actions = footer_actions(r.message, rect);
        const int actions_left = actions.isEmpty() ? rect.right() : actions.first().second.left();
        p.setPen(muted);
        const QRect stats(x, rect.top() + 4, std::max(0, actions_left - x - 8), fm.height());
        p.drawText(stats, Qt::AlignLeft | Qt::AlignVCenter, fm.elidedText(m.stats, Qt::ElideRight, stats.width()));
        for (const auto& [action, area] : actions) {
            const bool hovered = hover_.message == r.message && hover_.action == action;
            if (hovered) {
                p.setPen(Qt::NoPen);
                p.setBrush(blend(pal.color(QPalette::Window), text, 0.12));
                p.drawRoundedRect(area, 5, 5);
            }
            p.setPen(hovered ? text : muted);
            p.drawText(area, Qt::AlignCenter, action_label(action, r.message));
        }
        return;
    }
    case Kind::Code: {
        const QColor code_band = dark ? blend(pal.color(QPalette::Window), Qt::black, 0.32)
                                      : blend(pal.color(QPalette::Window), text, 0.05);
        QRect box(x, rect.top(), text_width(), rect.height() - (b.group_end ? 8 : 0));
        p.save();
        p.setClipRect(box);
        p.setPen(Qt::NoPen);
        p.setBrush(code_band);
        p.drawRoundedRect(box.adjusted(0, b.group_start ? 0 : -8, 0, b.group_end ? 0 : 8), 6, 6);
        p.restore();
        if (b.group_start) {
            p.setPen(muted);
            p.drawText(QRect(x + kCodePad, rect.top() + 4, text_width() / 2, fm.height()), Qt::AlignLeft | Qt::AlignVCenter,
                       b.language.isEmpty() ? tr("code") : b.language);
            const QRect copy = code_copy_rect(rect);
            const bool hovered = hover_.message == r.message && hover_.block == r.block && hover_.action == Action::CopyCode;
            p.setPen(hovered ? text : muted);
            p.drawText(copy, Qt::AlignCenter, tr("Copy"));
        }
        break;
    }
    case Kind::Prose:
    case Kind::Plain: break;
    }
    QTextDocument* doc = document(r.message, r.block);
    if (!doc) return;
    const QPoint origin(x + (b.kind == Kind::Code ? kCodePad : 0), rect.top() + (b.kind == Kind::Code && b.group_start ? fm.height() + 10 : 0));
    QAbstractTextDocumentLayout::PaintContext context;
    context.palette = pal;
    context.palette.setColor(QPalette::Text, text);
    context.clip = QRectF(viewport()->rect().translated(-origin));
    if (const auto [start, end] = selection_in(r.message, r.block); start >= 0) {
        QTextCursor cursor(doc);
        cursor.setPosition(std::min(start, doc->characterCount() - 1));
        cursor.setPosition(std::min(end, doc->characterCount() - 1), QTextCursor::KeepAnchor);
        QAbstractTextDocumentLayout::Selection selection;
        selection.cursor = cursor;
        selection.format.setBackground(pal.color(QPalette::Highlight));
        selection.format.setForeground(pal.color(QPalette::HighlightedText));
        context.selections << selection;
    }
    p.save();
    p.translate(origin);
    doc->documentLayout()->draw(&p, context);
    p.restore();
}

QString ChatView::action_label(Action a, int message) const {
    switch (a) {
    case Action::Copy: return tr("Copy");
    case Action::Regenerate: return messages_[message].role == "user" ? tr("Answer") : tr("Regenerate");
    case Action::Continue: return tr("Continue");
    case Action::Edit: return tr("Edit");
    case Action::Delete: return tr("Delete");
    case Action::CopyCode: return tr("Copy");
    case Action::Older: return QStringLiteral("‹");
    case Action::Newer: return QStringLiteral("›");
    case Action::VersionLabel: return tr("%1 / %2").arg(messages_[message].version).arg(messages_[message].versions);
    case Action::Image:
    case Action::None: break;
    }
    return {};
}

QList<std::pair<ChatView::Action, QRect>> ChatView::footer_actions(int message, const QRect& rect) const {
    const TranscriptMessage& m = messages_[message];
    QList<Action> actions;
    if (m.versions > 1) {
        if (m.version > 1) actions << Action::Older;
        actions << Action::VersionLabel;
        if (m.version < m.versions) actions << Action::Newer;
    }
    actions << Action::Copy;
    if (m.can_continue) actions << Action::Continue;
    if (m.can_regenerate) actions << Action::Regenerate;
    if (m.role == "user") actions << Action::Edit;
    actions << Action::Delete;
    const QFontMetrics fm(font());
    QList<std::pair<Action, QRect>> out;
    int right = rect.left() + kPad + text_width();
    for (auto it = actions.rbegin(); it != actions.rend(); ++it) {
        const int w = fm.horizontalAdvance(action_label(*it, message)) + 14;
        out.prepend({*it, QRect(right - w, rect.top() + 1, w, fm.height() + 6)});
        right -= w + 2;
    }
    return out;
}

QRect ChatView::code_copy_rect(const QRect& rect) const {
    const QFontMetrics fm(font());
    const int w = fm.horizontalAdvance(tr("Copy")) + 14;
    return QRect(rect.left() + kPad + text_width() - w - 4, rect.top() + 2, w, fm.height() + 4);
}

QList<QRect> ChatView::thumbnail_rects(int message, const QRect& rect) {
    make_thumbnails(message);
    QList<QRect> out;
    int x = rect.left() + kPad;
    for (const QPixmap& p : items_[std::size_t(message)].thumbnails) {
        const QSize size = p.isNull() ? QSize(48, 24) : (QSizeF(p.size()) / p.devicePixelRatio()).toSize();
        out << QRect(QPoint(x, rect.top()), size);
        x += size.width() + 8;
    }
    return out;
}

QRect ChatView::last_line_rect(int index) {
    measure_visible();
    if (index < 0 || index >= int(items_.size())) return {};
    const auto& blocks = items_[std::size_t(index)].blocks;
    for (int b = int(blocks.size()) - 1; b >= 0; --b) {
        QTextDocument* doc = document(index, b);
        if (!doc) continue;
        for (QTextBlock tb = doc->lastBlock(); tb.isValid(); tb = tb.previous()) {
            const QTextLayout* layout = tb.layout();
            if (!layout || layout->lineCount() == 0) continue;
            const QRectF line = layout->lineAt(layout->lineCount() - 1).rect().translated(
                doc->documentLayout()->blockBoundingRect(tb).topLeft());
            const Row& row = rows_[std::size_t(first_row_[std::size_t(index)] + b)];
            const QRect rect = block_rect(row);
            const int dx = rect.left() + kPad + (blocks[std::size_t(b)].kind == Kind::Code ? kCodePad : 0);
            const int dy = rect.top() + (blocks[std::size_t(b)].kind == Kind::Code && blocks[std::size_t(b)].group_start
                                             ? QFontMetrics(font()).height() + 10
                                             : 0);
            return line.translated(dx, dy).toAlignedRect();
        }
    }
    return {};
}

QRect ChatView::footer_rect(int index) {
    measure_visible();
    if (index < 0 || index >= int(items_.size())) return {};
    const Row& row = rows_[std::size_t(first_row_[std::size_t(index)]) + items_[std::size_t(index)].blocks.size() - 1];
    return block_rect(row).adjusted(0, 0, 0, -kMessageGap);
}

// --- interaction ---

ChatView::Hit ChatView::hit(const QPoint& pos) {
    Hit h;
    measure_visible();
    if (rows_.empty()) return h;
    const int y = pos.y() + verticalScrollBar()->value();
    const Row& row = rows_[std::size_t(row_at(y))];
    const QRect rect = block_rect(row);
    if (y >= row.top + rect.height()) return h;  // below the last message
    h.message = row.message;
    h.block = row.block;
    const Block& b = items_[std::size_t(row.message)].blocks[std::size_t(row.block)];
    h.text = {row.message, row.block, 0};
    switch (b.kind) {
    case Kind::Footer:
        for (const auto& [action, area] : footer_actions(row.message, rect))
            if (area.contains(pos) && action != Action::VersionLabel) h.action = action;
        return h;
    case Kind::Images: {
        const QList<QRect> rects = thumbnail_rects(row.message, rect);
        for (int i = 0; i < rects.size(); ++i)
            if (rects[i].contains(pos)) h.action = Action::Image, h.image = i;
        return h;
    }
    case Kind::Note:
    case Kind::Header: return h;
    case Kind::Code:
        if (b.group_start && code_copy_rect(rect).contains(pos)) {
            h.action = Action::CopyCode;
            return h;
        }
        break;
    case Kind::Prose:
    case Kind::Plain: break;
    }
    QTextDocument* doc = document(row.message, row.block);
    const QPoint origin(rect.left() + kPad + (b.kind == Kind::Code ? kCodePad : 0),
                        rect.top() + (b.kind == Kind::Code && b.group_start ? QFontMetrics(font()).height() + 10 : 0));
    const QPointF local = pos - origin;
    const int offset = doc->documentLayout()->hitTest(local, Qt::FuzzyHit);
    h.text.offset = std::max(0, offset);
    h.link = doc->documentLayout()->anchorAt(local);
    return h;
}

void ChatView::mousePressEvent(QMouseEvent* e) {
    setFocus(Qt::MouseFocusReason);
    if (e->button() != Qt::LeftButton) return;
    const Hit h = hit(e->position().toPoint());
    hover_ = h;
    if (h.action != Action::None || h.message < 0) return;
    selection_anchor_ = selection_focus_ = h.text;
    selecting_ = true;
    viewport()->update();
}

void ChatView::mouseMoveEvent(QMouseEvent* e) {
    const QPoint pos = e->position().toPoint();
    if (selecting_) {
        // Dragging past the top or bottom scrolls.
        if (pos.y() < 0) verticalScrollBar()->setValue(verticalScrollBar()->value() + pos.y());
        else if (pos.y() > viewport()->height()) verticalScrollBar()->setValue(verticalScrollBar()->value() + pos.y() - viewport()->height());
        const Hit h = hit(QPoint(pos.x(), std::clamp(pos.y(), 0, viewport()->height() - 1)));
        if (h.message >= 0) selection_focus_ = h.text;
        viewport()->update();
        return;
    }
    const Hit h = hit(pos);
    const bool changed = h.message != hover_.message || h.action != hover_.action || h.image != hover_.image || h.block != hover_.block;
    hover_ = h;
    const bool text_kind = h.message >= 0 && has_text(items_[std::size_t(h.message)].blocks[std::size_t(h.block)].kind);
    viewport()->setCursor(h.action != Action::None || !h.link.isEmpty() ? Qt::PointingHandCursor
                          : text_kind                                ? Qt::IBeamCursor
                                                                     : Qt::ArrowCursor);
    if (changed) viewport()->update();
}

void ChatView::mouseReleaseEvent(QMouseEvent* e) {
    if (e->button() != Qt::LeftButton) return;
    const Hit h = hit(e->position().toPoint());
    if (selecting_) {
        selecting_ = false;
        if (selection_anchor_ == selection_focus_) {
            selection_anchor_ = selection_focus_ = {};
            if (!h.link.isEmpty()) QDesktopServices::openUrl(QUrl(h.link));
        } else if (QApplication::clipboard()->supportsSelection()) {
            QApplication::clipboard()->setText(selected_text(), QClipboard::Selection);
        }
        viewport()->update();
        return;
    }
    if (h.action != Action::None && h.action == hover_.action && h.message == hover_.message) activate(h.action, h.message, h.block, h.image);
}

void ChatView::mouseDoubleClickEvent(QMouseEvent* e) {
    const Hit h = hit(e->position().toPoint());
    if (h.action != Action::None || h.message < 0) return;
    QTextDocument* doc = document(h.message, h.block);
    if (!doc) return;
    QTextCursor cursor(doc);
    cursor.setPosition(h.text.offset);
    cursor.select(QTextCursor::WordUnderCursor);
    selection_anchor_ = {h.message, h.block, cursor.selectionStart()};
    selection_focus_ = {h.message, h.block, cursor.selectionEnd()};
    selecting_ = false;
    viewport()->update();
}

void ChatView::leaveEvent(QEvent*) {
    hover_ = {};
    viewport()->update();
}

void ChatView::activate(Action a, int message, int block, int image) {
    if (message < 0 || message >= messages_.size()) return;
    const qint64 id = messages_[message].id;
    switch (a) {
    case Action::Copy: copy_text(messages_[message].text); break;
    case Action::Regenerate: emit regenerate_requested(id); break;
    case Action::Continue: emit continue_requested(id); break;
    case Action::Older: emit version_requested(id, -1); break;
    case Action::Newer: emit version_requested(id, +1); break;
    case Action::VersionLabel: break;
    case Action::Edit: emit edit_requested(id); break;
    case Action::Delete: emit delete_requested(id); break;
    case Action::Image:
        if (image >= 0 && image < messages_[message].images.size()) emit image_opened(messages_[message].images[image]);
        break;
    case Action::CopyCode: {
        const auto& blocks = items_[std::size_t(message)].blocks;
        int start = block;
        while (start > 0 && !blocks[std::size_t(start)].group_start) --start;
        QStringList code;
        for (int b = start; b < int(blocks.size()) && blocks[std::size_t(b)].kind == Kind::Code; ++b) {
            code << blocks[std::size_t(b)].text;
            if (blocks[std::size_t(b)].group_end) break;
        }
        copy_text(code.join('\n'));
        break;
    }
    case Action::None: break;
    }
}

void ChatView::copy_text(const QString& text) { QApplication::clipboard()->setText(text); }

QString ChatView::selected_text() {
    if (!selection_anchor_.valid() || selection_anchor_ == selection_focus_) return {};
    const Position lo = std::min(selection_anchor_, selection_focus_);
    const Position hi = std::max(selection_anchor_, selection_focus_);
    QString out;
    int last_message = -1;
    for (int m = lo.message; m <= hi.message && m < int(items_.size()); ++m) {
        const auto& blocks = items_[std::size_t(m)].blocks;
        for (int b = 0; b < int(blocks.size()); ++b) {
            const auto [start, end] = selection_in(m, b);
            if (start < 0) continue;
            const bool had_doc = blocks[std::size_t(b)].doc != nullptr;
            QTextDocument* doc = document(m, b);
            if (!doc) continue;
            QTextCursor cursor(doc);
            cursor.setPosition(std::min(start, doc->characterCount() - 1));
            cursor.setPosition(std::min(end, doc->characterCount() - 1), QTextCursor::KeepAnchor);
            QString piece = cursor.selection().toPlainText();
            if (!out.isEmpty()) out += last_message != m ? "\n\n" : blocks[std::size_t(b)].kind == Kind::Code && !blocks[std::size_t(b)].group_start ? "\n" : "\n\n";
            out += piece;
            last_message = m;
            if (!had_doc) items_[std::size_t(m)].blocks[std::size_t(b)].doc.reset();
        }
    }
    return out;
}

void ChatView::keyPressEvent(QKeyEvent* e) {
    if (e->matches(QKeySequence::Copy)) {
        if (const QString s = selected_text(); !s.isEmpty()) copy_text(s);
        return;
    }
    if (e->matches(QKeySequence::SelectAll) && !items_.empty()) {
        selection_anchor_ = {0, 0, 0};
        const int last = int(items_.size()) - 1;
        selection_focus_ = {last, int(items_[std::size_t(last)].blocks.size()) - 1, 0};
        viewport()->update();
        return;
    }
    if (e->key() == Qt::Key_Home && e->modifiers() == Qt::NoModifier) {
        verticalScrollBar()->setValue(0);
        return;
    }
    if (e->key() == Qt::Key_End && e->modifiers() == Qt::NoModifier) {
        scroll_to_end();
        return;
    }
    QAbstractScrollArea::keyPressEvent(e);
}

void ChatView::contextMenuEvent(QContextMenuEvent* e) {
    Hit h = hit(e->pos());
    if (e->reason() == QContextMenuEvent::Keyboard) {
        // The menu key acts on the selected text's message, else on the last one in view.
        h = {};
        measure_visible();
        if (selection_focus_.valid()) h.message = selection_focus_.message;
        else if (!rows_.empty()) h.message = rows_[std::size_t(row_at(verticalScrollBar()->value() + viewport()->height() - 1))].message;
    }
    QMenu menu(this);
    const QString selection = selected_text();
    if (!selection.isEmpty()) menu.addAction(tr("Copy selection"), this, [this, selection] { copy_text(selection); });
    if (h.message >= 0) {
        const int m = h.message;
        menu.addAction(tr("Copy message"), this, [this, m] { activate(Action::Copy, m, 0, -1); });
        if (messages_[m].can_continue) menu.addAction(tr("Continue"), this, [this, m] { activate(Action::Continue, m, 0, -1); });
        if (messages_[m].can_regenerate)
            menu.addAction(action_label(Action::Regenerate, m), this, [this, m] { activate(Action::Regenerate, m, 0, -1); });
        if (messages_[m].role == "user") menu.addAction(tr("Edit"), this, [this, m] { activate(Action::Edit, m, 0, -1); });
        menu.addAction(tr("Delete"), this, [this, m] { activate(Action::Delete, m, 0, -1); });
    }
    if (!menu.isEmpty())
        menu.exec(e->reason() == QContextMenuEvent::Keyboard && h.message >= 0
                      ? viewport()->mapToGlobal(footer_rect(h.message).center())
                      : e->globalPos());
}

// --- geometry changes ---

void ChatView::resizeEvent(QResizeEvent* e) {
    QAbstractScrollArea::resizeEvent(e);
    empty_text_->setGeometry(viewport()->rect());
    viewport()->update();  // blocks are measured again at the new width as they are painted
}

void ChatView::scrollContentsBy(int, int) {
    if (!setting_value_ && !rows_.empty()) {
        // The user scrolled: remember what is at the top, and whether the end is in view.
        QScrollBar* bar = verticalScrollBar();
        following_ = bar->value() >= bar->maximum() - 4;
        const Row& r = rows_[std::size_t(row_at(bar->value()))];
        anchor_message_ = r.message;
        anchor_block_ = r.block;
        anchor_offset_ = bar->value() - r.top;
    }
    viewport()->update();
}

void ChatView::changeEvent(QEvent* e) {
    if (e->type() == QEvent::FontChange) {
        for (Item& item : items_) {
            for (Block& b : item.blocks) {
                b.doc.reset();
                b.measured_width = -1;
            }
        }
        viewport()->update();
    }
    QAbstractScrollArea::changeEvent(e);
}
}  // namespace lumen::ui
