#pragma once
// Downloads a model repository from the Hugging Face Hub into the shared cache (hub_cache.h): the
// files Lumen needs at one commit, each resumed where it stopped (HTTP ranges: after a lost
// connection, a crash or a kill), each checked against the hub's hash before it becomes a blob,
// and the snapshot linked only once every file is there, so that no half-downloaded model ever
// shows in a model list. Blobs already in the cache are not fetched again.
#include <QElapsedTimer>
#include <QFile>
#include <QList>
#include <QObject>
#include <QPointer>
#include <QString>
#include <QUrl>
#include <filesystem>
#include <memory>

#include "hub/hub_api.h"
#include "hub/hub_cache.h"

class QCryptographicHash;
class QNetworkReply;

namespace lumen::hub {

struct DownloadPlan {
    QString commit;
    int files = 0;
    qint64 total = 0;    // bytes of the files wanted
    qint64 present = 0;  // of which the cache already holds (whole blobs, and partial downloads to resume)
};

class HubDownload : public QObject {
    Q_OBJECT
public:
    // `repo_id` "org/name"; `revision` a branch, tag or commit.
    HubDownload(QString repo_id, QString revision, std::filesystem::path cache_dir, QString endpoint, QString token,
                QObject* parent = nullptr);
    ~HubDownload() override;

    void start();
    // Stops; what arrived stays, and the next download of the repository resumes from it.
    void cancel();
    // The model's folder once finished() came without an error.
    std::filesystem::path snapshot() const;
    const DownloadPlan& plan() const { return plan_; }

signals:
    void planned(const lumen::hub::DownloadPlan& plan);
    // `done` counts the bytes present in the cache, of `total`; the speed over the last seconds.
    void progress(qint64 done, qint64 total, double bytes_per_second, const QString& file);
    void finished(const QString& error);  // empty: done

private:
    void on_info(const RepoInfo& info);
    void next_file();
    void fetch(int index);
    void get(const QUrl& url, int redirects);
    bool follow_redirect(QNetworkReply* reply);
    void restart_hash(const RepoFile& f);  // the hash the hub names the file by, over nothing yet
    void on_data();
    void on_reply_finished();
    void fail(const QString& error);
    void release_file();  // closes the partial file and lets go of its lock
    void report(bool force);

    QString repo_id_, revision_;
    RepoCache cache_;
    std::filesystem::path cache_dir_;
    HubApi api_;
    RepoInfo info_;
    QList<RepoFile> wanted_;
    DownloadPlan plan_;
    bool ended_ = false;

    // The file being fetched.
    int current_ = -1;
    int attempts_ = 0;   // connection losses in a row on this file
    QFile part_;         // blobs/<etag>.incomplete
    int lock_fd_ = -1;
    std::unique_ptr<QCryptographicHash> hash_;
    qint64 asked_from_ = 0;  // the range asked for
    bool first_data_ = true;
    QPointer<QNetworkReply> reply_;
    int redirects_ = 0;

    qint64 done_ = 0;  // bytes present, of plan_.total
    QElapsedTimer clock_;
    qint64 last_report_ms_ = -1000;
    QList<QPair<qint64, qint64>> samples_;  // (ms, done_) over the last seconds, for the speed
};

}  // namespace lumen::hub

Q_DECLARE_METATYPE(lumen::hub::DownloadPlan)
