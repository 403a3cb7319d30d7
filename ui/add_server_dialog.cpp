#include "ui/add_server_dialog.h"

#include <QDialogButtonBox>
#include <QFormLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QVBoxLayout>

#include "ui/remote_server.h"

namespace lumen::ui {

AddServerDialog::AddServerDialog(QWidget* parent) : QDialog(parent) {
    setWindowTitle(tr("Add a server"));
    auto* intro = new QLabel(tr("A server that speaks the OpenAI API: Lumen's own (Settings ▸ Server, or "
                                "<code>lumen-cli serve</code>), LMDeploy, vLLM, llama.cpp's llama-server, LM Studio, "
                                "Ollama and others. Its models appear in the model list."),
                             this);
    intro->setWordWrap(true);
    url_ = new QLineEdit(this);
    url_->setPlaceholderText("http://192.168.1.20:23333/v1");
    url_->setAccessibleName(tr("Server address"));
    key_ = new QLineEdit(this);
    key_->setEchoMode(QLineEdit::Password);
    key_->setPlaceholderText(tr("None"));
    key_->setAccessibleName(tr("API key"));
    result_ = new QLabel(this);
    result_->setWordWrap(true);
    result_->setTextInteractionFlags(Qt::TextSelectableByMouse);

    auto* buttons = new QDialogButtonBox(QDialogButtonBox::Cancel, this);
    add_ = buttons->addButton(tr("Add"), QDialogButtonBox::AcceptRole);
    add_->setDefault(true);
    add_->setEnabled(false);

    auto* form = new QFormLayout;
    form->addRow(tr("Address:"), url_);
    form->addRow(tr("API key:"), key_);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(intro);
    layout->addLayout(form);
    layout->addWidget(result_);
    layout->addWidget(buttons);

    auto changed = [this] {
        if (probe_) probe_->deleteLater();  // its answer is for what was entered before
        probe_ = nullptr;
        checked_ = false;
        add_->setText(tr("Add"));
        add_->setEnabled(!url_->text().trimmed().isEmpty());
        result_->clear();
    };
    connect(url_, &QLineEdit::textChanged, this, changed);
    connect(key_, &QLineEdit::textChanged, this, changed);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    connect(add_, &QPushButton::clicked, this, [this] {
        if (checked_) accept();
        else check();
    });
    resize(560, sizeHint().height());
}

QString AddServerDialog::url() const { return RemoteServer::normalized(url_->text()).toString(); }
QString AddServerDialog::api_key() const { return key_->text().trimmed(); }

void AddServerDialog::check() {
    // The server is asked for its models first: an address or key mistyped shows now, not at the first chat.
    probe_ = new RemoteServer(url_->text(), api_key(), this);
    add_->setEnabled(false);
    result_->setText(tr("Asking %1 for its models…").arg(url()));
    RemoteServer* probe = probe_;
    connect(probe, &RemoteServer::models_listed, this, [this, probe](const QStringList&) {
        if (probe != probe_) return;
        checked_ = true;
        accept();
    });
    connect(probe, &RemoteServer::failed, this, [this, probe](const QString& why) {
        if (probe != probe_) return;
        result_->setText(why + "\n" + tr("Correct the address or key, or add the server anyway to use it later."));
        checked_ = true;  // a second press adds it as it is
        add_->setText(tr("Add anyway"));
        add_->setEnabled(true);
    });
    probe->list_models();
}

}  // namespace lumen::ui
