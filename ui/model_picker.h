#pragma once
// The model picker: the models page (folders, Hugging Face cache, remote servers, every model and
// whether it can be used) with Load and Unload, and a progress bar with Cancel while a model
// loads. A remote server's model is not loaded here: choosing it tells the window to chat with it.
#include <QDialog>

class QLabel;
class QProgressBar;
class QPushButton;

namespace lumen::ui {

class AppSettings;
class EngineWorker;
class ModelsPage;

class ModelPicker : public QDialog {
    Q_OBJECT
public:
    ModelPicker(AppSettings& settings, EngineWorker& worker, QWidget* parent = nullptr);
    ModelsPage* page() const { return page_; }
    // The remote model the window chats with now (none: empty), marked in the list.
    void set_remote_in_use(const QString& server, const QString& model);

signals:
    void remote_chosen(const QString& server, const QString& model);

public slots:
    void load_selected();

private:
    void update_state();

    AppSettings& settings_;
    EngineWorker& worker_;
    ModelsPage* page_;
    QLabel* state_;
    QProgressBar* progress_;
    QPushButton* load_;
    QPushButton* unload_;
    QPushButton* cancel_;
    QString remote_server_, remote_model_;
};

}  // namespace lumen::ui
