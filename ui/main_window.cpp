#include "ui/main_window.h"

#include <QAction>
#include <QApplication>
#include <QKeySequence>
#include <QMenuBar>

#include "ui/models_page.h"

namespace lumen::ui {

MainWindow::MainWindow(AppSettings& settings, QWidget* parent) : QMainWindow(parent) {
    setWindowTitle(tr("Lumen"));
    models_ = new ModelsPage(settings, this);
    setCentralWidget(models_);

    auto* file = menuBar()->addMenu(tr("&File"));
    auto* rescan = file->addAction(tr("&Rescan models"), models_, &ModelsPage::rescan);
    rescan->setShortcut(QKeySequence::Refresh);
    file->addSeparator();
    auto* quit = file->addAction(tr("&Quit"), qApp, &QApplication::quit);
    quit->setShortcut(QKeySequence::Quit);

    resize(1100, 720);
    models_->rescan();
}

}  // namespace lumen::ui
