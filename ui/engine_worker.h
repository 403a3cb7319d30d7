#pragma once
// The engine as the GUI sees it: loading happens on a worker thread (the window never freezes),
// and the engine's events arrive as queued Qt signals on the GUI thread. The worker owns the
// engine: unloading (or destroying the worker) detaches the engine's callback first, so that no
// event is emitted into a worker that is gone, waits for the image preparations that use it, and
// then joins the engine's thread. Requests in flight then get no final event; their owner ends
// them itself (see MainWindow::interrupt_reply).
#include <QByteArray>
#include <QList>
#include <QObject>
#include <QString>
#include <QThreadPool>
#include <atomic>
#include <memory>

#include "api/openai_server.h"
#include "engine/runtime/engine.h"
#include "engine/text/tokenizer.h"

namespace lumen::ui {

struct LoadedModel {
    QString path;
    QString name;
    QString device;
    bool vision = false;       // a vision-language model
    bool sees_images = false;  // ... whose image encoder is loaded
    qint64 session_len = 0;
    QString weights;           // how they are held, in users' words ("4-bit (groups of 128) at load")
    QString kv_cache;          // its format and room ("8-bit, 65536 tokens")
};

// A prompt with its images, ready for a GenerationRequest.
struct PreparedInput {
    std::vector<int32_t> ids;
    std::vector<lumen::PromptImage> images;
};

class EngineWorker : public QObject {
    Q_OBJECT
public:
    explicit EngineWorker(QObject* parent = nullptr);
    ~EngineWorker() override;

    // Starts loading in the background; a load in progress is abandoned (its result discarded).
    void load(const QString& model_dir, const EngineOptions& options);
    void cancel_load();
    void unload();
    bool loading() const { return loading_; }
    bool is_loaded() const { return engine_ != nullptr; }
    const LoadedModel& model() const { return model_; }
    Engine* engine() const { return engine_.get(); }

    RequestId submit(GenerationRequest request);
    void cancel(RequestId id);
    // Decodes and preprocesses `images` (encoded files, in prompt order) and tokenizes `prompt`
    // with them, off the GUI thread; the result arrives as prepared() or preparation_failed()
    // with the returned ticket. Images prepared before (attached earlier, or in an earlier message
    // of the conversation) are taken as they are.
    quint64 prepare(const std::string& prompt, const QList<QByteArray>& images, const EncodeOptions& options);
    // Starts decoding, preprocessing and encoding an image as soon as it is attached, while the
    // user is still writing: by the time the message is sent, its embeddings are ready. Errors
    // wait for prepare().
    void prefetch(const QByteArray& image);
    // Images decoded and preprocessed for the loaded model so far (each once while it stays kept).
    int images_prepared() const;
    // Serves the loaded model over the OpenAI API from the same engine as the chat (its requests
    // join the same batch) until stop_serving() or the model goes. Returns the server's URL, or
    // throws lumen::Error (no model loaded; the port taken).
    QString serve(const api::ServerOptions& options);
    void stop_serving();
    QString serving_url() const { return server_ ? QString::fromStdString(server_->url()) : QString(); }

signals:
    void load_started(const QString& path);
    void loaded(const lumen::ui::LoadedModel& model);
    void load_failed(const QString& path, const QString& error);
    void unloaded();
    // Streamed text of a request (deltas are whole characters), then its end.
    void delta(quint64 request, const QString& text, int tokens);
    void finished(quint64 request, int reason, const QString& error, const lumen::Timings& timings);
    void prepared(quint64 ticket, const lumen::ui::PreparedInput& input);
    void preparation_failed(quint64 ticket, const QString& error);

private:
    class PreparedImages;
    struct EventSink;  // where the engine's callback emits; cleared when the engine is let go
    void release_engine();
    std::shared_ptr<Engine> engine_;  // shared with preparations in flight (they use its tokenizer)
    // For the loaded model when its image encoder is loaded (it holds the vision config); shared
    // with preparations in flight.
    std::shared_ptr<PreparedImages> images_;
    LoadedModel model_;
    quint64 next_ticket_ = 0;
    bool loading_ = false;
    std::shared_ptr<std::atomic<int>> generation_;  // bumps to abandon a load in flight
    std::shared_ptr<EventSink> sink_;
    std::unique_ptr<api::OpenAiServer> server_;
    QThreadPool pool_;  // image preparations; waited for before the engine goes
};

}  // namespace lumen::ui

Q_DECLARE_METATYPE(lumen::ui::LoadedModel)
Q_DECLARE_METATYPE(lumen::ui::PreparedInput)
Q_DECLARE_METATYPE(lumen::Timings)
