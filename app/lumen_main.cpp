// lumen: the desktop app. One instance at a time: a second launch raises the first, or with
// --screenshot asks it for a screen-region question (for a desktop keyboard shortcut).
#include <QApplication>
#include <QCommandLineParser>
#include <QCryptographicHash>
#include <QDir>
#include <QLocalServer>
#include <QLocalSocket>
#include <QMessageBox>
#include <QNetworkProxyFactory>
#include <QSettings>

#include "ui/app_settings.h"
#include "ui/history_store.h"
#include "ui/main_window.h"
#include "ui/theme.h"

int main(int argc, char** argv) {
    QApplication app(argc, argv);
    QApplication::setApplicationName("Lumen");
    // The desktop's proxy settings (and http_proxy / https_proxy / no_proxy) for the hub and servers.
    QNetworkProxyFactory::setUseSystemConfiguration(true);
    QApplication::setOrganizationName("Lumen");
    QApplication::setApplicationVersion(LUMEN_VERSION);
    QApplication::setDesktopFileName("lumen");

    QCommandLineParser cli;
    cli.setApplicationDescription("Chat with language and vision-language models on your own GPU.");
    cli.addHelpOption();
    cli.addVersionOption();
    const QCommandLineOption data_dir("data-dir", "Keep settings and history in DIR (a portable setup).", "DIR");
    const QCommandLineOption model("model", "Load the model folder DIR.", "DIR");
    const QCommandLineOption prompt("prompt", "Start a conversation with TEXT once the model is loaded.", "TEXT");
    const QCommandLineOption screenshot("screenshot", "Grab a region of the screen to ask about.");
    cli.addOptions({data_dir, model, prompt, screenshot});
    cli.process(app);

    QString history_path = lumen::ui::HistoryStore::default_path();
    if (cli.isSet(data_dir)) {
        const QString dir = QDir(cli.value(data_dir)).absolutePath();
        QDir().mkpath(dir);
        QSettings::setDefaultFormat(QSettings::IniFormat);
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, dir);
        history_path = QDir(dir).filePath("history.sqlite3");
    }

    // One instance per history: a second launch passes its request to the first, then exits.
    const QString server_name = "lumen-" + QString::fromLatin1(QCryptographicHash::hash(
                                                  (qgetenv("USER") + history_path.toUtf8()), QCryptographicHash::Sha1)
                                                  .toHex()
                                                  .left(16));
    {
        QLocalSocket other;
        other.connectToServer(server_name);
        if (other.waitForConnected(300)) {
            other.write(cli.isSet(screenshot) ? "screenshot\n" : "raise\n");
            other.waitForBytesWritten(300);
            return 0;
        }
    }
    QLocalServer::removeServer(server_name);
    QLocalServer server;
    server.listen(server_name);

    lumen::ui::AppSettings settings;
    lumen::ui::apply_theme(settings.theme());
    lumen::ui::HistoryStore store(history_path);
    if (!store.ok()) {
        QMessageBox::critical(nullptr, "Lumen", store.error());
        return 1;
    }
    lumen::ui::MainWindow window(settings, store);
    window.show();
    QObject::connect(&server, &QLocalServer::newConnection, &window, [&] {
        while (QLocalSocket* s = server.nextPendingConnection()) {
            QObject::connect(s, &QLocalSocket::disconnected, s, &QObject::deleteLater);
            QObject::connect(s, &QLocalSocket::readyRead, &window, [s, &window] {
                while (s->canReadLine()) {
                    if (s->readLine().trimmed() == "screenshot") {
                        window.take_screenshot();
                    } else {
                        window.showNormal();
                        window.raise();
                        window.activateWindow();
                    }
                }
            });
        }
    });
    if (cli.isSet(model)) window.load_model(QDir(cli.value(model)).absolutePath());
    if (cli.isSet(prompt)) window.send_when_ready(cli.value(prompt));
    if (cli.isSet(screenshot)) window.take_screenshot();
    return app.exec();
}
