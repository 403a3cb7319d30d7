#pragma once
// The models Lumen can see: the folders it scans, the Hugging Face cache, and every model found
// with whether it can load. Scans run off the GUI thread.
#include <QWidget>

class QCheckBox;
class QLabel;
class QListWidget;
class QPushButton;
class QStackedWidget;
class QTableView;

namespace lumen::ui {

class AppSettings;
class ModelListModel;

class ModelsPage : public QWidget {
    Q_OBJECT
public:
    explicit ModelsPage(AppSettings& settings, QWidget* parent = nullptr);

    ModelListModel* model() const { return model_; }
    bool scanning() const { return scanning_; }

public slots:
    void rescan();
    void add_folder(const QString& folder);
    void remove_selected_folder();

signals:
    void scan_finished(int models, int loadable);

private:
    void choose_folder();
    void save_folders();
    void show_results();

    AppSettings& settings_;
    ModelListModel* model_;
    QListWidget* folders_;
    QCheckBox* hf_cache_;
    QPushButton* remove_;
    QStackedWidget* stack_;
    QTableView* table_;
    QLabel* empty_;
    QLabel* status_;
    bool scanning_ = false;
    bool rescan_pending_ = false;
};

}  // namespace lumen::ui
