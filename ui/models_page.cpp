#include "ui/models_page.h"

#include <QCheckBox>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QListWidget>
#include <QMessageBox>
#include <QPushButton>
#include <QStackedWidget>
#include <QTableView>
#include <QThread>
#include <QVBoxLayout>
#include <memory>

#include "engine/model/model_config.h"
#include "ui/add_server_dialog.h"
#include "ui/app_settings.h"
#include "ui/get_models_dialog.h"
#include "ui/model_list_model.h"
#include "ui/remote_entries.h"
#include "ui/remote_server.h"

namespace lumen::ui {

ModelsPage::ModelsPage(AppSettings& settings, QWidget* parent)
    : QWidget(parent), settings_(settings), model_(new ModelListModel(this)), remote_(new RemoteEntries(settings, this)) {
    auto* title = new QLabel(tr("Models"), this);
    QFont title_font = title->font();
    title_font.setPointSizeF(title_font.pointSizeF() * 1.6);
    title_font.setBold(true);
    title->setFont(title_font);
    auto* subtitle = new QLabel(tr("Hugging Face model folders as you downloaded them: safetensors weights, "
                                   "config.json and tokenizer files. Nothing is converted. Models on servers that "
                                   "speak the OpenAI API can be added too."),
                                this);
    subtitle->setWordWrap(true);

    folders_ = new QListWidget(this);
    folders_->setAccessibleName(tr("Model folders"));
    folders_->setMaximumHeight(folders_->fontMetrics().height() * 5);
    auto* add = new QPushButton(tr("Add folder…"), this);
    add->setAccessibleName(tr("Add a model folder"));
    remove_ = new QPushButton(tr("Remove"), this);
    remove_->setAccessibleName(tr("Remove the selected model folder"));
    remove_->setEnabled(false);
    servers_ = new QListWidget(this);
    servers_->setAccessibleName(tr("Remote servers"));
    servers_->setMaximumHeight(folders_->maximumHeight());
    auto* add_server = new QPushButton(tr("Add server…"), this);
    add_server->setAccessibleName(tr("Add a remote server"));
    remove_server_ = new QPushButton(tr("Remove"), this);
    remove_server_->setAccessibleName(tr("Remove the selected server"));
    remove_server_->setEnabled(false);
    auto* get = new QPushButton(tr("Get models…"), this);
    get->setAccessibleName(tr("Get models from Hugging Face"));
    auto* refresh = new QPushButton(tr("Rescan"), this);
    refresh->setAccessibleName(tr("Scan the model folders again"));
    hf_cache_ = new QCheckBox(tr("Include the Hugging Face cache (%1)").arg(QString::fromStdString(hf_hub_cache_dir().string())), this);
    hf_cache_->setChecked(settings_.scan_hf_cache());

    table_ = new QTableView(this);
    table_->setModel(model_);
    table_->setAccessibleName(tr("Models found"));
    table_->setSelectionBehavior(QAbstractItemView::SelectRows);
    table_->setSelectionMode(QAbstractItemView::SingleSelection);
    table_->setAlternatingRowColors(true);
    table_->setShowGrid(false);
    table_->verticalHeader()->hide();
    table_->horizontalHeader()->setStretchLastSection(true);
    table_->setWordWrap(false);

    empty_ = new QLabel(this);
    empty_->setWordWrap(true);
    empty_->setAlignment(Qt::AlignCenter);
    empty_->setTextFormat(Qt::RichText);
    empty_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    empty_->setMargin(24);

    stack_ = new QStackedWidget(this);
    stack_->addWidget(table_);
    stack_->addWidget(empty_);

    status_ = new QLabel(this);

    auto* folder_buttons = new QVBoxLayout;
    folder_buttons->addWidget(get);
    folder_buttons->addWidget(add);
    folder_buttons->addWidget(remove_);
    folder_buttons->addWidget(refresh);
    folder_buttons->addStretch();
    auto* server_buttons = new QVBoxLayout;
    server_buttons->addWidget(add_server);
    server_buttons->addWidget(remove_server_);
    server_buttons->addStretch();
    auto* folder_column = new QVBoxLayout;
    folder_column->addWidget(new QLabel(tr("Folders"), this));
    folder_column->addWidget(folders_);
    auto* server_column = new QVBoxLayout;
    server_column->addWidget(new QLabel(tr("Servers"), this));
    server_column->addWidget(servers_);
    auto* folder_row = new QHBoxLayout;
    folder_row->addLayout(folder_column, 3);
    folder_row->addLayout(folder_buttons);
    folder_row->addSpacing(12);
    folder_row->addLayout(server_column, 2);
    folder_row->addLayout(server_buttons);

    auto* layout = new QVBoxLayout(this);
    layout->addWidget(title);
    layout->addWidget(subtitle);
    layout->addSpacing(8);
    layout->addLayout(folder_row);
    layout->addWidget(hf_cache_);
    layout->addWidget(stack_, 1);
    layout->addWidget(status_);

    for (const auto& f : settings_.model_folders()) folders_->addItem(f);
    for (const RemoteEntry& e : remote_->entries()) servers_->addItem(e.url);
    connect(add_server, &QPushButton::clicked, this, &ModelsPage::choose_server);
    connect(remove_server_, &QPushButton::clicked, this, &ModelsPage::remove_selected_server);
    connect(servers_, &QListWidget::currentRowChanged, this, [this](int row) { remove_server_->setEnabled(row >= 0); });
    connect(add, &QPushButton::clicked, this, &ModelsPage::choose_folder);
    connect(get, &QPushButton::clicked, this, &ModelsPage::get_models);
    connect(remove_, &QPushButton::clicked, this, &ModelsPage::remove_selected_folder);
    connect(refresh, &QPushButton::clicked, this, &ModelsPage::rescan);
    connect(folders_, &QListWidget::currentRowChanged, this, [this](int row) { remove_->setEnabled(row >= 0); });
    connect(hf_cache_, &QCheckBox::toggled, this, [this](bool on) {
        settings_.set_scan_hf_cache(on);
        rescan();
    });
}

void ModelsPage::choose_folder() {
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Add a folder that holds models"));
    if (!dir.isEmpty()) add_folder(dir);
}

void ModelsPage::add_folder(const QString& folder) {
    if (!folders_->findItems(folder, Qt::MatchExactly).isEmpty()) return;
    folders_->addItem(folder);
    save_folders();
    rescan();
}

void ModelsPage::remove_selected_folder() {
    delete folders_->takeItem(folders_->currentRow());
    save_folders();
    rescan();
}

void ModelsPage::get_models() {
    GetModelsDialog dialog(settings_, this);
    connect(&dialog, &GetModelsDialog::downloaded, this, [this] {
        // Downloads land in the Hugging Face cache: it is scanned from now on.
        if (!hf_cache_->isChecked()) hf_cache_->setChecked(true);
        else rescan();
    });
    dialog.exec();
}

void ModelsPage::choose_server() {
    AddServerDialog dialog(this);
    if (dialog.exec() == QDialog::Accepted) add_server(dialog.url(), dialog.api_key());
}

void ModelsPage::add_server(const QString& url, const QString& api_key) {
    const QString normalized = RemoteServer::normalized(url).toString();
    ++asking_;  // counted from now: the key is kept before the server is asked
    remote_->add(normalized, api_key, [this, normalized](const QString& warning) {
        --asking_;
        if (servers_->findItems(normalized, Qt::MatchExactly).isEmpty()) servers_->addItem(normalized);
        if (!warning.isEmpty()) {
            emit key_warning(warning);
            if (isVisible()) QMessageBox::warning(this, tr("The API key is not in a keychain"), warning);
        }
        list_server(normalized);
    });
}

void ModelsPage::remove_selected_server() {
    const QListWidgetItem* item = servers_->currentItem();
    if (!item) return;
    const QString url = item->text();
    remote_->remove(url);
    model_->set_remote_models(url, {});
    delete servers_->takeItem(servers_->currentRow());
    show_results();
}

void ModelsPage::list_server(const QString& url) {
    ++asking_;
    remote_->read_key(url, [this, url](const QString& key, const QString& problem) {
        if (!problem.isEmpty()) {
            model_->set_remote_models(url, {RemoteModel{url, {}, problem}});
            --asking_;
            finish_if_done();
            return;
        }
        auto* server = new RemoteServer(url, key, this);
        auto done = [this, server] {
            server->deleteLater();
            --asking_;
            finish_if_done();
        };
        connect(server, &RemoteServer::models_listed, this, [this, url, done](const QStringList& ids) {
            if (!remote_->contains(url)) return done();  // removed meanwhile
            QList<RemoteModel> rows;
            for (const QString& id : ids) rows << RemoteModel{url, id, {}};
            if (rows.isEmpty()) rows << RemoteModel{url, {}, tr("The server lists no models.")};
            model_->set_remote_models(url, rows);
            done();
        });
        connect(server, &RemoteServer::failed, this, [this, url, done](const QString& why) {
            if (remote_->contains(url)) model_->set_remote_models(url, {RemoteModel{url, {}, why}});
            done();
        });
        server->list_models();
    });
}

void ModelsPage::save_folders() {
    QStringList list;
    for (int i = 0; i < folders_->count(); ++i) list << folders_->item(i)->text();
    settings_.set_model_folders(list);
}

void ModelsPage::rescan() {
    if (scanning_) {
        rescan_pending_ = true;
        return;
    }
    scanning_ = true;
    status_->setText(tr("Scanning…"));
    std::vector<std::filesystem::path> folders;
    for (int i = 0; i < folders_->count(); ++i) folders.emplace_back(folders_->item(i)->text().toStdString());
    const bool hf = hf_cache_->isChecked();
    auto result = std::make_shared<std::vector<ModelEntry>>();
    QThread* thread = QThread::create([folders, hf, result] { *result = scan_models(folders, hf); });
    connect(thread, &QThread::finished, this, [this, thread, result] {
        thread->deleteLater();
        model_->set_models(std::move(*result));
        scanning_ = false;
        finish_if_done();
    });
    thread->start();
    for (const RemoteEntry& e : remote_->entries()) list_server(e.url);
}

void ModelsPage::finish_if_done() {
    show_results();
    if (scanning_ || asking_ > 0) return;
    emit scan_finished(model_->rowCount(), model_->loadable_count());
    if (rescan_pending_) {
        rescan_pending_ = false;
        rescan();
    }
}

void ModelsPage::show_results() {
    const int total = model_->rowCount(), ready = model_->loadable_count();
    table_->resizeColumnsToContents();
    if (scanning_ || asking_ > 0) {
        if (total > 0) stack_->setCurrentWidget(table_);
        status_->setText(scanning_ ? tr("Scanning…") : tr("Asking %n server(s) for their models…", "", asking_));
        return;
    }
    if (total > 0) {
        stack_->setCurrentWidget(table_);
        status_->setText(tr("%n model(s) found", "", total) + " · " + tr("%n ready", "", ready));
    } else {
        QStringList places;
        for (int i = 0; i < folders_->count(); ++i) places << "<code>" + folders_->item(i)->text().toHtmlEscaped() + "</code>";
        if (hf_cache_->isChecked()) places << "<code>" + QString::fromStdString(hf_hub_cache_dir().string()).toHtmlEscaped() + "</code>";
        QStringList archs;
        for (const auto& a : supported_architectures()) archs << QString::fromStdString(a);
        empty_->setText(
            tr("<h3>No models yet</h3>"
               "<p>Lumen looked in %1.</p>"
               "<p>It runs Hugging Face model folders as they are downloaded: InternLM2-chat, InternVL2 and "
               "InternVL2.5, LLaVA-1.5-hf, Llama and Qwen2 models in safetensors "
               "(<small>%2</small>).</p>"
               "<p>Press <b>Get models…</b> to download one from Hugging Face, "
               "or add a folder that holds model folders with <b>Add folder…</b>.</p>")
                .arg(places.isEmpty() ? tr("no folders") : places.join(", "), archs.join(", ")));
        stack_->setCurrentWidget(empty_);
        status_->setText(tr("No models found"));
    }
}

}  // namespace lumen::ui
