#pragma once
// The transcript: one MessageWidget per message in a scroll area. A streaming reply updates only
// its own widget (the caller coalesces deltas), so the rest of the transcript never relays out.
#include <QFrame>
#include <QImage>
#include <QJsonObject>
#include <QList>
#include <QScrollArea>

class QLabel;
class QToolButton;
class QVBoxLayout;

namespace lumen::ui {

class MessageWidget : public QFrame {
    Q_OBJECT
public:
    MessageWidget(const QString& role, const QString& author, QWidget* parent = nullptr);

    const QString& role() const { return role_; }
    const QString& text() const { return text_; }
    qint64 message_id() const { return id_; }
    void set_message_id(qint64 id) { id_ = id; }
    void set_text(const QString& text);
    void set_images(const QList<QImage>& thumbnails, const QList<QByteArray>& originals);
    const QList<QByteArray>& images() const { return images_bytes_; }  // the attached files, in order
    void set_stats(const QString& line);
    void set_streaming(bool on);
    void set_can_regenerate(bool on);

signals:
    void copy_requested(lumen::ui::MessageWidget* m);
    void regenerate_requested(lumen::ui::MessageWidget* m);
    void edit_requested(lumen::ui::MessageWidget* m);
    void delete_requested(lumen::ui::MessageWidget* m);
    void image_opened(const QByteArray& image);

private:
    void rebuild_content();

    QString role_;
    QString text_;
    qint64 id_ = 0;
    QVBoxLayout* content_;
    QWidget* images_;
    QList<QByteArray> images_bytes_;
    QLabel* stats_;
    QToolButton* regenerate_;
    QList<QWidget*> segment_widgets_;
    QList<int> segment_kinds_;
    bool streaming_ = false;
};

class ChatView : public QScrollArea {
    Q_OBJECT
public:
    explicit ChatView(QWidget* parent = nullptr);

    MessageWidget* add_message(const QString& role, const QString& author);
    void clear_messages();
    void remove_from(MessageWidget* m);  // m and every later message
    void remove(MessageWidget* m);
    QList<MessageWidget*> messages() const { return messages_; }
    void scroll_to_end_if_following();
    void set_placeholder(const QString& rich_text);  // shown when there are no messages

signals:
    void link_activated(const QString& link);  // a link in the placeholder

private:
    QWidget* container_;
    QVBoxLayout* layout_;
    QLabel* placeholder_;
    QList<MessageWidget*> messages_;
    bool following_ = true;
};

}  // namespace lumen::ui
