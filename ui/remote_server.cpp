#include "ui/remote_server.h"

#include <QElapsedTimer>
#include <QJsonArray>
#include <QJsonDocument>
#include <QMimeDatabase>
#include <QNetworkReply>
#include <QNetworkRequest>

namespace lumen::ui {
namespace {

constexpr int kListTimeoutMs = 10000;
constexpr int kStreamSilenceMs = 300000;

qint64 now_ns() {
    static QElapsedTimer clock = [] {
        QElapsedTimer c;
        c.start();
        return c;
    }();
    return clock.nsecsElapsed();
}

QString data_url(const QByteArray& image) {
    const QString mime = QMimeDatabase().mimeTypeForData(image).name();
    return "data:" + (mime.startsWith("image/") ? mime : QString("image/png")) + ";base64," + QString::fromLatin1(image.toBase64());
}

}  // namespace

RemoteServer::RemoteServer(const QString& base_url, const QString& api_key, QObject* parent)
    : QObject(parent), base_(normalized(base_url)), key_(api_key) {}

QUrl RemoteServer::normalized(const QString& base_url) {
    QString s = base_url.trimmed();
    while (s.endsWith('/')) s.chop(1);
    if (!s.contains("://")) s = "http://" + s;
    // An endpoint's address pasted whole ("…/v1/chat/completions") names its base too.
    if (const qsizetype v1 = s.indexOf("/v1/"); v1 >= 0) s.truncate(v1 + 3);
    if (!s.endsWith("/v1")) s += "/v1";
    return QUrl(s);
}

QString RemoteServer::error_message(const QByteArray& body) {
    // OpenAI's {"error": {"message"}}; vLLM's older {"object": "error", "message"}; FastAPI's
    // {"detail"} (LMDeploy and others, for routes and validation).
    const QJsonObject o = QJsonDocument::fromJson(body).object();
    if (const QJsonValue e = o.value("error"); e.isObject()) return e.toObject().value("message").toString();
    else if (e.isString()) return e.toString();
    if (o.value("message").isString()) return o.value("message").toString();
    if (o.value("detail").isString()) return o.value("detail").toString();
    if (const QJsonArray details = o.value("detail").toArray(); !details.isEmpty())
        return details.first().toObject().value("msg").toString();
    return {};
}

QString RemoteServer::address() const { return base_.host() + (base_.port() > 0 ? ":" + QString::number(base_.port()) : QString()); }

QNetworkRequest RemoteServer::request(const QString& path) const {
    QNetworkRequest r(QUrl(base_.toString() + path));
    r.setHeader(QNetworkRequest::ContentTypeHeader, "application/json");
    r.setAttribute(QNetworkRequest::RedirectPolicyAttribute, QNetworkRequest::NoLessSafeRedirectPolicy);
    if (!key_.isEmpty()) r.setRawHeader("Authorization", "Bearer " + key_.toUtf8());
    return r;
}

QString RemoteServer::explain(QNetworkReply* reply, const QByteArray& body) const {
    const QString where = address();
    const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    QString said = error_message(body);
    if (said.isEmpty()) said = QString::fromUtf8(body.left(200)).trimmed();
    switch (status) {
    case 0: break;
    case 401:
    case 403: return tr("The server at %1 did not accept the API key (%2).").arg(where, said.isEmpty() ? tr("HTTP %1").arg(status) : said);
    case 404: return tr("The server at %1 does not have that (%2).").arg(where, said.isEmpty() ? tr("not found") : said);
    default: return tr("The server at %1 answered with an error (HTTP %2)%3").arg(where).arg(status).arg(said.isEmpty() ? "." : ": " + said);
    }
    switch (reply->error()) {
    case QNetworkReply::ConnectionRefusedError: return tr("Cannot reach the server at %1: nothing is listening there.").arg(where);
    case QNetworkReply::HostNotFoundError: return tr("Cannot reach the server at %1: no such host.").arg(where);
    case QNetworkReply::TimeoutError:
    case QNetworkReply::OperationCanceledError: return tr("The server at %1 did not answer in time.").arg(where);
    case QNetworkReply::RemoteHostClosedError: return tr("The server at %1 closed the connection.").arg(where);
    default: return tr("Cannot reach the server at %1: %2").arg(where, reply->errorString());
    }
}

void RemoteServer::list_models() {
    QNetworkRequest get = request("/models");
    get.setTransferTimeout(kListTimeoutMs);
    QNetworkReply* reply = network_.get(get);
    connect(reply, &QNetworkReply::finished, this, [this, reply] {
        reply->deleteLater();
        const QByteArray body = reply->readAll();
        if (reply->error() != QNetworkReply::NoError) {
            emit failed(explain(reply, body));
            return;
        }
        QStringList ids;
        for (const auto& m : QJsonDocument::fromJson(body).object().value("data").toArray()) {
            const QString id = m.toObject().value("id").toString();
            if (!id.isEmpty()) ids << id;
        }
        emit models_listed(ids);
    });
}

quint64 RemoteServer::chat(const QString& model, const QList<RemoteMessage>& messages, const ChatSampling& sampling) {
    QJsonArray turns;
    for (const RemoteMessage& m : messages) {
        if (m.images.isEmpty()) {
            turns.append(QJsonObject{{"role", m.role}, {"content", m.text}});
            continue;
        }
        QJsonArray parts;
        for (const QByteArray& image : m.images)
            parts.append(QJsonObject{{"type", "image_url"}, {"image_url", QJsonObject{{"url", data_url(image)}}}});
        parts.append(QJsonObject{{"type", "text"}, {"text", m.text}});
        turns.append(QJsonObject{{"role", m.role}, {"content", parts}});
    }
    QJsonObject body{{"model", model}, {"messages", turns}, {"stream", true},
                     {"stream_options", QJsonObject{{"include_usage", true}}}};
    const ChatSampling& c = sampling;
    if (c.temperature) body.insert("temperature", *c.temperature);
    if (c.top_p) body.insert("top_p", *c.top_p);
    if (c.max_new_tokens) body.insert("max_tokens", *c.max_new_tokens);
    if (c.seed && *c.seed != 0) body.insert("seed", qint64(*c.seed));
    if (c.top_k && *c.top_k > 0) body.insert("top_k", *c.top_k);
    if (c.min_p && *c.min_p > 0) body.insert("min_p", *c.min_p);
    if (c.repetition_penalty && *c.repetition_penalty != 1) body.insert("repetition_penalty", *c.repetition_penalty);

    const quint64 id = next_++;
    Stream& s = streams_[id];
    s.started_ns = now_ns();
    s.reason = int(FinishReason::Stop);
    QNetworkRequest post = request("/chat/completions");
    // Nothing for so long means the server is gone (a long prompt's first token comes well before).
    post.setTransferTimeout(kStreamSilenceMs);
    QNetworkReply* reply = network_.post(post, QJsonDocument(body).toJson(QJsonDocument::Compact));
    s.reply = reply;
    connect(reply, &QNetworkReply::readyRead, this, [this, id] { read_events(id); });
    connect(reply, &QNetworkReply::finished, this, [this, id, reply] {
        reply->deleteLater();
        if (!streams_.contains(id)) return;  // ended (cancelled, or [DONE] read)
        const int status = reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
        if (reply->error() != QNetworkReply::NoError || status >= 400) {
            end(id, int(FinishReason::Error), explain(reply, streams_[id].pending + reply->readAll()));
            return;
        }
        read_events(id);
        if (streams_.contains(id)) end(id, streams_[id].reason, {});
    });
    return id;
}

void RemoteServer::read_events(quint64 id) {
    auto it = streams_.find(id);
    if (it == streams_.end() || !it->reply) return;
    const int status = it->reply->attribute(QNetworkRequest::HttpStatusCodeAttribute).toInt();
    it->pending += it->reply->readAll();
    if (status >= 400) return;  // an error body: explained when the reply ends
    // Events may end their lines with CR LF or CR as well as LF.
    it->pending.replace("\r\n", "\n");
    if (!it->pending.endsWith('\r')) it->pending.replace('\r', '\n');
    // Server-sent events: "data: ..." lines, each event ended by a blank line.
    for (qsizetype end_of_event; (end_of_event = it->pending.indexOf("\n\n")) >= 0;) {
        const QByteArray event = it->pending.left(end_of_event);
        it->pending.remove(0, end_of_event + 2);
        for (const QByteArray& raw : event.split('\n')) {
            const QByteArray line = raw.trimmed();
            if (!line.startsWith("data:")) continue;
            const QByteArray data = line.mid(5).trimmed();
            if (data == "[DONE]") {
                end(id, it->reason, {});
                return;
            }
            const QJsonObject o = QJsonDocument::fromJson(data).object();
            if (o.contains("error") || o.value("object") == "error") {
                end(id, int(FinishReason::Error), tr("The server stopped the reply: %1").arg(error_message(data)));
                return;
            }
            if (const QJsonObject usage = o.value("usage").toObject(); !usage.isEmpty()) {
                it->timings.prompt_tokens = usage.value("prompt_tokens").toInt();
                it->timings.generated_tokens = usage.value("completion_tokens").toInt();
                it->timings.reused_tokens = usage.value("prompt_tokens_details").toObject().value("cached_tokens").toInt();
            }
            for (const auto& c : o.value("choices").toArray()) {
                const QJsonObject choice = c.toObject();
                const QString text = choice.value("delta").toObject().value("content").toString();
                if (!text.isEmpty()) {
                    const qint64 t = now_ns();
                    if (it->first_ns < 0) it->first_ns = t;
                    it->last_ns = t;
                    ++it->tokens;
                    emit delta(id, text, 1);
                    it = streams_.find(id);  // a slot may have cancelled it
                    if (it == streams_.end()) return;
                }
                const QString finish = choice.value("finish_reason").toString();
                if (finish == "length") it->reason = int(FinishReason::Length);
                else if (!finish.isEmpty()) it->reason = int(FinishReason::Stop);
            }
        }
    }
}

void RemoteServer::cancel(quint64 request) {
    auto it = streams_.find(request);
    if (it == streams_.end()) return;
    QPointer<QNetworkReply> reply = it->reply;
    end(request, int(FinishReason::Cancelled), {});
    if (reply) reply->abort();
}

void RemoteServer::end(quint64 id, int reason, const QString& error) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Timings t = it->timings;
    if (t.generated_tokens == 0) t.generated_tokens = it->tokens;
    if (it->first_ns >= 0) {
        t.first_token_ms = double(it->first_ns - it->started_ns) / 1e6;
        t.decode_ms = double(it->last_ns - it->first_ns) / 1e6;
        if (t.decode_ms > 0 && t.generated_tokens > 1) t.decode_tokens_per_second = (t.generated_tokens - 1) * 1000.0 / t.decode_ms;
    }
    streams_.erase(it);
    emit finished(id, reason, error, t);
}

}  // namespace lumen::ui
