#pragma once
// The models Lumen can see: the folders it scans, the Hugging Face cache, the remote servers the
// user added, and every model found with whether it can be used. Scans run off the GUI thread;
// servers are asked for their models over the network, each on its own.
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
class RemoteEntries;

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
    // Adds a server with its API key (kept in the keychain where one answers) and lists its models.
    void add_server(const QString& url, const QString& api_key);
    void remove_selected_server();
    void get_models();  // the Hugging Face Hub: search and download

signals:
    // The folders are scanned and every server has answered (or failed to).
    void scan_finished(int models, int loadable);
    // Where the key went when no keychain took it (also shown in a message box while the page is visible).
    void key_warning(const QString& warning);

private:
    void choose_folder();
    void choose_server();
    void save_folders();
    void list_server(const QString& url);
    void show_results();
    void finish_if_done();

    AppSettings& settings_;
    ModelListModel* model_;
    QListWidget* folders_;
    QListWidget* servers_;
    QPushButton* remove_server_;
    RemoteEntries* remote_;
    QCheckBox* hf_cache_;
    QPushButton* remove_;
    QStackedWidget* stack_;
    QTableView* table_;
    QLabel* empty_;
    QLabel* status_;
    bool scanning_ = false;
    int asking_ = 0;  // servers asked for their models, not yet answered
    bool rescan_pending_ = false;
};

}  // namespace lumen::ui
