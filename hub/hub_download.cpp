#include "hub/hub_download.h"

#include <QCryptographicHash>
#include <QNetworkReply>
#include <QStorageInfo>
#include <QTimer>
#include <sys/file.h>
#include <unistd.h>

#include "engine/util/error.h"

namespace fs = std::filesystem;

namespace lumen::hub {
namespace {

constexpr int kMaxAttempts = 5;          // connection losses in a row before giving up on a file
constexpr int kRetryDelayMs = 1000;
constexpr int kLockRetryMs = 500;        // another program writes the same blob meanwhile
constexpr int kStallTimeoutMs = 60000;   // no byte for this long: the connection is gone
constexpr int kMaxRedirects = 5;
constexpr qint64 kDiskMargin = 64 << 20;  // left free beyond the download

qint64 size_of(const fs::path& p) {  // -1: no such file
    std::error_code ec;
    const auto n = fs::file_size(p, ec);
    return ec ? -1 : qint64(n);
}

QString short_size(qint64 n) {
    const double v = double(n);
    if (v >= 1e9) return QString::number(v / 1e9, 'f', 1) + " GB";
    if (v >= 1e6) return QString::number(v / 1e6, 'f', 1) + " MB";
    return QString::number(v / 1e3, 'f', 1) + " kB";
}

}  // namespace

HubDownload::HubDownload(QString repo_id, QString revision, fs::path cache_dir, QString endpoint, QString token, QObject* parent)
    : QObject(parent),
      repo_id_(std::move(repo_id)),
      revision_(revision.isEmpty() ? QString("main") : std::move(revision)),
      cache_(cache_dir, repo_id_.toStdString()),
      cache_dir_(std::move(cache_dir)),
      api_(std::move(endpoint), std::move(token)) {
    connect(&api_, &HubApi::info, this, &HubDownload::on_info);
    connect(&api_, &HubApi::failed, this, &HubDownload::fail);
}

HubDownload::~HubDownload() {
    ended_ = true;
    if (reply_) reply_->abort();
    release_file();
}

void HubDownload::start() {
    clock_.start();
    api_.repo_info(repo_id_, revision_);
}

void HubDownload::cancel() {
    if (ended_) return;
    fail(tr("Stopped. What arrived is kept; the download of %1 resumes from there next time.").arg(repo_id_));
}

fs::path HubDownload::snapshot() const { return cache_.snapshot(info_.commit.toStdString()); }

void HubDownload::on_info(const RepoInfo& info) {
    info_ = info;
    bool weights = false;
    for (const RepoFile& f : files_to_fetch(info.files)) {
        // A path that would leave the snapshot folder is not the hub's.
        if (f.path.startsWith('/') || f.path.split('/').contains("..")) {
            fail(tr("%1 lists a file outside its folder (%2); nothing was downloaded.").arg(repo_id_, f.path));
            return;
        }
        wanted_ << f;
        weights = weights || f.path.endsWith(".safetensors");
    }
    if (!weights) {
        fail(tr("%1 has no safetensors weights (Lumen does not load .bin or .pt files, which can run code when "
                "opened); look for a safetensors version of it.")
                 .arg(repo_id_));
        return;
    }
    plan_.commit = info.commit;
    plan_.files = int(wanted_.size());
    for (const RepoFile& f : wanted_) {
        plan_.total += f.size;
        const qint64 whole = size_of(cache_.blob(f.etag.toStdString()));
        const qint64 part = size_of(cache_.incomplete(f.etag.toStdString()));
        plan_.present += whole == f.size ? f.size : part > 0 && part <= f.size ? part : 0;
    }
    done_ = plan_.present;
    std::error_code ec;
    fs::create_directories(cache_.dir() / "blobs", ec);
    if (ec) {
        fail(tr("Cannot write to the Hugging Face cache at %1: %2").arg(QString::fromStdString(cache_dir_.string()),
                                                                          QString::fromStdString(ec.message())));
        return;
    }
    const QStorageInfo disk(QString::fromStdString(cache_.dir().string()));
    const qint64 needed = plan_.total - plan_.present;
    if (disk.isValid() && disk.bytesAvailable() < needed + kDiskMargin) {
        fail(tr("Not enough disk space for %1: it needs %2 more, and %3 has %4 free.")
                 .arg(repo_id_, short_size(needed), disk.rootPath(), short_size(disk.bytesAvailable())));
        return;
    }
    emit planned(plan_);
    next_file();
}

void HubDownload::next_file() {
    if (ended_) return;
    for (int i = current_ + 1; i < wanted_.size(); ++i) {
        const RepoFile& f = wanted_[i];
        if (size_of(cache_.blob(f.etag.toStdString())) == f.size) continue;  // already in the cache
        fetch(i);
        return;
    }
    // Every file is there and checked: only now does the snapshot appear.
    try {
        const std::string commit = info_.commit.toStdString();
        for (const RepoFile& f : wanted_) cache_.link(commit, f.path.toStdString(), f.etag.toStdString());
        if (revision_ != info_.commit) cache_.set_ref(revision_.toStdString(), commit);
    } catch (const std::exception& e) {
        fail(tr("Cannot finish %1 in the cache: %2").arg(repo_id_, QString::fromStdString(e.what())));
        return;
    }
    report(true);
    ended_ = true;
    emit finished({});
}

void HubDownload::fetch(int index) {
    current_ = index;
    const RepoFile& f = wanted_[index];
    const std::string etag = f.etag.toStdString();
    // The lock huggingface_hub takes (flock on .locks/<repo>/<etag>.lock): one writer per blob
    // across programs.
    if (lock_fd_ < 0) {
        const fs::path lock = cache_.lock(etag);
        std::error_code ec;
        fs::create_directories(lock.parent_path(), ec);
        lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock_fd_ < 0) {
            fail(tr("Cannot lock %1 in the Hugging Face cache.").arg(QString::fromStdString(lock.string())));
            return;
        }
    }
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
        QTimer::singleShot(kLockRetryMs, this, [this, index] {
            if (!ended_) fetch(index);
        });
        return;
    }
    if (size_of(cache_.blob(etag)) == f.size) {  // another program finished it meanwhile
        release_file();
        next_file();
        return;
    }
    part_.setFileName(QString::fromStdString(cache_.incomplete(etag).string()));
    if (!part_.open(QIODevice::ReadWrite)) {
        fail(tr("Cannot write %1: %2").arg(part_.fileName(), part_.errorString()));
        return;
    }
    if (part_.size() > f.size) part_.resize(0);  // not this file's beginning
    restart_hash(f);
    // What arrived before is hashed again: the check covers the whole file.
    part_.seek(0);
    if (!hash_->addData(&part_)) {
        fail(tr("Cannot read %1: %2").arg(part_.fileName(), part_.errorString()));
        return;
    }
    asked_from_ = part_.size();
    part_.seek(asked_from_);
    first_data_ = true;
    if (asked_from_ == f.size) {
        // Everything arrived before the last run ended: only the check is left.
        on_reply_finished();
        return;
    }

    const QString url = api_.endpoint() + "/" + repo_id_ + "/resolve/" + info_.commit + "/" +
                        QString::fromUtf8(QUrl::toPercentEncoding(f.path, "/"));
    get(QUrl(url), 0);
}

void HubDownload::get(const QUrl& url, int redirects) {
    // Redirects are followed here, as huggingface_hub does: the hub's own answer carries the
    // file's commit and hash, and the token goes to the hub only, never to where it redirects.
    const QUrl hub(api_.endpoint());
    QNetworkRequest request = api_.request(url.toString(), url.host() == hub.host() && url.port() == hub.port());
    request.setAttribute(QNetworkRequest::RedirectPolicyAttribute, QNetworkRequest::ManualRedirectPolicy);
    request.setTransferTimeout(kStallTimeoutMs);
    if (asked_from_ > 0) request.setRawHeader("Range", "bytes=" + QByteArray::number(asked_from_) + "-");
    redirects_ = redirects;
    reply_ = api_.network().get(request);
    connect(reply_, &QNetworkReply::readyRead, this, &HubDownload::on_data);
    connect(reply_, &QNetworkReply::finished, this, &HubDownload::on_reply_finished);
}

bool HubDownload::follow_redirect(QNetworkReply* reply) {
    const RepoFile& f = wanted_[current_];
    // What the hub says of the file where it sends us must be what its API said.
    const QByteArray commit = reply->rawHeader("X-Repo-Commit");
    QByteArray etag = reply->rawHeader("X-Linked-Etag");
    if (etag.isEmpty()) etag = reply->rawHeader("ETag");
    etag.replace('"', "");
    if (etag.startsWith("W/")) etag.remove(0, 2);
    const QByteArray size = reply->rawHeader("X-Linked-Size");
    if ((!commit.isEmpty() && commit != info_.commit.toLatin1()) || (f.lfs && !etag.isEmpty() && etag != f.etag.toLatin1()) ||
        (f.lfs && !size.isEmpty() && size.toLongLong() != f.size)) {
        fail(tr("%1 changed on the hub while it was being downloaded (commit %2, hash %3 where %4 and %5 were listed); try again.")
                 .arg(f.path, QString::fromLatin1(commit), QString::fromLatin1(etag), info_.commit, f.etag));
        return true;
    }
    const QUrl to = reply->url().resolved(QUrl::fromEncoded(reply->rawHeader("Location")));
    if (!to.isValid() || redirects_ >= kMaxRedirects) {
        fail(tr("%1 sent %2 to a place that cannot be followed (%3).").arg(QUrl(api_.endpoint()).host(), f.path, to.toString()));
        return true;
    }
    get(to, redirects_ + 1);
    return true;
}

void HubDownload::restart_hash(const RepoFile& f) {
    hash_ = std::make_unique<QCryptographicHash>(f.lfs ? QCryptographicHash::Sha256 : QCryptographicHash::Sha1);
    if (!f.lfs) hash_->addData("blob " + QByteArray::number(f.size) + '\0');  // git hashes a blob with this header
}

void HubDownload::on_data() {
    if (!reply_ || ended_) return;
    const int status = reply_->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    if (status >= 300) return;  // an error page, or a redirect's body: not the file
    if (first_data_) {
        first_data_ = false;
        if (asked_from_ > 0 && status == 200) {
            // The range was not honoured: the file comes whole again.
            done_ -= part_.size();
            part_.resize(0);
            part_.seek(0);
            restart_hash(wanted_[current_]);
        }
    }
    const QByteArray data = reply_->readAll();
    if (part_.size() + data.size() > wanted_[current_].size) {
        fail(tr("%1 sent more of %2 than its size; nothing of it was kept.").arg(QUrl(api_.endpoint()).host(), wanted_[current_].path));
        return;
    }
    if (part_.write(data) != data.size()) {
        fail(tr("Cannot write %1: %2").arg(part_.fileName(), part_.errorString()));
        return;
    }
    hash_->addData(data);
    done_ += data.size();
    report(false);
}

void HubDownload::on_reply_finished() {
    if (ended_) return;
    const RepoFile& f = wanted_[current_];
    QNetworkReply* reply = reply_;
    if (reply) {
        reply->deleteLater();
        on_data();
        if (ended_) return;
        const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
        if (status >= 400) {
            fail(api_.explain(reply, repo_id_));
            return;
        }
        if (status >= 300 && status < 400 && reply->error() == QNetworkReply::NoError) {
            follow_redirect(reply);
            return;
        }
        if (reply->error() != QNetworkReply::NoError || part_.size() < f.size) {
            // A lost connection: resumed from what arrived, a few times.
            part_.flush();
            release_file();
            if (++attempts_ >= kMaxAttempts) {
                fail(tr("The connection to %1 kept breaking while downloading %2 (%3). What arrived is kept; "
                        "try again to resume.")
                         .arg(QUrl(api_.endpoint()).host(), f.path, reply->errorString()));
                return;
            }
            const int index = current_;
            QTimer::singleShot(kRetryDelayMs, this, [this, index] {
                if (!ended_) fetch(index);
            });
            return;
        }
    }
    attempts_ = 0;
    const QByteArray got = hash_->result().toHex();
    if (got != f.etag.toLatin1()) {
        // Never kept: a damaged file must not become a blob, nor be resumed from.
        part_.remove();
        release_file();
        fail(tr("%1 arrived damaged: its %2 is %3, and the hub says %4. It was deleted; try again.")
                 .arg(f.path, f.lfs ? "SHA-256" : "git SHA-1", QString::fromLatin1(got), f.etag));
        return;
    }
    part_.close();
    std::error_code ec;
    fs::rename(cache_.incomplete(f.etag.toStdString()), cache_.blob(f.etag.toStdString()), ec);
    release_file();
    if (ec) {
        fail(tr("Cannot finish %1 in the cache: %2").arg(f.path, QString::fromStdString(ec.message())));
        return;
    }
    next_file();
}

void HubDownload::release_file() {
    if (part_.isOpen()) part_.close();
    if (lock_fd_ >= 0) {
        ::flock(lock_fd_, LOCK_UN);
        ::close(lock_fd_);
        lock_fd_ = -1;
    }
}

void HubDownload::fail(const QString& error) {
    if (ended_) return;
    ended_ = true;
    if (reply_) {
        QNetworkReply* reply = reply_;
        reply_ = nullptr;
        reply->abort();
        reply->deleteLater();
    }
    if (part_.isOpen()) part_.flush();
    release_file();
    emit finished(error);
}

void HubDownload::report(bool force) {
    const qint64 now = clock_.elapsed();
    if (!force && now - last_report_ms_ < 100) return;
    last_report_ms_ = now;
    samples_.append({now, done_});
    while (samples_.size() > 2 && now - samples_.first().first > 3000) samples_.removeFirst();
    const auto& first = samples_.first();
    const double speed = now > first.first ? double(done_ - first.second) * 1000.0 / double(now - first.first) : 0.0;
    emit progress(done_, plan_.total, speed, current_ >= 0 ? wanted_[current_].path : QString());
}

}  // namespace lumen::hub
