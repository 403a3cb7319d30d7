#pragma once
// A `lumen-cli serve` process on a free port of the loopback, stopped when this goes (for tests
// that talk to the server as its clients do).
#include <QProcess>
#include <QString>
#include <QStringList>

namespace lumen::test {

class ServeProcess {
public:
    ServeProcess(const QString& model, const QString& api_key, const QStringList& more = {}) {
        QStringList args{"serve", "--model", model, "--device", "cpu", "--port", "0"};
        if (!api_key.isEmpty()) args << "--api-key" << api_key;
        process_.start(LUMEN_CLI_PATH, args + more);
        while (process_.waitForReadyRead(60000)) {
            const QString line = QString::fromUtf8(process_.readLine());
            const auto at = line.indexOf("http://");
            if (at >= 0) {
                url_ = line.mid(at).trimmed();
                return;
            }
        }
    }
    ~ServeProcess() {
        process_.terminate();
        if (!process_.waitForFinished(10000)) process_.kill();
    }
    ServeProcess(const ServeProcess&) = delete;
    ServeProcess& operator=(const ServeProcess&) = delete;

    const QString& url() const { return url_; }  // http://127.0.0.1:PORT/v1, empty if it did not start
    QString errors() { return QString::fromUtf8(process_.readAllStandardError()); }

private:
    QProcess process_;
    QString url_;
};

}  // namespace lumen::test
