#include "ui/remote_entries.h"

#include <QCoreApplication>
#include <QPointer>
#include <qt6keychain/keychain.h>

#include "ui/remote_server.h"

namespace lumen::ui {
namespace {

// The application's name: the app's keys apart from those of a test run as another program.
QString keychain_service() { return QCoreApplication::applicationName().isEmpty() ? "Lumen" : QCoreApplication::applicationName(); }

void forget_in_keychain(const QString& url) {
    auto* job = new QKeychain::DeletePasswordJob(keychain_service());
    job->setKey(url);
    job->start();  // deletes itself when done; nothing to do if there was nothing to delete
}

}  // namespace

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
        forget_in_keychain(normalized);
        keep({}, {});
        done({});
        return;
    }
    auto* job = new QKeychain::WritePasswordJob(keychain_service());
    job->setKey(normalized);
    job->setTextData(key);
    connect(job, &QKeychain::Job::finished, this, [this, keep, key, normalized, done](QKeychain::Job* j) {
        if (j->error() == QKeychain::NoError) {
            keep("keychain", {});
            done({});
            return;
        }
        keep("settings", key);
        done(tr("No keychain took the API key for %1 (%2), so it is kept in Lumen's settings file, %3, where anyone "
                "who can read your files can read it.")
                 .arg(normalized, j->errorString(), settings_.file_name()));
    });
    job->start();
}

void RemoteEntries::remove(const QString& url) {
    const QString normalized = RemoteServer::normalized(url).toString();
    QList<RemoteEntry> list = entries();
    for (const RemoteEntry& e : list)
        if (e.url == normalized && e.key_store == "keychain") forget_in_keychain(normalized);
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
        auto* job = new QKeychain::ReadPasswordJob(keychain_service());
        job->setKey(normalized);
        connect(job, &QKeychain::Job::finished, this, [normalized, done](QKeychain::Job* j) {
            if (j->error() == QKeychain::NoError) done(static_cast<QKeychain::ReadPasswordJob*>(j)->textData(), {});
            else if (j->error() == QKeychain::EntryNotFound)
                done({}, tr("The keychain no longer has the API key for %1; add the server again with its key.").arg(normalized));
            else done({}, tr("The keychain did not give the API key for %1: %2").arg(normalized, j->errorString()));
        });
        job->start();
        return;
    }
    done({}, {});  // a server not added: no key
}

}  // namespace lumen::ui
