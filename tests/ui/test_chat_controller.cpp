// The chat controller builds a reply's request from the history alone, with no widget: the
// sampling (min_p included) layered over the model's defaults, the turns it keeps when the
// conversation outgrows the context, where the cut stays, the prompt with images, and the reply
// kept in the history as it is written, with its versions.
#include <QtTest>

#include "engine/model/generation_config.h"
#include "engine/text/tokenizer.h"
#include "tests/support/test_support.h"
#include "ui/chat_controller.h"
#include "ui/history_store.h"

using namespace lumen;
using namespace lumen::test;
using namespace lumen::ui;

namespace {

// A question or reply of `words` words.
QString words_text(const QString& word, int words) {
    QStringList out;
    for (int i = 0; i < words; ++i) out << word;
    return out.join(' ');
}

}  // namespace

class TestChatController : public QObject {
    Q_OBJECT
private:
    std::unique_ptr<Tokenizer> tokenizer_;
    const ChatTemplate llava_ = *ChatTemplate::by_name("llava");

    // The ids of `messages` (from the store) rendered as the model sees them, after `system`.
    std::vector<int32_t> expected_prompt(const QList<StoredMessage>& messages, const QString& system = {}) const {
        std::vector<ChatMessage> turns;
        if (!system.isEmpty()) turns.push_back({"system", system.toStdString(), 0});
        for (const StoredMessage& m : messages)
            turns.push_back({m.role.toStdString(), m.text.toStdString(), int(m.images.size())});
        return tokenizer_->encode(llava_.render(turns), {.add_special_tokens = llava_.tokenize_with_special_tokens()});
    }
    static ChatSampling short_replies() { return ChatSampling{.max_new_tokens = 16}; }

private slots:
    void initTestCase() {
        const auto data = shared_data();
        if (!data) QSKIP("../shared/data is absent; these tests tokenize with stories260K's tokenizer");
        tokenizer_ = Tokenizer::load(*data / "models" / "stories260K-hf");
    }

    // generation_config.json's min_p reaches the engine's request, unless the conversation sets its own.
    void minPReachesTheRequest() {
        QTemporaryDir model, dir;
        write_file(path_of(model) / "generation_config.json", R"({"do_sample": true, "temperature": 0.6, "min_p": 0.05})");
        const ChatSampling defaults = ChatSampling::model_defaults(load_generation_config(path_of(model)), 512);
        QCOMPARE(defaults.min_p, std::optional<double>(0.05f));
        HistoryStore store(dir.filePath("h.sqlite3"));
        ChatController controller(store);
        controller.set_model(llava_, *tokenizer_, 512);
        const qint64 plain = store.create_conversation("plain");
        store.add_message(plain, "user", "Once upon a time");
        const ChatController::Turn a = controller.begin_reply(plain, defaults, false, false, {}, "stories");
        QVERIFY2(a.problem.isEmpty(), qPrintable(a.problem));
        QCOMPARE(a.request.sampling.min_p, 0.05f);
        QCOMPARE(a.request.sampling.temperature, 0.6f);
        QCOMPARE(a.request.max_new_tokens, 256);
        const qint64 own = store.create_conversation("own", {}, ChatSampling{.min_p = 0.2, .seed = 7});
        store.add_message(own, "user", "Once upon a time");
        const ChatController::Turn b = controller.begin_reply(own, defaults, false, false, {}, "stories");
        QCOMPARE(b.request.sampling.min_p, 0.2f);
        QCOMPARE(b.request.sampling.seed, uint64_t(7));
        QCOMPARE(b.request.session, std::optional<uint64_t>(uint64_t(own)));
        QCOMPARE(b.request.stop_ids, std::vector<int32_t>{*tokenizer_->token_id("</s>")});
        // Regenerating asks for another answer: a fresh seed, never greedy.
        const qint64 greedy = store.create_conversation("greedy", {}, ChatSampling{.temperature = 0.0});
        store.add_message(greedy, "user", "Once upon a time");
        const ChatController::Turn c = controller.begin_reply(greedy, defaults, true, false, {}, "stories");
        QCOMPARE(c.request.sampling.temperature, 0.7f);
        QCOMPARE(c.request.sampling.seed, uint64_t(0));
    }

    // The prompt comes from the history: when the conversation outgrows the context the oldest
    // whole turns go (the system prompt stays), leaving room for a reply of
    // min(max_new_tokens, context / 8); the cut stays where it is until it must move.
    void trimsTheStoredConversationToTheContext() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        const int context = 256;
        ChatController controller(store);
        controller.set_model(llava_, *tokenizer_, context);
        const qint64 chat = store.create_conversation("long", "Be brief.", short_replies());
        for (int turn = 0; turn < 3; ++turn) {
            store.add_message(chat, "user", words_text("cat", 30));  // two tokens a word
            store.add_message(chat, "assistant", words_text("dog", 30), {}, true, "stories");
        }
        store.add_message(chat, "user", "And then?");
        const QList<StoredMessage> before = store.messages(chat);
        QVERIFY(expected_prompt(before, "Be brief.").size() + 16 > std::size_t(context));  // all of it does not fit

        ChatController::Turn turn = controller.begin_reply(chat, {}, false, false, {}, "stories");
        QVERIFY2(turn.problem.isEmpty(), qPrintable(turn.problem));
        QVERIFY(!turn.images_to_prepare);
        // The model sees from a question on, with the system prompt before it, and its reply fits.
        const int start = int(std::find_if(before.begin(), before.end(),
                                           [&](const StoredMessage& m) { return m.id == controller.context_start(); }) -
                              before.begin());
        QVERIFY(start > 0 && start < before.size());
        QCOMPARE(before[start].role, QString("user"));
        QCOMPARE(turn.request.prompt, expected_prompt(before.mid(start), "Be brief."));
        QVERIFY(int64_t(turn.request.prompt.size()) + 16 <= context);
        // ...and the turn before the cut would not have fitted: the cut is as late as it must be, no later.
        const int earlier = start - 2;
        QCOMPARE(before[earlier].role, QString("user"));
        QVERIFY(expected_prompt(before.mid(earlier), "Be brief.").size() + 16 > std::size_t(context));
        // The reply is in the history, empty and not complete until it ends.
        const qint64 reply = controller.reply_message();
        QCOMPARE(store.messages(chat).size(), before.size() + 1);
        QCOMPARE(store.message(reply).role, QString("assistant"));
        QCOMPARE(store.message(reply).model, QString("stories"));
        QVERIFY(!store.message(reply).complete);
        controller.add_to_reply("The end.", 3);
        Timings t;
        t.generated_tokens = 3;
        const QJsonObject stats = controller.finish_reply(int(FinishReason::Stop), {}, t, false, context, "stories");
        QCOMPARE(store.message(reply).text, QString("The end."));
        QVERIFY(store.message(reply).complete);
        QCOMPARE(store.message(reply).stats, stats);
        QCOMPARE(stats.value("generated_tokens").toInt(), 3);

        // A short follow-up still fits after the same cut: it stays put (the cached turns stay valid).
        const qint64 cut = controller.context_start();
        store.add_message(chat, "user", "Why?");
        turn = controller.begin_reply(chat, {}, false, false, {}, "stories");
        QVERIFY(turn.problem.isEmpty());
        QCOMPARE(controller.context_start(), cut);
        const QList<StoredMessage> now = store.messages(chat);  // the new reply last
        QCOMPARE(turn.request.prompt, expected_prompt(now.mid(start, now.size() - start - 1), "Be brief."));
        controller.finish_reply(int(FinishReason::Stop), {}, {}, false, context, "stories");

        // A long one moves it on by whole turns.
        store.add_message(chat, "user", words_text("sun", 60));
        turn = controller.begin_reply(chat, {}, false, false, {}, "stories");
        QVERIFY(turn.problem.isEmpty());
        QVERIFY(controller.context_start() > cut);
        QCOMPARE(store.message(controller.context_start()).role, QString("user"));
        QVERIFY(int64_t(turn.request.prompt.size()) + 16 <= context);
        controller.finish_reply(int(FinishReason::Stop), {}, {}, false, context, "stories");

        // Deleting the message the cut is at forgets the cut.
        controller.message_deleted(controller.context_start());
        QCOMPARE(controller.context_start(), 0);
    }

    // A question that cannot fit even alone is refused, and nothing is added to the history.
    void aQuestionLongerThanTheContextIsRefused() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        ChatController controller(store);
        controller.set_model(llava_, *tokenizer_, 64);
        const qint64 chat = store.create_conversation("too long");
        store.add_message(chat, "user", words_text("word", 100));
        const ChatController::Turn turn = controller.begin_reply(chat, {}, false, false, {}, "stories");
        QVERIFY(turn.problem.contains("too long"));
        QCOMPARE(store.messages(chat).size(), 1);
    }

    // Continuing writes on the last reply: its text ends the prompt, and it is the reply.
    void continuingWritesOnTheLastReply() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        ChatController controller(store);
        controller.set_model(llava_, *tokenizer_, 512);
        const qint64 chat = store.create_conversation("cut");
        store.add_message(chat, "user", "Tell me a story");
        const qint64 reply = store.add_message(chat, "assistant", "Once upon a time", {}, true, "stories");
        const ChatController::Turn turn = controller.begin_reply(chat, {}, false, true, {}, "stories");
        QVERIFY(turn.problem.isEmpty());
        QCOMPARE(controller.reply_message(), reply);
        QCOMPARE(controller.reply_text(), QString("Once upon a time"));
        const std::string text = llava_.render(std::vector<ChatMessage>{{"user", "Tell me a story", 0}}) + "Once upon a time";
        QCOMPARE(turn.request.prompt, tokenizer_->encode(text, {.add_special_tokens = true}));
        QCOMPARE(store.messages(chat).size(), 2);
        controller.add_to_reply(" there was a cat.", 5);
        controller.finish_reply(int(FinishReason::Stop), {}, {}, false, 512, "stories");
        QCOMPARE(store.message(reply).text, QString("Once upon a time there was a cat."));
    }

    // With images the prompt's length is known once they are prepared: one more turn goes then,
    // and the shorter prompt is still the conversation's turns only (not the new empty reply).
    void imagesAreCountedWhenPrepared() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        ChatController controller(store);
        controller.set_model(llava_, *tokenizer_, 256);
        const qint64 chat = store.create_conversation("photos", {}, short_replies());
        const QByteArray first = "first image bytes", second = "second image bytes";
        store.add_message(chat, "user", "What is this?", {first});
        store.add_message(chat, "assistant", "A pier.", {}, true, "llava");
        store.add_message(chat, "user", "And this?", {second});
        const QList<StoredMessage> before = store.messages(chat);
        const ChatController::Turn turn = controller.begin_reply(chat, {}, false, false, {}, "llava");
        QVERIFY(turn.problem.isEmpty());
        QVERIFY(turn.images_to_prepare);
        QCOMPARE(turn.images_to_prepare->images, (QList<QByteArray>{first, second}));
        QCOMPARE(controller.context_start(), 0);
        // Counted with their image tokens, both fit: the request goes with the prepared ids.
        QVERIFY(!controller.drop_turn_if_too_long(200));
        PreparedInput input;
        input.ids = {1, 2, 3};
        const GenerationRequest request = controller.take_request(input);
        QCOMPARE(request.prompt, input.ids);
        QCOMPARE(request.max_new_tokens, 16);
        QCOMPARE(controller.timings_so_far().prompt_tokens, 3);
        controller.finish_reply(int(FinishReason::Stop), {}, {}, false, 256, "llava");

        // Asked again, they do not fit: the first turn goes, with its image.
        store.delete_from(controller.reply_message());
        controller.begin_reply(chat, {}, false, false, {}, "llava");
        const std::optional<RenderedTurns> shorter = controller.drop_turn_if_too_long(250);
        QVERIFY(shorter);
        QCOMPARE(controller.context_start(), before[2].id);
        QCOMPARE(shorter->images, QList<QByteArray>{second});
        QCOMPARE(shorter->text, llava_.render(std::vector<ChatMessage>{{"user", "And this?", 1}}));
        // Only the last question is left: it goes as it is.
        QVERIFY(!controller.drop_turn_if_too_long(250));
    }

    // Regenerating keeps the reply written before as a version; a shown version is the history's.
    void versionsAreKeptInTheHistory() {
        QTemporaryDir dir;
        HistoryStore store(dir.filePath("h.sqlite3"));
        ChatController controller(store);
        controller.set_model(llava_, *tokenizer_, 512);
        const qint64 chat = store.create_conversation("versions");
        store.add_message(chat, "user", "Hello");
        const qint64 old = store.add_message(chat, "assistant", "Hi.", {}, true, "first model");
        const QJsonArray versions = controller.remove_for_regenerating(old);
        QCOMPARE(versions.size(), 1);
        QCOMPARE(store.messages(chat).size(), 1);
        controller.begin_reply(chat, {}, true, false, versions, "second model");
        controller.add_to_reply("Hello there.", 3);
        const QJsonObject stats = controller.finish_reply(int(FinishReason::Stop), {}, {}, false, 512, "second model");
        QCOMPARE(stats.value("versions").toArray().size(), 2);
        QCOMPARE(stats.value("version").toInt(), 1);
        const qint64 reply = controller.reply_message();
        const std::optional<ReplyVersion> shown = controller.show_version(reply, -1);
        QVERIFY(shown);
        QCOMPARE(shown->text, QString("Hi."));
        QCOMPARE(shown->model, QString("first model"));
        QCOMPARE(shown->number, 1);
        QCOMPARE(shown->count, 2);
        QCOMPARE(store.message(reply).text, QString("Hi."));
        QCOMPARE(store.message(reply).model, QString("first model"));
        QVERIFY(!controller.show_version(reply, -1));
        QCOMPARE(controller.other_versions(reply).size(), 1);
        QCOMPARE(controller.other_versions(reply)[0].toObject().value("text").toString(), QString("Hello there."));
    }
};

QTEST_GUILESS_MAIN(TestChatController)
#include "test_chat_controller.moc"
