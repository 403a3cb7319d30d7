#pragma once
// The scanner's findings as a Qt table: one row per model folder.
#include <QAbstractTableModel>
#include <vector>

#include "engine/model/model_scanner.h"

namespace lumen::ui {

class ModelListModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Name, Family, Parameters, Kind, DType, Size, Folder, Status, ColumnCount };

    using QAbstractTableModel::QAbstractTableModel;

    void set_models(std::vector<ModelEntry> models);
    const ModelEntry& entry(int row) const { return models_[std::size_t(row)]; }
    int loadable_count() const;
    // The folder of the model loaded now (empty: none): its row says so.
    void set_loaded_path(const QString& path);

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role) const override;

private:
    std::vector<ModelEntry> models_;
    QString loaded_path_;
    bool is_loaded(const ModelEntry& m) const;
};

// "1.9B", "260K": a parameter count at a glance.
QString short_count(long long n);
QString byte_size(unsigned long long n);

}  // namespace lumen::ui
