#pragma once
// The models Lumen can use as a Qt table: one row per model folder the scanner found, then one per
// model a remote server lists (or, for a server that could not be asked, one row saying why).
#include <QAbstractTableModel>
#include <QList>
#include <vector>

#include "engine/model/model_scanner.h"

namespace lumen::ui {

struct RemoteModel {
    QString server;   // its base URL
    QString id;       // as the server names it; empty when `problem` is set
    QString problem;  // why the server's models are not known (unreachable, the key refused)
};

class ModelListModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { Name, Family, Parameters, Kind, DType, Size, Folder, Status, ColumnCount };

    using QAbstractTableModel::QAbstractTableModel;

    void set_models(std::vector<ModelEntry> models);
    // Replaces `server`'s rows (none: the server is gone from the list).
    void set_remote_models(const QString& server, const QList<RemoteModel>& models);
    bool is_remote(int row) const { return row >= int(models_.size()); }
    const ModelEntry& entry(int row) const { return models_[std::size_t(row)]; }
    const RemoteModel& remote(int row) const { return remote_[row - int(models_.size())]; }
    int loadable_count() const;
    // The model in use now, a folder or a server's model (empty: none): its row says so.
    void set_loaded_path(const QString& path);
    void set_remote_in_use(const QString& server, const QString& id);

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role) const override;

private:
    QVariant remote_data(const RemoteModel& m, int column, int role) const;
    void refresh_all();

    std::vector<ModelEntry> models_;
    QList<RemoteModel> remote_;
    QString loaded_path_;
    QString remote_server_, remote_id_;
    bool is_loaded(const ModelEntry& m) const;
};

// "1.9B", "260K": a parameter count at a glance.
QString short_count(long long n);
QString byte_size(unsigned long long n);

}  // namespace lumen::ui
