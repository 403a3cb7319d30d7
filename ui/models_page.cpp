#include "ui/models_page.h"

#include <QCheckBox>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QListWidget>
#include <QPushButton>
#include <QStackedWidget>
#include <QTableView>
#include <QThread>
#include <QVBoxLayout>
#include <memory>

#include "engine/model/model_config.h"
#include "ui/app_settings.h"
#include "ui/model_list_model.h"

namespace lumen::ui {

ModelsPage::ModelsPage(AppSettings& settings, QWidget* parent)
    : QWidget(parent), settings_(settings), model_(new ModelListModel(this)) {
    auto* title = new QLabel(tr("Models"), this);
    QFont title_font = title->font();
    title_font.setPointSizeF(title_font.pointSizeF() * 1.6);
    title_font.setBold(true);
    title->setFont(title_font);
    auto* subtitle = new QLabel(tr("Hugging Face model folders as you downloaded them: safetensors weights, "
                                   "config.json and tokenizer files. Nothing is converted."),
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
    folder_buttons->addWidget(add);
    folder_buttons->addWidget(remove_);
    folder_buttons->addWidget(refresh);
    folder_buttons->addStretch();
    auto* folder_row = new QHBoxLayout;
    folder_row->addWidget(folders_, 1);
    folder_row->addLayout(folder_buttons);

    auto* layout = new QVBoxLayout(this);
    layout->addWidget(title);
    layout->addWidget(subtitle);
    layout->addSpacing(8);
    layout->addLayout(folder_row);
    layout->addWidget(hf_cache_);
    layout->addWidget(stack_, 1);
    layout->addWidget(status_);

    for (const auto& f : settings_.model_folders()) folders_->addItem(f);
    connect(add, &QPushButton::clicked, this, &ModelsPage::choose_folder);
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
        show_results();
        if (rescan_pending_) {
            rescan_pending_ = false;
            rescan();
        }
    });
    thread->start();
}

void ModelsPage::show_results() {
    const int total = model_->rowCount(), ready = model_->loadable_count();
    table_->resizeColumnsToContents();
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
               "<p>Download one into the Hugging Face cache, for example<br>"
               "<code>huggingface-cli download internlm/internlm2-chat-1_8b</code><br>"
               "or add a folder that holds model folders with <b>Add folder…</b>.</p>")
                .arg(places.isEmpty() ? tr("no folders") : places.join(", "), archs.join(", ")));
        stack_->setCurrentWidget(empty_);
        status_->setText(tr("No models found"));
    }
    emit scan_finished(total, ready);
}

}  // namespace lumen::ui
