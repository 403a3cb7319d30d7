#include "ui/transcript_accessible.h"

#include <QAccessible>
#include <QAccessibleWidget>
#include <QHash>
#include <QPointer>
#include <QWindow>

#include "ui/chat_view.h"

namespace lumen::ui {
namespace {

// What screen readers see of the transcript: a list with one item per message, named by its
// author and holding its text (the view draws the messages itself, so it says what they are).
class MessageAccessible : public QAccessibleInterface {
public:
    MessageAccessible(ChatView* view, int index) : view_(view), index_(index) {}
    bool isValid() const override { return view_ && index_ < view_->messages().size(); }
    QObject* object() const override { return nullptr; }
    QWindow* window() const override { return view_ ? view_->window()->windowHandle() : nullptr; }
    QAccessibleInterface* focusChild() const override { return nullptr; }
    QAccessibleInterface* childAt(int, int) const override { return nullptr; }
    QAccessibleInterface* parent() const override { return view_ ? QAccessible::queryAccessibleInterface(view_) : nullptr; }
    QAccessibleInterface* child(int) const override { return nullptr; }
    int childCount() const override { return 0; }
    int indexOfChild(const QAccessibleInterface*) const override { return -1; }
    QString text(QAccessible::Text t) const override {
        if (!isValid()) return {};
        const TranscriptMessage& m = view_->messages()[index_];
        if (t == QAccessible::Name) return m.role == "user" ? ChatView::tr("Your message") : ChatView::tr("Reply from %1").arg(m.author);
        if (t == QAccessible::Value || t == QAccessible::Description) return m.stats.isEmpty() ? m.text : m.text + "\n" + m.stats;
        return {};
    }
    void setText(QAccessible::Text, const QString&) override {}
    QRect rect() const override { return {}; }
    QAccessible::Role role() const override { return QAccessible::ListItem; }
    QAccessible::State state() const override {
        QAccessible::State s;
        s.readOnly = true;
        return s;
    }

private:
    QPointer<ChatView> view_;
    int index_;
};

class TranscriptAccessible : public QAccessibleWidget {
public:
    explicit TranscriptAccessible(QWidget* w) : QAccessibleWidget(w, QAccessible::List) {}
    ~TranscriptAccessible() override {
        for (QAccessibleInterface* c : std::as_const(children_)) QAccessible::deleteAccessibleInterface(QAccessible::uniqueId(c));
    }
    int childCount() const override { return int(view()->messages().size()); }
    QAccessibleInterface* child(int index) const override {
        if (index < 0 || index >= childCount()) return nullptr;
        auto& kept = children_[index];
        if (!kept) {
            kept = new MessageAccessible(view(), index);
            QAccessible::registerAccessibleInterface(kept);
        }
        return kept;
    }
    int indexOfChild(const QAccessibleInterface* child) const override {
        for (auto it = children_.begin(); it != children_.end(); ++it)
            if (it.value() == child) return it.key();
        return -1;
    }

private:
    ChatView* view() const { return static_cast<ChatView*>(widget()); }
    mutable QHash<int, QAccessibleInterface*> children_;  // owned by QAccessible's cache
};

QAccessibleInterface* transcript_accessible(const QString& class_name, QObject* object) {
    if (class_name == QLatin1String("lumen::ui::ChatView") && object && object->isWidgetType())
        return new TranscriptAccessible(static_cast<QWidget*>(object));
    return nullptr;
}

}  // namespace

void install_transcript_accessibility() {
    static const bool installed = (QAccessible::installFactory(transcript_accessible), true);
    Q_UNUSED(installed);
}

}  // namespace lumen::ui
