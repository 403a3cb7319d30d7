#pragma once
// A conversation's turns on the history's side, apart from any widget. The request for a reply
// is built from the conversation as stored: for a local model, its messages rendered with the
// model's chat template, the oldest whole turns dropped when they outgrow the context (the system
// prompt and the question being answered always stay); for a remote server's model, the messages
// themselves, which the server renders and fits to its context. The reply is kept in the history as it is written, with
// how it ended, its timings and its earlier versions. The window shows what this says and passes
// the engine's events to it.
#include <QByteArray>
#include <QElapsedTimer>
#include <QJsonArray>
#include <QJsonObject>
#include <QList>
#include <QString>
#include <optional>
#include <string>

#include "engine/runtime/engine.h"
#include "engine/text/chat_template.h"
#include "ui/chat_sampling.h"
#include "ui/engine_worker.h"
#include "ui/history_store.h"
#include "ui/remote_server.h"

namespace lumen::ui {

// The prompt of a conversation's turns from one message on, with their images (encoded files,
// in prompt order). With images it is prepared off the GUI thread (decoded, preprocessed,
// tokenized with its image tokens) before it is sent.
struct RenderedTurns {
    std::string text;
    QList<QByteArray> images;
    EncodeOptions encode;
};

struct TranscriptMessage;

// The line under a reply: how it ended, then its timings, in the user's words. `complete` false:
// the reply was still being written when it was last saved.
QString reply_footer(const QJsonObject& stats, bool complete);

// A reply version as its message's stats keep it, once shown.
struct ReplyVersion {
    QString text;
    QString model;
    QJsonObject stats;  // with every version and the one shown
    int number = 1, count = 1;
};

class ChatController {
public:
    explicit ChatController(HistoryStore& store) : store_(store) {}

    // The model that writes the replies; `tokenizer` must stay alive until clear_model().
    void set_model(const ChatTemplate& chat_template, const Tokenizer& tokenizer, int64_t context);
    // Replies come from a remote server's model.
    void set_remote_model();
    void clear_model();
    bool has_model() const { return template_.has_value() || remote_; }

    // A stored conversation as the transcript shows it.
    QList<TranscriptMessage> transcript(qint64 conversation) const;

    // The first message the model still sees when older ones were dropped (0: all of them). It
    // belongs to the conversation shown: another one starts without it.
    qint64 context_start() const { return context_start_; }
    void forget_context_start() { context_start_ = 0; }
    void message_deleted(qint64 id);

    struct RemoteTurn {
        QList<RemoteMessage> messages;
        ChatSampling sampling;  // what the conversation sets; the server's defaults elsewhere
    };
    struct Turn {
        QString problem;           // why no reply can be asked for; nothing else is set then
        GenerationRequest request;  // ready to submit, unless images must be prepared first
        std::optional<RenderedTurns> images_to_prepare;
        std::optional<RemoteTurn> remote;  // instead of the above, for a remote server's model
    };
    // Starts a reply to the last question of `conversation`, or, `continuing`, writes on its last
    // reply. The reply's message is in the history once this succeeds. `resample`: another answer
    // than the one before; `versions`: the reply's earlier versions, when it is written again.
    Turn begin_reply(qint64 conversation, const ChatSampling& model_defaults, bool resample, bool continuing,
                     const QJsonArray& versions, const QString& model_name);
    // The prompt's images prepared and counted: when they leave too little room for the reply, one
    // more turn goes and the shorter prompt comes back to be prepared instead.
    std::optional<RenderedTurns> drop_turn_if_too_long(std::size_t prompt_tokens);
    GenerationRequest take_request(const PreparedInput& input);

    // The reply being written.
    qint64 reply_message() const { return reply_; }
    const QString& reply_text() const { return reply_text_; }
    void add_to_reply(const QString& text, int tokens);
    void save_reply_if_due();  // at least once a second: a crash loses little of it
    // Saves how it ended with its timings (`author`: the name its version is kept under) and
    // returns the stats saved.
    QJsonObject finish_reply(int reason, const QString& error, const Timings& timings, bool interrupted, int64_t context,
                             const QString& author);
    Timings timings_so_far() const;  // as seen here, for a reply whose engine goes before its end

    // Deletes reply `id` (and what follows it) to write it again; returns its versions so far,
    // which the new one joins.
    QJsonArray remove_for_regenerating(qint64 id);
    // Reply `id`'s versions other than the one shown: a continued reply becomes the newest.
    QJsonArray other_versions(qint64 id) const;
    // Shows reply `id`'s older (-1) or newer (+1) version in the history; nullopt when there is none.
    std::optional<ReplyVersion> show_version(qint64 id, int step);

private:
    RemoteTurn remote_turn(const ConversationInfo& info, bool resample) const;
    // Adds the reply's message to the history (or takes the reply continued) and starts its clocks.
    void begin_reply_message(qint64 conversation, const QJsonArray& versions, const QString& model_name);
    RenderedTurns render_from(int start) const;
    int next_turn(int start) const;  // the next question after `start` that may lead; -1: none
    void set_start(int start);
    QJsonObject reply_stats_base() const;

    HistoryStore& store_;
    std::optional<ChatTemplate> template_;
    bool remote_ = false;
    const Tokenizer* tokenizer_ = nullptr;
    int64_t context_ = 0;
    qint64 context_start_ = 0;

    // The conversation as stored when the reply began: its prompt is built from this.
    QList<StoredMessage> messages_;
    QString system_;
    bool continuing_ = false;   // the last message is the reply written on, appended as it is
    int end_ = 0;               // the turns rendered are the messages before this one
    int start_ = 0;             // the first message in the prompt
    int64_t reserve_ = 0;       // tokens left free for the reply
    GenerationRequest pending_;  // waiting for its images

    qint64 reply_ = 0;
    QString reply_text_;
    QJsonArray reply_versions_;  // earlier versions of the reply being written
    QElapsedTimer since_save_;
    QElapsedTimer reply_clock_;
    double first_token_ms_ = -1, last_token_ms_ = 0;
    int reply_tokens_ = 0;
    int prompt_tokens_ = 0;
};

}  // namespace lumen::ui
