#include "ui/model_list_model.h"

#include <QDir>
#include <QFont>

#include <QApplication>
#include <QLocale>
#include <QPalette>

namespace lumen::ui {

QString short_count(long long n) {
    const double v = double(n);
    if (v >= 1e9) return QString::number(v / 1e9, 'f', 1) + "B";
    if (v >= 1e6) return QString::number(v / 1e6, 'f', 1) + "M";
    if (v >= 1e3) return QString::number(v / 1e3, 'f', 1) + "K";
    return QString::number(n);
}

QString byte_size(unsigned long long n) { return QLocale().formattedDataSize(qint64(n), 1, QLocale::DataSizeTraditionalFormat); }

void ModelListModel::set_models(std::vector<ModelEntry> models) {
    beginResetModel();
    models_ = std::move(models);
    endResetModel();
}

void ModelListModel::set_remote_models(const QString& server, const QList<RemoteModel>& models) {
    beginResetModel();
    // The servers keep the order they were added in.
    qsizetype at = remote_.size();
    for (qsizetype i = remote_.size() - 1; i >= 0; --i)
        if (remote_[i].server == server) at = i;
    remote_.removeIf([&](const RemoteModel& m) { return m.server == server; });
    for (const RemoteModel& m : models) remote_.insert(at++, m);
    endResetModel();
}

int ModelListModel::loadable_count() const {
    int n = 0;
    for (const auto& m : models_) n += m.loadable;
    for (const auto& m : remote_) n += m.problem.isEmpty();
    return n;
}

void ModelListModel::refresh_all() {
    if (rowCount() > 0) emit dataChanged(index(0, 0), index(rowCount() - 1, ColumnCount - 1));
}

void ModelListModel::set_loaded_path(const QString& path) {
    if (path == loaded_path_) return;
    loaded_path_ = path;
    refresh_all();
}

void ModelListModel::set_remote_in_use(const QString& server, const QString& id) {
    if (server == remote_server_ && id == remote_id_) return;
    remote_server_ = server;
    remote_id_ = id;
    refresh_all();
}

bool ModelListModel::is_loaded(const ModelEntry& m) const {
    return !loaded_path_.isEmpty() && QDir(QString::fromStdString(m.path.string())) == QDir(loaded_path_);
}

int ModelListModel::rowCount(const QModelIndex& parent) const {
    return parent.isValid() ? 0 : int(models_.size() + std::size_t(remote_.size()));
}

int ModelListModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant ModelListModel::data(const QModelIndex& index, int role) const {
    if (!index.isValid() || index.row() >= rowCount()) return {};
    if (is_remote(index.row())) return remote_data(remote(index.row()), index.column(), role);
    const ModelEntry& m = models_[std::size_t(index.row())];
    if (role == Qt::ToolTipRole) {
        QString tip = QString::fromStdString(m.path.string());
        if (!m.loadable) tip += "\n\n" + QString::fromStdString(m.problem);
        return tip;
    }
    if (role == Qt::ForegroundRole && index.column() == Status && !m.loadable)
        return QApplication::palette().color(QPalette::Disabled, QPalette::Text);
    if (role == Qt::FontRole && is_loaded(m)) {
        QFont bold = QApplication::font();
        bold.setBold(true);
        return bold;
    }
    if (role == Qt::TextAlignmentRole && (index.column() == Parameters || index.column() == Size))
        return int(Qt::AlignRight | Qt::AlignVCenter);
    if (role != Qt::DisplayRole) return {};
    switch (index.column()) {
    case Name: return QString::fromStdString(m.name);
    case Family: return QString::fromStdString(m.family);
    case Parameters: return m.parameters ? short_count(m.parameters) : QString();
    case Kind: return m.architecture.empty() ? QString() : m.vision ? tr("vision + text") : tr("text");
    case DType: return QString::fromStdString(m.dtype);
    case Size: return byte_size(m.size_bytes);
    case Status: return is_loaded(m) ? tr("Loaded") : m.loadable ? tr("Ready") : QString::fromStdString(m.problem);
    case Folder: return QDir::toNativeSeparators(QString::fromStdString(m.path.parent_path().string()));
    default: return {};
    }
}

QVariant ModelListModel::remote_data(const RemoteModel& m, int column, int role) const {
    const bool in_use = m.problem.isEmpty() && m.server == remote_server_ && m.id == remote_id_;
    if (role == Qt::ToolTipRole) return m.problem.isEmpty() ? tr("%1 on %2").arg(m.id, m.server) : m.problem;
    if (role == Qt::ForegroundRole && column == Status && !m.problem.isEmpty())
        return QApplication::palette().color(QPalette::Disabled, QPalette::Text);
    if (role == Qt::FontRole && in_use) {
        QFont bold = QApplication::font();
        bold.setBold(true);
        return bold;
    }
    if (role != Qt::DisplayRole) return {};
    switch (column) {
    case Name: return m.problem.isEmpty() ? m.id : tr("(server)");
    case Kind: return tr("remote");
    case Status: return in_use ? tr("In use") : m.problem.isEmpty() ? tr("Ready") : m.problem;
    case Folder: return m.server;
    default: return {};
    }
}

QVariant ModelListModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole) return {};
    switch (section) {
    case Name: return tr("Model");
    case Family: return tr("Family");
    case Parameters: return tr("Parameters");
    case Kind: return tr("Input");
    case DType: return tr("Weights");
    case Size: return tr("Size");
    case Status: return tr("Status");
    case Folder: return tr("Folder or server");
    default: return {};
    }
}

}  // namespace lumen::ui
