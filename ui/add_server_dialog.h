#pragma once
// Adding a remote OpenAI-compatible server: its address and API key, checked by asking it for
// its models before it is added (a server that cannot be reached now may still be added).
#include <QDialog>

class QDialogButtonBox;
class QLabel;
class QLineEdit;
class QPushButton;

namespace lumen::ui {

class RemoteServer;

class AddServerDialog : public QDialog {
    Q_OBJECT
public:
    explicit AddServerDialog(QWidget* parent = nullptr);

    QString url() const;
    QString api_key() const;

private:
    void check();

    QLineEdit* url_;
    QLineEdit* key_;
    QLabel* result_;
    QPushButton* add_;
    RemoteServer* probe_ = nullptr;
    bool checked_ = false;  // the server answered for what is entered now, or the user chose to add it anyway
};

}  // namespace lumen::ui
