#include "hub/hub_api.h"

#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QNetworkReply>
#include <QNetworkRequest>
#include <QRegularExpression>
#include <QUrlQuery>

#include "hub/hub_cache.h"

namespace lumen::hub {
namespace {

constexpr int kApiTimeoutMs = 30000;

}  // namespace

QList<RepoFile> files_to_fetch(const QList<RepoFile>& files) {
    auto second_copy = [](const QString& path) {
        const QString name = path.section('/', -1);
        return path.startsWith("original/") || name.startsWith("consolidated");
    };
    bool transformers_weights = false;
    for (const RepoFile& f : files)
        transformers_weights = transformers_weights || (f.path.endsWith(".safetensors") && !second_copy(f.path));
    QList<RepoFile> out;
    for (const RepoFile& f : files)
        if (wanted_file(f.path.toStdString()) && !(transformers_weights && f.path.endsWith(".safetensors") && second_copy(f.path)))
            out << f;
    return out;
}

HubApi::HubApi(QString endpoint, QString token, QObject* parent)
    : QObject(parent), endpoint_(std::move(endpoint)), token_(std::move(token)) {
    while (endpoint_.endsWith('/')) endpoint_.chop(1);
}

QNetworkRequest HubApi::request(const QString& url, bool to_hub) const {
    QNetworkRequest r{QUrl(url)};
    r.setAttribute(QNetworkRequest::RedirectPolicyAttribute, QNetworkRequest::NoLessSafeRedirectPolicy);
    r.setRawHeader("Accept-Encoding", "identity");
    r.setHeader(QNetworkRequest::UserAgentHeader, "lumen (huggingface_hub-compatible downloader)");
    if (to_hub && !token_.isEmpty()) r.setRawHeader("Authorization", "Bearer " + token_.toUtf8());
    r.setTransferTimeout(kApiTimeoutMs);
    return r;
}

QString HubApi::explain(QNetworkReply* reply, const QString& repo_id) const {
    const QString host = QUrl(endpoint_).host();
    const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    const QByteArray code = reply->rawHeader("X-Error-Code");
    const QString page = endpoint_ + "/" + repo_id;
    if (code == "GatedRepo") {
        if (token_.isEmpty() || status == 401)
            return tr("%1 is gated: log in at %2, accept its licence there, and give Lumen a token (HF_TOKEN, "
                      "`huggingface-cli login`, or the token setting).")
                .arg(repo_id, page);
        return tr("Your Hugging Face token does not give access to %1 yet: accept its licence at %2 while logged in.").arg(repo_id, page);
    }
    if (code == "RepoNotFound" || (status == 401 && code.isEmpty()))
        return token_.isEmpty() ? tr("%1 is not on %2 (or it is private and Lumen has no token for it).").arg(repo_id, host)
                                : tr("%1 is not on %2, or your token cannot see it.").arg(repo_id, host);
    if (code == "RevisionNotFound") return tr("%1 has no such revision on %2.").arg(repo_id, host);
    if (code == "EntryNotFound" || status == 404) return tr("%1 on %2 has no such file: %3").arg(repo_id, host, reply->url().path());
    if (status == 403) return tr("%1 refused access to %2 (HTTP 403).").arg(host, repo_id);
    if (status == 429) return tr("%1 asks to slow down (too many requests); try again in a minute.").arg(host);
    if (status >= 500) return tr("%1 had a problem on its side (HTTP %2); try again later.").arg(host).arg(status);
    if (status > 0) return tr("%1 answered with HTTP %2 for %3.").arg(host).arg(status).arg(repo_id);
    switch (reply->error()) {
    case QNetworkReply::HostNotFoundError: return tr("Cannot reach %1: no such host (offline?).").arg(host);
    case QNetworkReply::ConnectionRefusedError: return tr("Cannot reach %1: the connection was refused.").arg(host);
    case QNetworkReply::TimeoutError:
    case QNetworkReply::OperationCanceledError: return tr("%1 stopped answering (offline, or a very slow connection).").arg(host);
    default: return tr("Cannot reach %1: %2").arg(host, reply->errorString());
    }
}

void HubApi::repo_info(const QString& repo_id, const QString& revision) {
    const QString url = endpoint_ + "/api/models/" + repo_id + "/revision/" + QString::fromUtf8(QUrl::toPercentEncoding(revision)) +
                        "?blobs=true";
    QNetworkReply* reply = network_.get(request(url));
    connect(reply, &QNetworkReply::finished, this, [this, reply, repo_id] {
        reply->deleteLater();
        const QByteArray body = reply->readAll();
        if (reply->error() != QNetworkReply::NoError) {
            emit failed(explain(reply, repo_id));
            return;
        }
        const QJsonObject o = QJsonDocument::fromJson(body).object();
        RepoInfo r;
        r.id = o.value("id").toString(repo_id);
        r.commit = o.value("sha").toString();
        r.pipeline_tag = o.value("pipeline_tag").toString();
        const QJsonValue gated = o.value("gated");
        r.gated = gated.isString() ? gated.toString() : QString();
        for (const auto& s : o.value("siblings").toArray()) {
            const QJsonObject f = s.toObject();
            RepoFile file;
            file.path = f.value("rfilename").toString();
            const QJsonObject lfs = f.value("lfs").toObject();
            file.lfs = !lfs.isEmpty();
            file.size = qint64(file.lfs ? lfs.value("size").toDouble() : f.value("size").toDouble());
            file.etag = file.lfs ? lfs.value("sha256").toString() : f.value("blobId").toString();
            r.files << file;
        }
        // Without a commit or hashes nothing could be placed or checked in the cache.
        static const QRegularExpression hex40("^[0-9a-f]{40}$");
        bool complete = hex40.match(r.commit).hasMatch();
        for (const RepoFile& f : r.files) complete = complete && !f.path.isEmpty() && !f.etag.isEmpty();
        if (!complete) {
            emit failed(tr("%1 answered for %2 without the commit and file hashes a download needs.").arg(QUrl(endpoint_).host(), repo_id));
            return;
        }
        emit info(r);
    });
}

void HubApi::search(const QString& text, const QString& filter, int limit) {
    QUrlQuery q;
    if (!text.isEmpty()) q.addQueryItem("search", text);
    if (!filter.isEmpty()) q.addQueryItem("filter", filter);
    q.addQueryItem("sort", "downloads");
    q.addQueryItem("direction", "-1");
    q.addQueryItem("limit", QString::number(limit));
    q.addQueryItem("full", "false");
    QUrl url(endpoint_ + "/api/models");
    url.setQuery(q);
    QNetworkReply* reply = network_.get(request(url.toString()));
    connect(reply, &QNetworkReply::finished, this, [this, reply] {
        reply->deleteLater();
        const QByteArray body = reply->readAll();
        if (reply->error() != QNetworkReply::NoError) {
            emit failed(explain(reply, tr("the search")));
            return;
        }
        QList<SearchHit> hits;
        for (const auto& v : QJsonDocument::fromJson(body).array()) {
            const QJsonObject o = v.toObject();
            SearchHit h;
            h.id = o.value("id").toString(o.value("modelId").toString());
            if (h.id.isEmpty()) continue;
            h.downloads = qint64(o.value("downloads").toDouble());
            h.likes = qint64(o.value("likes").toDouble());
            h.pipeline_tag = o.value("pipeline_tag").toString();
            for (const auto& t : o.value("tags").toArray()) h.tags << t.toString();
            const QJsonValue gated = o.value("gated");
            h.gated = gated.isString() || gated.toBool();
            hits << h;
        }
        emit found(hits);
    });
}

}  // namespace lumen::hub
