#pragma once
// A one-line notice above the composer with one action: "Message deleted · Undo", "Editing an
// earlier message · Cancel". It goes away when its action is taken, when it is dismissed, or when
// its time (if any) runs out.
#include <QFrame>
#include <functional>

class QLabel;
class QPushButton;
class QTimer;

namespace lumen::ui {

class NoticeBar : public QFrame {
    Q_OBJECT
public:
    explicit NoticeBar(QWidget* parent = nullptr);

    // Shows `text` with a button named `action`; `on_action` runs when it is clicked, `on_expire`
    // when the notice goes any other way (replaced, dismissed, timed out). `kind` names it for
    // dismiss_kind().
    void show_notice(const QString& kind, const QString& text, const QString& action, std::function<void()> on_action,
                     std::function<void()> on_expire = {}, int timeout_ms = 0);
    void dismiss();  // runs on_expire
    void dismiss_kind(const QString& kind);  // dismisses the notice shown if it is of that kind
    bool active() const { return isVisibleTo(parentWidget()); }
    QString text() const;
    QPushButton* action_button() const { return action_; }

private:
    QLabel* text_;
    QPushButton* action_;
    QTimer* timer_;
    QString kind_;
    std::function<void()> on_action_, on_expire_;
};

}  // namespace lumen::ui
