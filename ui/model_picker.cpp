#include "ui/model_picker.h"

#include <QItemSelectionModel>

#include <QDialogButtonBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QTableView>
#include <QVBoxLayout>

#include "ui/app_settings.h"
#include "ui/engine_worker.h"
#include "ui/model_list_model.h"
#include "ui/models_page.h"

namespace lumen::ui {

EngineOptions engine_options_for(const AppSettings& settings, const QString& model_path);

ModelPicker::ModelPicker(AppSettings& settings, EngineWorker& worker, QWidget* parent)
    : QDialog(parent), settings_(settings), worker_(worker) {
    setWindowTitle(tr("Models"));
    resize(1000, 640);
    page_ = new ModelsPage(settings, this);
    state_ = new QLabel(this);
    progress_ = new QProgressBar(this);
    progress_->setRange(0, 0);  // loading has no fraction to show: it is busy until it is done
    progress_->setAccessibleName(tr("Loading the model"));
    progress_->hide();
    load_ = new QPushButton(tr("Load"), this);
    load_->setDefault(true);
    load_->setAccessibleName(tr("Load the selected model"));
    unload_ = new QPushButton(tr("Unload"), this);
    cancel_ = new QPushButton(tr("Cancel loading"), this);
    auto* close = new QPushButton(tr("Close"), this);

    auto* bottom = new QHBoxLayout;
    bottom->addWidget(state_, 1);
    bottom->addWidget(progress_);
    bottom->addWidget(cancel_);
    bottom->addWidget(unload_);
    bottom->addWidget(load_);
    bottom->addWidget(close);
    auto* layout = new QVBoxLayout(this);
    layout->addWidget(page_, 1);
    layout->addLayout(bottom);

    auto* table = page_->findChild<QTableView*>();
    connect(table, &QTableView::doubleClicked, this, &ModelPicker::load_selected);
    // Load is offered once a model is chosen.
    connect(table->selectionModel(), &QItemSelectionModel::currentChanged, this, &ModelPicker::update_state);
    connect(page_->model(), &QAbstractItemModel::modelReset, this, &ModelPicker::update_state);
    connect(load_, &QPushButton::clicked, this, &ModelPicker::load_selected);
    connect(unload_, &QPushButton::clicked, &worker_, &EngineWorker::unload);
    connect(cancel_, &QPushButton::clicked, &worker_, &EngineWorker::cancel_load);
    connect(close, &QPushButton::clicked, this, &QDialog::accept);
    connect(&worker_, &EngineWorker::load_started, this, &ModelPicker::update_state);
    connect(&worker_, &EngineWorker::loaded, this, [this] {
        update_state();
        accept();
    });
    connect(&worker_, &EngineWorker::load_failed, this, [this](const QString& path, const QString& error) {
        update_state();
        QMessageBox::warning(this, tr("The model did not load"), tr("%1\n\n%2").arg(path, error));
    });
    connect(&worker_, &EngineWorker::unloaded, this, &ModelPicker::update_state);
    update_state();
    page_->rescan();
}

void ModelPicker::load_selected() {
    auto* table = page_->findChild<QTableView*>();
    const QModelIndex index = table->currentIndex();
    if (!index.isValid()) {
        QMessageBox::information(this, tr("No model chosen"), tr("Choose a model in the list first."));
        return;
    }
    if (page_->model()->is_remote(index.row())) {
        const RemoteModel& r = page_->model()->remote(index.row());
        if (!r.problem.isEmpty()) {
            QMessageBox::warning(this, tr("This server cannot be used now"), r.problem);
            return;
        }
        set_remote_in_use(r.server, r.id);
        emit remote_chosen(r.server, r.id);
        accept();
        return;
    }
    const ModelEntry& m = page_->model()->entry(index.row());
    if (!m.loadable) {
        QMessageBox::warning(this, tr("This model cannot load"), QString::fromStdString(m.problem));
        return;
    }
    const QString path = QString::fromStdString(m.path.string());
    settings_.set_last_model(path);
    worker_.load(path, engine_options_for(settings_, path));
}

void ModelPicker::set_remote_in_use(const QString& server, const QString& model) {
    remote_server_ = server;
    remote_model_ = model;
    update_state();
}

void ModelPicker::update_state() {
    const bool loading = worker_.loading();
    progress_->setVisible(loading);
    cancel_->setVisible(loading);
    const QModelIndex current = page_->findChild<QTableView*>()->currentIndex();
    load_->setEnabled(!loading && current.isValid());
    // A server's model is used where it runs: nothing loads here.
    const bool remote = current.isValid() && page_->model()->is_remote(current.row());
    load_->setText(remote ? tr("Use") : tr("Load"));
    load_->setAccessibleName(remote ? tr("Chat with the selected server's model") : tr("Load the selected model"));
    unload_->setEnabled(worker_.is_loaded());
    page_->model()->set_loaded_path(worker_.is_loaded() ? worker_.model().path : QString());
    page_->model()->set_remote_in_use(remote_server_, remote_model_);
    if (loading) state_->setText(tr("Loading…"));
    else if (worker_.is_loaded()) state_->setText(tr("Loaded: %1 on %2").arg(worker_.model().name, worker_.model().device));
    else if (!remote_model_.isEmpty()) state_->setText(tr("In use: %1 on %2").arg(remote_model_, remote_server_));
    else state_->setText(tr("No model loaded"));
}

}  // namespace lumen::ui
