#include "ui/remote_entries.h"

#include "ui/keychain.h"
#include "ui/remote_server.h"

namespace lumen::ui {

RemoteEntries::RemoteEntries(AppSettings& settings, QObject* parent) : QObject(parent), settings_(settings) {}

QList<RemoteEntry> RemoteEntries::entries() const { return settings_.remote_servers(); }

bool RemoteEntries::contains(const QString& url) const {
    const QString normalized = RemoteServer::normalized(url).toString();
    for (const RemoteEntry& e : entries())
        if (e.url == normalized) return true;
    return false;
}

void RemoteEntries::save(const QList<RemoteEntry>& entries) {
    settings_.set_remote_servers(entries);
    settings_.sync();
}

void RemoteEntries::add(const QString& url, const QString& key, std::function<void(const QString& warning)> done) {
    const QString normalized = RemoteServer::normalized(url).toString();
    auto keep = [this, normalized](const QString& store, const QString& in_settings) {
        QList<RemoteEntry> list = entries();
        list.removeIf([&](const RemoteEntry& e) { return e.url == normalized; });
        list << RemoteEntry{normalized, store, in_settings};
        save(list);
    };
    if (key.isEmpty()) {
        keychain_delete(normalized);
        keep({}, {});
        done({});
        return;
    }
    keychain_write(normalized, key, this, [this, keep, key, normalized, done](const QString& error) {
        if (error.isEmpty()) {
            keep("keychain", {});
            done({});
            return;
        }
        keep("settings", key);
        done(tr("No keychain took the API key for %1 (%2), so it is kept in Lumen's settings file, %3, where anyone "
                "who can read your files can read it.")
                 .arg(normalized, error, settings_.file_name()));
    });
}

void RemoteEntries::remove(const QString& url) {
    const QString normalized = RemoteServer::normalized(url).toString();
    QList<RemoteEntry> list = entries();
    for (const RemoteEntry& e : list)
        if (e.url == normalized && e.key_store == "keychain") keychain_delete(normalized);
    list.removeIf([&](const RemoteEntry& e) { return e.url == normalized; });
    save(list);
}

void RemoteEntries::read_key(const QString& url, std::function<void(const QString& key, const QString& problem)> done) {
    const QString normalized = RemoteServer::normalized(url).toString();
    for (const RemoteEntry& e : entries()) {
        if (e.url != normalized) continue;
        if (e.key_store != "keychain") {
            done(e.key_store == "settings" ? e.key_in_settings : QString(), {});
            return;
        }
        keychain_read(normalized, this, [normalized, done](const QString& key, const QString& error, bool missing) {
            if (error.isEmpty()) done(key, {});
            else if (missing) done({}, tr("The keychain no longer has the API key for %1; add the server again with its key.").arg(normalized));
            else done({}, tr("The keychain did not give the API key for %1: %2").arg(normalized, error));
        });
        return;
    }
    done({}, {});  // a server not added: no key
}

}  // namespace lumen::ui
