#pragma once
// Get models: the Hugging Face Hub searched from the app (or a short list of models that run well
// here), a model's download size and whether it fits this computer (GPU, else memory) before a
// byte is fetched, and the download itself into the shared Hugging Face cache (hub/) with its
// progress, speed and time left, Pause and Cancel. Gated models take a token, kept in the
// keychain.
#include <QDialog>
#include <QPointer>
#include <memory>

#include "hub/hub_api.h"

class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QTableWidget;

namespace lumen::hub {
class HubDownload;
}

namespace lumen::ui {

class AppSettings;

class GetModelsDialog : public QDialog {
    Q_OBJECT
public:
    explicit GetModelsDialog(AppSettings& settings, QWidget* parent = nullptr);
    ~GetModelsDialog() override;

    // What the buttons do, for tests and the keyboard.
    void search(const QString& text);
    void choose(const QString& repo_id);
    void download();
    void pause();
    void cancel_download();  // stops and deletes what arrived
    void hub_settings();     // asks for the hub's address and a token
    bool downloading() const { return download_ != nullptr; }

signals:
    void results_shown(int count);
    void details_shown(const QString& repo_id);  // its size and fit estimate are on screen
    void downloaded(const QString& folder);
    void download_failed(const QString& error);

protected:
    void reject() override;

private:
    void make_api();
    void show_hits(const QList<lumen::hub::SearchHit>& hits, bool suggested);
    void show_info(const lumen::hub::RepoInfo& info);
    void show_fit(const QByteArray& config_json);
    void start_download();
    void update_buttons();

    AppSettings& settings_;
    QString endpoint_;
    QString token_;
    lumen::hub::HubApi* api_ = nullptr;
    QLineEdit* query_;
    QComboBox* kind_;
    QTableWidget* results_;
    QLabel* title_;
    QLabel* size_;
    QLabel* fit_;
    QLabel* status_;
    QProgressBar* progress_;
    QPushButton* download_button_;
    QPushButton* pause_button_;
    QPushButton* cancel_button_;
    QString chosen_;
    lumen::hub::RepoInfo info_;  // of the model chosen, once the hub answered
    double weights_bytes_ = 0;
    lumen::hub::HubDownload* download_ = nullptr;
    bool paused_ = false;
};

}  // namespace lumen::ui
