#include "ui/chat_controller.h"

#include <QObject>
#include <QStringList>
#include <algorithm>

#include "engine/util/error.h"
#include "engine/text/tokenizer.h"
#include "ui/chat_view.h"

namespace lumen::ui {
namespace {

// One version of a regenerated reply, as its stats keep it: {text, model, stats}.
QJsonObject version_entry(const QString& text, const QString& model, QJsonObject stats) {
    stats.remove("versions");
    stats.remove("version");
    return {{"text", text}, {"model", model}, {"stats", stats}};
}

QJsonObject timings_json(const Timings& t, qint64 session_len) {
    return {{"first_token_ms", t.first_token_ms},   {"tokens_per_second", t.decode_tokens_per_second},
            {"generated_tokens", t.generated_tokens}, {"prompt_tokens", t.prompt_tokens},
            {"reused_tokens", t.reused_tokens},      {"session_len", double(session_len)}};
}

}  // namespace

QString reply_footer(const QJsonObject& stats, bool complete) {
    if (!complete) return QObject::tr("interrupted");
    if (stats.isEmpty()) return {};  // an import or an older history
    QStringList parts;
    const FinishReason finish = FinishReason(stats.value("finish").toInt());
    if (stats.value("interrupted").toBool()) parts << QObject::tr("interrupted");
    else if (finish == FinishReason::Cancelled) parts << QObject::tr("stopped");
    else if (finish == FinishReason::Length) parts << QObject::tr("reached the length limit");
    else if (finish == FinishReason::Error) return QObject::tr("error: %1").arg(stats.value("error").toString());
    const int generated = stats.value("generated_tokens").toInt();
    if (generated > 0 && stats.value("first_token_ms").toDouble() > 0)
        parts << QObject::tr("first token after %1 ms").arg(qRound(stats.value("first_token_ms").toDouble()));
    if (const double rate = stats.value("tokens_per_second").toDouble(); rate > 0)
        parts << QObject::tr("%1 tokens/s").arg(rate, 0, 'f', 1);
    parts << (generated == 1 ? QObject::tr("1 token") : QObject::tr("%1 tokens").arg(generated));
    if (const int context = int(stats.value("session_len").toDouble()); context > 0)
        parts << QObject::tr("context %1 / %2").arg(stats.value("prompt_tokens").toInt() + generated).arg(context);
    return parts.join(" · ");
}

QList<TranscriptMessage> ChatController::transcript(qint64 conversation) const {
    QList<TranscriptMessage> out;
    for (const StoredMessage& m : store_.messages(conversation)) {
        TranscriptMessage t;
        t.id = m.id;
        t.role = m.role;
        t.author = m.role == "user" ? QObject::tr("You") : !m.model.isEmpty() ? m.model : QObject::tr("Model");
        t.text = m.text;
        for (const QString& hash : m.images) t.images << store_.image(hash);
        if (m.role == "assistant") t.stats = reply_footer(m.stats, m.complete);
        if (const QJsonArray versions = m.stats.value("versions").toArray(); versions.size() > 1) {
            t.versions = int(versions.size());
            t.version = m.stats.value("version").toInt() + 1;
        }
        out.push_back(t);
    }
    return out;
}

void ChatController::set_model(const ChatTemplate& chat_template, const Tokenizer& tokenizer, int64_t context) {
    template_ = chat_template;
    tokenizer_ = &tokenizer;
    context_ = context;
}

void ChatController::set_remote_model() {
    clear_model();
    remote_ = true;
}

void ChatController::clear_model() {
    remote_ = false;
    template_.reset();
    tokenizer_ = nullptr;
    context_ = 0;
}

void ChatController::message_deleted(qint64 id) {
    // Ids may be given again to later messages: a cut at a deleted message must not land on one.
    if (id == context_start_) context_start_ = 0;
}

ChatController::Turn ChatController::begin_reply(qint64 conversation, const ChatSampling& model_defaults, bool resample,
                                                 bool continuing, const QJsonArray& versions, const QString& model_name) {
    Turn turn;
    if (!has_model()) {
        turn.problem = QObject::tr("No model is loaded.");
        return turn;
    }
    const ConversationInfo info = store_.conversation(conversation);
    if (remote_) {
        if (continuing) {
            // OpenAI's API has no way to ask for more of a reply.
            turn.problem = QObject::tr("A remote server cannot continue a reply; regenerate it instead.");
            return turn;
        }
        messages_ = store_.messages(conversation);
        continuing_ = false;
        end_ = int(messages_.size());
        system_ = info.system_prompt;
        set_start(0);
        turn.remote = remote_turn(info, resample);
        prompt_tokens_ = 0;
        begin_reply_message(conversation, versions, model_name);
        return turn;
    }
    const ChatSampling sampling = info.sampling.over(model_defaults);
    GenerationRequest request;
    request.sampling = sampling.params();
    request.max_new_tokens = sampling.reply_limit();  // the model's default keeps it below the context
    if (resample) {
        // Regenerate means another answer: a greedy setting would write the same one again.
        if (request.sampling.temperature <= 0) request.sampling.temperature = 0.7f;
        request.sampling.seed = 0;
    }
    for (const auto& stop_token : template_->stop_tokens())
        if (const auto id = tokenizer_->token_id(stop_token)) request.stop_ids.push_back(*id);
    request.session = uint64_t(conversation);

    // The turns the model sees: when the conversation outgrows the context, the oldest turns are
    // dropped (the system prompt stays), leaving room for a reply of an eighth of the context (a
    // follow-up keeps as much of the conversation, and its images, as it can).
    // The cut moves in steps of whole turns and stays put until it must move again, so the turns
    // that follow it keep their cached keys and values.
    messages_ = store_.messages(conversation);
    if (continuing && (messages_.isEmpty() || messages_.last().role != "assistant")) {
        turn.problem = QObject::tr("There is no reply to continue.");
        return turn;
    }
    system_ = info.system_prompt;
    continuing_ = continuing;
    end_ = continuing ? int(messages_.size()) - 1 : int(messages_.size());
    reserve_ = std::min<int64_t>(request.max_new_tokens, context_ / 8);
    int start = 0;
    for (int i = 0; i < messages_.size(); ++i)
        if (messages_[i].id == context_start_) start = i;
    RenderedTurns turns;
    try {
        for (;;) {
            turns = render_from(start);
            request.prompt = tokenizer_->encode(turns.text, turns.encode);
            // Image tokens are counted once the images are prepared (drop_turn_if_too_long).
            if (!turns.images.isEmpty() || int64_t(request.prompt.size()) + reserve_ <= context_) break;
            const int next = next_turn(start);
            if (next < 0) break;  // only the last question is left
            start = next;
        }
    } catch (const std::exception& e) {
        turn.problem = QString::fromStdString(user_message(e, "prepare the message"));
        return turn;
    }
    if (turns.images.isEmpty() && int64_t(request.prompt.size()) >= context_) {
        turn.problem = QObject::tr("This message is too long for the model: %1 tokens, and it reads at most %2. Shorten "
                                   "it, or raise the context length in Settings.")
                           .arg(request.prompt.size())
                           .arg(context_);
        return turn;
    }
    set_start(start);
    begin_reply_message(conversation, versions, model_name);
    prompt_tokens_ = int(request.prompt.size());
    if (turns.images.isEmpty()) {
        turn.request = std::move(request);
    } else {
        pending_ = std::move(request);
        turn.images_to_prepare = std::move(turns);
    }
    return turn;
}

ChatController::RemoteTurn ChatController::remote_turn(const ConversationInfo& info, bool resample) const {
    RemoteTurn turn;
    turn.sampling = info.sampling;
    if (resample) {
        // Regenerate means another answer, as for a local model.
        if (turn.sampling.temperature.value_or(0) <= 0) turn.sampling.temperature = 0.7;
        turn.sampling.seed.reset();
    }
    if (!system_.trimmed().isEmpty()) turn.messages << RemoteMessage{"system", system_, {}};
    for (int i = 0; i < end_; ++i) {
        const StoredMessage& m = messages_[i];
        RemoteMessage r{m.role, m.text, {}};
        for (const QString& hash : m.images) r.images << store_.image(hash);
        turn.messages << r;
    }
    return turn;
}

void ChatController::begin_reply_message(qint64 conversation, const QJsonArray& versions, const QString& model_name) {
    if (continuing_) {
        reply_ = messages_[end_].id;
        reply_text_ = messages_[end_].text;
    } else {
        reply_ = store_.add_message(conversation, "assistant", QString(), {}, false, model_name);
        reply_text_.clear();
    }
    reply_versions_ = versions;
    if (!versions.isEmpty()) store_.update_message(reply_, reply_text_, false, reply_stats_base());
    since_save_.start();
    reply_clock_.start();
    first_token_ms_ = -1;
    reply_tokens_ = 0;
}

std::optional<RenderedTurns> ChatController::drop_turn_if_too_long(std::size_t prompt_tokens) {
    if (int64_t(prompt_tokens) + reserve_ <= context_) return std::nullopt;
    const int next = next_turn(start_);
    if (next < 0) return std::nullopt;  // the last question alone: it goes as it is
    set_start(next);
    return render_from(next);
}

GenerationRequest ChatController::take_request(const PreparedInput& input) {
    GenerationRequest request = std::move(pending_);
    pending_ = GenerationRequest{};
    request.prompt = input.ids;
    request.images = input.images;
    prompt_tokens_ = int(input.ids.size());
    return request;
}

RenderedTurns ChatController::render_from(int start) const {
    RenderedTurns out;
    out.encode = EncodeOptions{.add_special_tokens = template_->tokenize_with_special_tokens()};
    std::vector<ChatMessage> turns;
    if (!system_.trimmed().isEmpty()) turns.push_back({"system", system_.toStdString(), 0});
    for (int i = start; i < end_; ++i) {
        const StoredMessage& m = messages_[i];
        turns.push_back({m.role.toStdString(), m.text.toStdString(), int(m.images.size())});
        for (const QString& hash : m.images) out.images << store_.image(hash);
    }
    out.text = template_->render(turns);
    if (continuing_) out.text += messages_[end_].text.toStdString();
    return out;
}

int ChatController::next_turn(int start) const {
    int next = start + 1;
    while (next < end_ && messages_[next].role != "user") ++next;
    // The question being answered is the last one before end_: it always stays.
    return next < end_ ? next : -1;
}

void ChatController::set_start(int start) {
    start_ = start;
    context_start_ = start > 0 && start < messages_.size() ? messages_[start].id : 0;
}

QJsonObject ChatController::reply_stats_base() const {
    return reply_versions_.isEmpty() ? QJsonObject{} : QJsonObject{{"versions", reply_versions_}};
}

void ChatController::add_to_reply(const QString& text, int tokens) {
    const double now = double(reply_clock_.nsecsElapsed()) / 1e6;
    if (first_token_ms_ < 0) first_token_ms_ = now;
    last_token_ms_ = now;
    reply_tokens_ += tokens;
    reply_text_ += text;
}

void ChatController::save_reply_if_due() {
    if (since_save_.elapsed() < 1000) return;
    store_.update_message(reply_, reply_text_, false, reply_stats_base());
    since_save_.restart();
}

QJsonObject ChatController::finish_reply(int reason, const QString& error, const Timings& timings, bool interrupted,
                                         int64_t context, const QString& author) {
    QJsonObject stats = timings_json(timings, context);
    stats.insert("finish", reason);
    if (!error.isEmpty()) stats.insert("error", error);
    if (interrupted) stats.insert("interrupted", true);
    if (!reply_versions_.isEmpty()) {
        // The new version joins the earlier ones, and is the one shown.
        QJsonArray all = reply_versions_;
        all.append(version_entry(reply_text_, author, stats));
        stats.insert("versions", all);
        stats.insert("version", int(all.size()) - 1);
        reply_versions_ = {};
    }
    store_.update_message(reply_, reply_text_, true, stats);
    return stats;
}

Timings ChatController::timings_so_far() const {
    Timings t;
    t.prompt_tokens = prompt_tokens_;
    t.generated_tokens = reply_tokens_;
    if (first_token_ms_ >= 0) {
        t.first_token_ms = first_token_ms_;
        if (reply_tokens_ > 1 && last_token_ms_ > first_token_ms_)
            t.decode_tokens_per_second = (reply_tokens_ - 1) * 1000.0 / (last_token_ms_ - first_token_ms_);
    }
    return t;
}

QJsonArray ChatController::remove_for_regenerating(qint64 id) {
    // The reply written before is kept as a version to flip back to.
    const StoredMessage old = store_.message(id);
    QJsonArray versions = old.stats.value("versions").toArray();
    if (versions.isEmpty()) versions.append(version_entry(old.text, old.model, old.stats));
    store_.delete_from(id);
    return versions;
}

QJsonArray ChatController::other_versions(qint64 id) const {
    const StoredMessage old = store_.message(id);
    QJsonArray others = old.stats.value("versions").toArray();
    if (!others.isEmpty()) others.removeAt(old.stats.value("version").toInt());
    return others;
}

std::optional<ReplyVersion> ChatController::show_version(qint64 id, int step) {
    const StoredMessage m = store_.message(id);
    const QJsonArray versions = m.stats.value("versions").toArray();
    const int shown = m.stats.value("version").toInt() + step;
    if (shown < 0 || shown >= versions.size()) return std::nullopt;
    const QJsonObject v = versions[shown].toObject();
    ReplyVersion out{v.value("text").toString(), v.value("model").toString(), v.value("stats").toObject(), shown + 1,
                     int(versions.size())};
    out.stats.insert("versions", versions);
    out.stats.insert("version", shown);
    store_.update_message(id, out.text, true, out.stats);
    store_.set_message_model(id, out.model);
    return out;
}

}  // namespace lumen::ui
