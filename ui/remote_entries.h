#pragma once
// The remote servers the user added (Models > Add server…): their base URLs in the settings, and
// their API keys in the platform's keychain (QtKeychain: Secret Service, KWallet, macOS Keychain,
// Windows Credential Store) where one answers, else in the settings file, with a warning that
// says so. Keychains answer asynchronously (one may first ask the user to unlock it), so keys
// arrive through callbacks.
#include <QList>
#include <QObject>
#include <QString>
#include <functional>

#include "ui/app_settings.h"

namespace lumen::ui {

class RemoteEntries : public QObject {
    Q_OBJECT
public:
    explicit RemoteEntries(AppSettings& settings, QObject* parent = nullptr);

    QList<RemoteEntry> entries() const;
    bool contains(const QString& url) const;

    // Adds a server (or replaces its key). `done(warning)` runs once the key is kept: `warning`
    // is empty, or says that no keychain answered and the key sits in the settings file.
    void add(const QString& url, const QString& key, std::function<void(const QString& warning)> done);
    void remove(const QString& url);
    // The server's key ("" when it has none); `problem` says why it could not be read (the
    // keychain refused or lost it), and `key` is empty then.
    void read_key(const QString& url, std::function<void(const QString& key, const QString& problem)> done);

private:
    void save(const QList<RemoteEntry>& entries);
    AppSettings& settings_;
};

}  // namespace lumen::ui
