#pragma once
// The Hugging Face Hub's HTTP API as huggingface_hub speaks it, over Qt Network: a repository's
// files at a revision (with sizes and hashes), and model search. Answers arrive as signals;
// failures in users' words (gated, not found, offline).
#include <QByteArray>
#include <QList>
#include <QNetworkAccessManager>
#include <QObject>
#include <QString>
#include <QStringList>

class QNetworkReply;

namespace lumen::hub {

struct RepoFile {
    QString path;
    qint64 size = 0;
    QString etag;  // its blob's name in the cache: SHA-256 when in Git LFS, else the git blob SHA-1
    bool lfs = false;
};

struct RepoInfo {
    QString id;
    QString commit;  // the revision resolved
    QList<RepoFile> files;  // every file of the repository
    QString gated;          // "" (open), "auto" or "manual"
    QString pipeline_tag;
};

struct SearchHit {
    QString id;
    qint64 downloads = 0;
    qint64 likes = 0;
    QString pipeline_tag;
    QStringList tags;
    bool gated = false;
};

// The files of a repository Lumen fetches: those wanted_file() takes, less a second copy of the
// weights in Mistral's layout (consolidated*.safetensors, or under original/) beside the
// transformers ones.
QList<RepoFile> files_to_fetch(const QList<RepoFile>& files);

class HubApi : public QObject {
    Q_OBJECT
public:
    HubApi(QString endpoint, QString token, QObject* parent = nullptr);

    const QString& endpoint() const { return endpoint_; }
    // GET /api/models/<repo>/revision/<revision>?blobs=true; answers with info() or failed().
    void repo_info(const QString& repo_id, const QString& revision = "main");
    // GET /api/models?search=...; `filter` a tag ("image-text-to-text", "safetensors"), may be empty.
    void search(const QString& text, const QString& filter = {}, int limit = 20);

    // With the token (unless `to_hub` is false: a redirect elsewhere), asking for the file as it is
    // (no compression: ranges and sizes must hold).
    QNetworkRequest request(const QString& url, bool to_hub = true) const;
    QNetworkAccessManager& network() { return network_; }
    // What a failed reply means to the user, for `repo_id` (its status, X-Error-Code and body).
    QString explain(QNetworkReply* reply, const QString& repo_id) const;

signals:
    void info(const lumen::hub::RepoInfo& info);
    void found(const QList<lumen::hub::SearchHit>& hits);
    void failed(const QString& message);

private:
    QString endpoint_;
    QString token_;
    QNetworkAccessManager network_;
};

}  // namespace lumen::hub

Q_DECLARE_METATYPE(lumen::hub::RepoInfo)
Q_DECLARE_METATYPE(lumen::hub::SearchHit)
