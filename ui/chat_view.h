#pragma once
// The transcript, drawn by the view itself rather than by a widget per message. Each message is
// a column of blocks (its author, its images, paragraphs and code of a few thousand characters at
// most, a footer with timings and actions). A block is laid out only when it comes near the
// viewport (its height is estimated until then) and only visible blocks are painted, so a
// 100,000-token reply or a 500-message chat costs what a screenful costs; a streaming reply
// re-lays only the block that grew. Heights above the viewport that change on measuring keep
// what the user looks at in place, and the view follows the end unless the user scrolls up.
#include <QAbstractScrollArea>
#include <QByteArray>
#include <QList>
#include <QPixmap>
#include <QString>
#include <memory>
#include <vector>

class QLabel;
class QTextDocument;

namespace lumen::ui {

struct TranscriptMessage {
    qint64 id = 0;            // in the history store
    QString role;             // "user" or "assistant"
    QString author;           // "You", or the model that wrote the reply
    QString text;             // as written; replies are shown as Markdown
    QList<QByteArray> images; // the attached files, in order
    QString stats;            // how a reply ended and its timings, under it
    QString note;             // a quiet line above the message ("the model sees from here on")
    bool can_regenerate = false;  // a reply: write it again; a question without reply: answer it
    bool can_continue = false;    // a reply cut at the length limit
    int version = 1, versions = 1;  // which of a reply's regenerated versions is shown
};

class ChatView : public QAbstractScrollArea {
    Q_OBJECT
public:
    explicit ChatView(QWidget* parent = nullptr);
    ~ChatView() override;

    const QList<TranscriptMessage>& messages() const { return messages_; }
    int index_of(qint64 id) const;  // -1 when absent
    int add_message(const TranscriptMessage& m);  // returns its index
    void set_text(int index, const QString& text);
    void set_stats(int index, const QString& stats);
    void set_message_id(int index, qint64 id);
    void set_can_regenerate(int index, bool on);
    void set_can_continue(int index, bool on);
    void set_note(int index, const QString& note);
    void set_author(int index, const QString& author);
    void set_version(int index, int version, int versions);
    void insert_message(int index, const TranscriptMessage& m);
    void remove(int index);
    void remove_from(int index);  // the message and every later one
    void clear_messages();
    void set_placeholder(const QString& rich_text);  // shown when there are no messages
    bool following() const { return following_; }
    void scroll_to_end();
    QString selected_text();

    // Where things are drawn, in viewport coordinates (empty when not laid out): the last line
    // of a message's text, and its footer with the action buttons.
    QRect last_line_rect(int index);
    QRect footer_rect(int index);
    int laid_out_blocks() const;  // blocks holding a text layout now (what the view keeps in memory)

signals:
    void regenerate_requested(qint64 id);
    void continue_requested(qint64 id);
    void version_requested(qint64 id, int step);  // -1: the older version, +1: the newer
    void edit_requested(qint64 id);
    void delete_requested(qint64 id);
    void image_opened(const QByteArray& image);
    void link_activated(const QString& link);  // a link in the placeholder

protected:
    void paintEvent(QPaintEvent* e) override;
    void resizeEvent(QResizeEvent* e) override;
    void scrollContentsBy(int dx, int dy) override;
    void mousePressEvent(QMouseEvent* e) override;
    void mouseMoveEvent(QMouseEvent* e) override;
    void mouseReleaseEvent(QMouseEvent* e) override;
    void mouseDoubleClickEvent(QMouseEvent* e) override;
    void leaveEvent(QEvent* e) override;
    void keyPressEvent(QKeyEvent* e) override;
    void contextMenuEvent(QContextMenuEvent* e) override;
    void changeEvent(QEvent* e) override;

private:
    enum class Kind { Note, Header, Images, Prose, Plain, Code, Footer };
    struct Block {
        Kind kind = Kind::Prose;
        QString text;      // Markdown, plain text or code
        QString language;  // code
        bool group_start = true, group_end = true;  // code split into several blocks
        int height = 0;            // measured at `measured_width`, else an estimate
        int measured_width = -1;
        std::unique_ptr<QTextDocument> doc;  // kept only near the viewport
    };
    static bool has_text(Kind k) { return k == Kind::Prose || k == Kind::Plain || k == Kind::Code; }
    struct Item {
        std::vector<Block> blocks;
        QList<QPixmap> thumbnails;  // made when first shown
    };
    struct Row {  // a block's place in the flat column
        int message = 0, block = 0;
        int top = 0;
    };
    struct Position {  // a place in the text, for selections
        int message = -1, block = 0, offset = 0;
        bool valid() const { return message >= 0; }
        auto operator<=>(const Position&) const = default;
    };
    enum class Action { None, Copy, Regenerate, Continue, Edit, Delete, CopyCode, Image, Older, Newer, VersionLabel };
    QString action_label(Action a, int message) const;
    struct Hit {
        int message = -1, block = 0;
        Action action = Action::None;
        int image = -1;
        QString link;
        Position text;  // valid on a text block
    };

    std::vector<Block> blocks_for(const TranscriptMessage& m) const;
    void restructure(int index);
    void relayout();
    void measure_visible();
    void measure(int message, int block);
    QTextDocument* document(int message, int block);
    int estimate(const Block& b) const;
    int text_width() const;
    int column_left() const;
    int block_extra(const Block& b) const;  // the space a block takes besides its text
    QRect block_rect(const Row& r) const;
    int row_at(int y) const;  // y in content coordinates
    void paint_block(QPainter& p, const Row& r, const QRect& rect);
    QList<std::pair<Action, QRect>> footer_actions(int message, const QRect& rect) const;
    QRect code_copy_rect(const QRect& rect) const;
    QList<QRect> thumbnail_rects(int message, const QRect& rect);
    void make_thumbnails(int message);
    Hit hit(const QPoint& viewport_pos);
    void activate(Action a, int message, int block, int image);
    void copy_text(const QString& text);
    void trim_documents(int first_row, int last_row);
    std::pair<int, int> selection_in(int message, int block);

    QList<TranscriptMessage> messages_;
    std::vector<Item> items_;
    std::vector<Row> rows_;
    std::vector<int> first_row_;  // of each message
    int content_height_ = 0;
    bool rows_dirty_ = true;
    bool following_ = true;
    bool setting_value_ = false;
    // What the user looks at: kept in place when heights above it change.
    int anchor_message_ = -1, anchor_block_ = 0, anchor_offset_ = 0;
    Position selection_anchor_, selection_focus_;
    bool selecting_ = false;
    Hit hover_;
    QLabel* empty_text_;  // what an empty conversation says
};

}  // namespace lumen::ui
