#pragma once
// The sidebar: new chat, search, and every conversation (newest first) with rename and delete.
#include <QWidget>

#include "ui/history_store.h"

class QLineEdit;
class QListWidget;
class QListWidgetItem;

namespace lumen::ui {

class ConversationList : public QWidget {
    Q_OBJECT
public:
    ConversationList(HistoryStore& store, QWidget* parent = nullptr);

    void reload();                   // from the store, keeping the selection
    void select(qint64 conversation);  // 0: none
    qint64 selected() const;
    QListWidget* list() const { return list_; }

public slots:
    void rename_selected();
    void delete_selected();

signals:
    void new_requested();
    void selected_changed(qint64 conversation);  // 0 when none
    void deleted(qint64 conversation);

private:
    HistoryStore& store_;
    QLineEdit* search_;
    QListWidget* list_;
    bool reloading_ = false;
};

}  // namespace lumen::ui
