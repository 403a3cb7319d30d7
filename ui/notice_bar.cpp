#include "ui/notice_bar.h"

#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QTimer>
#include <QToolButton>

namespace lumen::ui {

NoticeBar::NoticeBar(QWidget* parent) : QFrame(parent) {
    setObjectName("noticeBar");
    setFrameShape(QFrame::StyledPanel);
    text_ = new QLabel(this);
    text_->setWordWrap(true);
    action_ = new QPushButton(this);
    auto* close = new QToolButton(this);
    close->setText(QStringLiteral("✕"));
    close->setAutoRaise(true);
    close->setToolTip(tr("Dismiss"));
    close->setAccessibleName(tr("Dismiss"));
    timer_ = new QTimer(this);
    timer_->setSingleShot(true);
    auto* row = new QHBoxLayout(this);
    row->setContentsMargins(10, 4, 4, 4);
    row->addWidget(text_, 1);
    row->addWidget(action_);
    row->addWidget(close);
    hide();
    connect(action_, &QPushButton::clicked, this, [this] {
        auto act = std::move(on_action_);
        on_expire_ = nullptr;
        timer_->stop();
        hide();
        if (act) act();
    });
    connect(close, &QToolButton::clicked, this, &NoticeBar::dismiss);
    connect(timer_, &QTimer::timeout, this, &NoticeBar::dismiss);
}

void NoticeBar::show_notice(const QString& kind, const QString& text, const QString& action, std::function<void()> on_action,
                            std::function<void()> on_expire, int timeout_ms) {
    dismiss();  // the notice shown before ends as it would have
    kind_ = kind;
    text_->setText(text);
    action_->setText(action);
    action_->setAccessibleName(action);
    on_action_ = std::move(on_action);
    on_expire_ = std::move(on_expire);
    if (timeout_ms > 0) timer_->start(timeout_ms);
    show();
}

void NoticeBar::dismiss() {
    timer_->stop();
    on_action_ = nullptr;
    auto expire = std::move(on_expire_);
    on_expire_ = nullptr;
    hide();
    if (expire) expire();
}

void NoticeBar::dismiss_kind(const QString& kind) {
    if (active() && kind_ == kind) dismiss();
}

QString NoticeBar::text() const { return active() ? text_->text() : QString(); }

}  // namespace lumen::ui
