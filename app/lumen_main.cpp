// lumen: the desktop app.
#include <QApplication>

#include "ui/app_settings.h"
#include "ui/main_window.h"

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    QApplication::setApplicationName("Lumen");
    QApplication::setOrganizationName("Lumen");
    QApplication::setApplicationVersion(LUMEN_VERSION);
    lumen::ui::AppSettings settings;
    lumen::ui::MainWindow window(settings);
    window.show();
    return app.exec();
}
