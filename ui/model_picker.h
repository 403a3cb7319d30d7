#pragma once
// The model picker: the models page (folders, Hugging Face cache, every model and whether it can
// load) with Load and Unload, and a progress bar with Cancel while a model loads.
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
};

}  // namespace lumen::ui
