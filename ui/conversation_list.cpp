#include "ui/conversation_list.h"

#include <QDate>
#include <QLocale>
#include <QRegularExpression>

#include <QAction>
#include <QInputDialog>
#include <QLineEdit>
#include <QListWidget>
#include <QMenu>
#include <QMessageBox>
#include <QPushButton>
#include <QVBoxLayout>

namespace lumen::ui {
namespace {

// Titles come from the first message, which may be Markdown: the list shows the words only.
QString plain_title(QString t) {
    static const QRegularExpression link(R"(\[([^\]]*)\]\([^)]*\))");
    static const QRegularExpression marks(R"((\*\*|__|`+|~~|^#+\s*|^>\s*))");
    t.replace(link, "\\1");
    t.replace(marks, QString());
    return t.simplified();
}

// The heading of the group a conversation last touched at `when` falls in, seen from `today`.
QString date_group(const QDate& when, const QDate& today) {
    const qint64 days = when.daysTo(today);
    if (days <= 0) return QObject::tr("Today");
    if (days == 1) return QObject::tr("Yesterday");
    if (days < 7) return QObject::tr("Previous 7 days");
    if (days < 30) return QObject::tr("Previous 30 days");
    if (when.year() == today.year()) return QLocale().monthName(when.month());
    return QString::number(when.year());
}

}  // namespace

ConversationList::ConversationList(HistoryStore& store, QWidget* parent) : QWidget(parent), store_(store) {
    auto* add = new QPushButton(tr("New chat"), this);
    add->setToolTip(tr("Start a new conversation (Ctrl+N)"));
    add->setAccessibleName(tr("New chat"));
    search_ = new QLineEdit(this);
    search_->setPlaceholderText(tr("Search conversations"));
    search_->setClearButtonEnabled(true);
    search_->setAccessibleName(tr("Search conversations"));
    list_ = new QListWidget(this);
    list_->setAccessibleName(tr("Conversations"));
    list_->setContextMenuPolicy(Qt::CustomContextMenu);
    list_->setUniformItemSizes(true);
    list_->setSpacing(1);

    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(8, 8, 4, 8);
    layout->addWidget(add);
    layout->addWidget(search_);
    layout->addWidget(list_, 1);

    auto* rename = new QAction(tr("Rename"), list_);
    rename->setShortcut(Qt::Key_F2);
    rename->setShortcutContext(Qt::WidgetShortcut);
    auto* remove = new QAction(tr("Delete"), list_);
    remove->setShortcut(QKeySequence::Delete);
    remove->setShortcutContext(Qt::WidgetShortcut);
    list_->addAction(rename);
    list_->addAction(remove);
    connect(rename, &QAction::triggered, this, &ConversationList::rename_selected);
    connect(remove, &QAction::triggered, this, &ConversationList::delete_selected);
    connect(list_, &QListWidget::customContextMenuRequested, this, [this, rename, remove](const QPoint& at) {
        if (!list_->itemAt(at)) return;
        QMenu menu(this);
        menu.addAction(rename);
        menu.addAction(remove);
        menu.exec(list_->viewport()->mapToGlobal(at));
    });
    connect(add, &QPushButton::clicked, this, &ConversationList::new_requested);
    connect(search_, &QLineEdit::textChanged, this, &ConversationList::reload);
    connect(list_, &QListWidget::currentItemChanged, this, [this](QListWidgetItem* item) {
        if (!reloading_) emit selected_changed(item ? item->data(Qt::UserRole).toLongLong() : 0);
    });
}

void ConversationList::reload() {
    const qint64 keep = selected();
    reloading_ = true;
    list_->clear();
    const QDate today = QDate::currentDate();
    QString group;
    for (const auto& c : store_.conversations(search_->text())) {
        // Newest first, under headings by when they were last used.
        if (const QString g = date_group(c.updated.date(), today); g != group) {
            group = g;
            auto* heading = new QListWidgetItem(g, list_);
            heading->setFlags(Qt::NoItemFlags);
            QFont f = heading->font();
            f.setBold(true);
            f.setPointSizeF(f.pointSizeF() * 0.9);
            heading->setFont(f);
            heading->setData(Qt::UserRole, qint64(0));
        }
        auto* item = new QListWidgetItem(plain_title(c.title), list_);
        item->setData(Qt::UserRole, c.id);
        item->setToolTip(c.title + "\n" + QLocale().toString(c.updated, QLocale::ShortFormat));
        if (c.id == keep) list_->setCurrentItem(item);
    }
    reloading_ = false;
}

void ConversationList::select(qint64 conversation) {
    reloading_ = true;
    list_->setCurrentItem(nullptr);
    for (int i = 0; i < list_->count(); ++i)
        if (conversation != 0 && list_->item(i)->data(Qt::UserRole).toLongLong() == conversation) list_->setCurrentRow(i);
    reloading_ = false;
}

qint64 ConversationList::selected() const {
    const auto* item = list_->currentItem();
    return item ? item->data(Qt::UserRole).toLongLong() : 0;
}

void ConversationList::rename_selected() {
    QListWidgetItem* item = list_->currentItem();
    if (!item) return;
    bool ok = false;
    const QString title = QInputDialog::getText(this, tr("Rename conversation"), tr("Title:"), QLineEdit::Normal, item->text(), &ok);
    if (!ok || title.trimmed().isEmpty()) return;
    store_.rename_conversation(item->data(Qt::UserRole).toLongLong(), title.trimmed());
    item->setText(title.trimmed());
}

void ConversationList::delete_selected() {
    QListWidgetItem* item = list_->currentItem();
    if (!item) return;
    if (QMessageBox::question(this, tr("Delete conversation"), tr("Delete \"%1\" and all its messages?").arg(item->text())) !=
        QMessageBox::Yes)
        return;
    const qint64 id = item->data(Qt::UserRole).toLongLong();
    store_.delete_conversation(id);
    reload();
    emit deleted(id);
}

}  // namespace lumen::ui
