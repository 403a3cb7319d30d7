#pragma once
// A remote OpenAI-compatible server (Lumen's own, LMDeploy, vLLM, llama-server, LM Studio...) as
// the app talks to it over Qt Network: the models it serves, and chats streamed from it (text and
// images as data: URLs), with the same delta / finished shape as the local engine's events and
// failures explained in users' words (unreachable, the key refused, the model gone).
#include <QByteArray>
#include <QHash>
#include <QJsonObject>
#include <QList>
#include <QNetworkAccessManager>
#include <QObject>
#include <QPointer>
#include <QString>
#include <QStringList>
#include <QUrl>

#include "engine/runtime/engine.h"
#include "ui/chat_sampling.h"

class QNetworkReply;

namespace lumen::ui {

struct RemoteMessage {
    QString role;             // "system", "user" or "assistant"
    QString text;
    QList<QByteArray> images;  // encoded files (PNG, JPEG, WebP), sent as data: URLs
};

class RemoteServer : public QObject {
    Q_OBJECT
public:
    // `base_url` as users copy it ("http://host:23333/v1"; a missing /v1 is added).
    RemoteServer(const QString& base_url, const QString& api_key, QObject* parent = nullptr);

    const QUrl& base_url() const { return base_; }
    QString address() const;  // "host:port", as messages name the server
    // GET /models; the answer arrives as models_listed() or failed().
    void list_models();
    // POST /chat/completions, streamed; returns the request's id for delta() and finished().
    // Sampling fields left unset take the server's defaults (its model's generation config);
    // top_k, min_p and repetition_penalty, which OpenAI's own API lacks, are sent only when
    // they do something.
    quint64 chat(const QString& model, const QList<RemoteMessage>& messages, const ChatSampling& sampling = {});
    void cancel(quint64 request);

    static QUrl normalized(const QString& base_url);
    // The message in an error body, as the servers in use shape it (empty: none found).
    static QString error_message(const QByteArray& body);

signals:
    void models_listed(const QStringList& ids);
    void failed(const QString& message);  // listing the models failed
    void delta(quint64 request, const QString& text, int tokens);
    // reason: a lumen::FinishReason; error empty unless it failed. Timings from the client's clock
    // (first token, decode speed) and the server's usage (prompt and reply tokens).
    void finished(quint64 request, int reason, const QString& error, const lumen::Timings& timings);

private:
    struct Stream {
        QPointer<QNetworkReply> reply;
        QByteArray pending;  // an event not yet ended by its blank line
        qint64 started_ns = 0, first_ns = -1, last_ns = 0;
        int tokens = 0;
        int reason = 0;
        lumen::Timings timings;
    };  // erased when the request ends
    QNetworkRequest request(const QString& path) const;
    void read_events(quint64 id);
    void end(quint64 id, int reason, const QString& error);
    QString explain(QNetworkReply* reply, const QByteArray& body) const;

    QUrl base_;
    QString key_;
    QNetworkAccessManager network_;
    QHash<quint64, Stream> streams_;
    quint64 next_ = 1;
};

}  // namespace lumen::ui
