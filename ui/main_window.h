#pragma once
// The main window.
#include <QMainWindow>

namespace lumen::ui {

class AppSettings;
class ModelsPage;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(AppSettings& settings, QWidget* parent = nullptr);
    ModelsPage* models_page() const { return models_; }

private:
    ModelsPage* models_;
};

}  // namespace lumen::ui
