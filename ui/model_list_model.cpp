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

int ModelListModel::loadable_count() const {
    int n = 0;
    for (const auto& m : models_) n += m.loadable;
    return n;
}

void ModelListModel::set_loaded_path(const QString& path) {
    if (path == loaded_path_) return;
    loaded_path_ = path;
    if (!models_.empty()) emit dataChanged(index(0, 0), index(rowCount() - 1, ColumnCount - 1));
}

bool ModelListModel::is_loaded(const ModelEntry& m) const {
    return !loaded_path_.isEmpty() && QDir(QString::fromStdString(m.path.string())) == QDir(loaded_path_);
}

int ModelListModel::rowCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : int(models_.size()); }

int ModelListModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant ModelListModel::data(const QModelIndex& index, int role) const {
    if (!index.isValid() || index.row() >= rowCount()) return {};
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
    case Folder: return tr("In folder");
    default: return {};
    }
}

}  // namespace lumen::ui
