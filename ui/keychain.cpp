#include "ui/keychain.h"

#include <QCoreApplication>
#include <qt6keychain/keychain.h>

namespace lumen::ui {
namespace {

QString service() { return QCoreApplication::applicationName().isEmpty() ? "Lumen" : QCoreApplication::applicationName(); }

}  // namespace

void keychain_write(const QString& key, const QString& secret, QObject* context, std::function<void(const QString& error)> done) {
    auto* job = new QKeychain::WritePasswordJob(service());
    job->setKey(key);
    job->setTextData(secret);
    QObject::connect(job, &QKeychain::Job::finished, context, [done](QKeychain::Job* j) {
        done(j->error() == QKeychain::NoError ? QString() : j->errorString());
    });
    job->start();  // the job deletes itself once finished
}

void keychain_read(const QString& key, QObject* context, std::function<void(const QString& secret, const QString& error, bool missing)> done) {
    auto* job = new QKeychain::ReadPasswordJob(service());
    job->setKey(key);
    QObject::connect(job, &QKeychain::Job::finished, context, [done](QKeychain::Job* j) {
        if (j->error() == QKeychain::NoError) done(static_cast<QKeychain::ReadPasswordJob*>(j)->textData(), {}, false);
        else done({}, j->errorString(), j->error() == QKeychain::EntryNotFound);
    });
    job->start();
}

void keychain_delete(const QString& key) {
    auto* job = new QKeychain::DeletePasswordJob(service());
    job->setKey(key);
    job->start();
}

}  // namespace lumen::ui
