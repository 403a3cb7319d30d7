#include "ui/engine_worker.h"

#include <QCoreApplication>
#include <QDir>
#include <QMetaObject>
#include <QPointer>
#include <QThread>
#include <QThreadPool>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#ifdef Q_OS_LINUX
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "engine/util/error.h"
#include "engine/model/model_config.h"
#include "vision/encoder.h"
#include "vision/prompt.h"
#include "vision/vision_config.h"

namespace lumen::ui {

// The images of a conversation are in every prompt of it: each is decoded and preprocessed once
// (a 1920x1080 PNG takes about 20 ms) and kept, by content hash, for the model it was made for.
// A preparation in flight is waited for, not repeated.
class EngineWorker::PreparedImages {
public:
    explicit PreparedImages(std::shared_ptr<const vision::VisionConfig> vision) : vision_(std::move(vision)) {}

    vision::PreparedImage get(const QByteArray& file) {
        const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(file.constData()), std::size_t(file.size()));
        const uint64_t hash = vision::content_hash(bytes);
        std::promise<vision::PreparedImage> promise;
        std::shared_future<vision::PreparedImage> ready;
        bool mine = false;
        {
            std::lock_guard lock(mutex_);
            if (auto it = kept_.find(hash); it != kept_.end()) {
                ready = it->second;
            } else {
                ready = promise.get_future().share();
                kept_.emplace(hash, ready);
                order_.push_back(hash);
                mine = true;
                while (order_.size() > kKeep) {
                    kept_.erase(order_.front());
                    order_.pop_front();
                }
            }
        }
        if (mine) {
            try {
                promise.set_value(vision::prepare_image(vision::decode_image(bytes), hash, *vision_));
                ++prepared_;
            } catch (...) {
                promise.set_exception(std::current_exception());
                std::lock_guard lock(mutex_);  // a failure is not kept: the next message tries again
                kept_.erase(hash);
                std::erase(order_, hash);
            }
        }
        return ready.get();
    }

    int prepared() const { return prepared_; }
    const vision::VisionConfig& vision() const { return *vision_; }

private:
    // About 8 MB each at 13 tiles; a conversation with more images prepares the oldest again.
    static constexpr std::size_t kKeep = 12;
    const std::shared_ptr<const vision::VisionConfig> vision_;
    std::mutex mutex_;
    std::map<uint64_t, std::shared_future<vision::PreparedImage>> kept_;
    std::deque<uint64_t> order_;  // oldest first
    std::atomic<int> prepared_ = 0;
};

struct EngineWorker::EventSink {
    std::mutex mutex;
    EngineWorker* target;  // null once the engine's events are no longer wanted
    api::OpenAiServer* server = nullptr;  // takes its own requests' events while it serves
};

EngineWorker::EngineWorker(QObject* parent) : QObject(parent), generation_(std::make_shared<std::atomic<int>>(0)) {
    qRegisterMetaType<lumen::ui::LoadedModel>();
    qRegisterMetaType<lumen::ui::PreparedInput>();
    qRegisterMetaType<lumen::Timings>();
}

EngineWorker::~EngineWorker() {
    ++*generation_;
    release_engine();  // no signals: the objects connected to them may be half destroyed
}

QString EngineWorker::serve(const api::ServerOptions& options) {
    stop_serving();
    if (!engine_) throw Error("load a model first: the server serves the loaded one");
    auto server = std::make_unique<api::OpenAiServer>(engine_, model_.path.toStdString(), options);
    {
        std::lock_guard lock(sink_->mutex);
        sink_->server = server.get();
    }
    server->start();
    server_ = std::move(server);
    return serving_url();
}

void EngineWorker::stop_serving() {
    if (!server_) return;
    {
        std::lock_guard lock(sink_->mutex);  // an event being handed over finishes first
        sink_->server = nullptr;
    }
    server_.reset();  // stops listening, waits for its connections (their requests are cancelled)
}

void EngineWorker::release_engine() {
    stop_serving();
    if (sink_) {
        std::lock_guard lock(sink_->mutex);  // an event being emitted finishes first
        sink_->target = nullptr;
    }
    sink_.reset();
    pool_.waitForDone();
    engine_.reset();  // joins the engine's thread
    images_.reset();
    model_ = LoadedModel{};
}

void EngineWorker::load(const QString& model_dir, const EngineOptions& given) {
    unload();
    EngineOptions options = given;
    if (!options.image_encoder) options.image_encoder = vision::make_image_encoder;
    loading_ = true;
    const int generation = ++*generation_;
    sink_ = std::make_shared<EventSink>();
    sink_->target = this;
    emit load_started(model_dir);
    auto counter = generation_;
    auto sink = sink_;
    // Taken here, on the GUI thread: the window (and this worker) may be gone before the loading
    // thread runs, so the thread never touches `this` except through a checked pointer.
    QPointer<EngineWorker> self(this);
    QThread* thread = QThread::create([self, model_dir, options, generation, counter, sink] {
        std::unique_ptr<Engine> engine;
        std::shared_ptr<const vision::VisionConfig> vision;
        QString error;
#ifdef Q_OS_LINUX
        // The engine's threads are made on this one and take its priority: they yield to the
        // window, so that on a machine with few cores typing and scrolling stay smooth while a
        // reply is written (the engine still has every core the window leaves idle).
        setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 5);
#endif
        // The engine's callback may fire before the worker has the engine; it only emits signals.
        try {
            engine = Engine::create(model_dir.toStdString(), options, [sink](const GenerationEvent& e) {
                std::lock_guard lock(sink->mutex);
                if (sink->server && sink->server->deliver(e)) return;
                EngineWorker* target = sink->target;
                if (!target) return;
                if (!e.text.empty() || !e.ids.empty())
                    emit target->delta(e.request, QString::fromStdString(e.text), int(e.ids.size()));
                if (e.finish != FinishReason::None)
                    emit target->finished(e.request, int(e.finish), QString::fromStdString(e.error), e.timings);
            });
            if (engine->image_encoder())
                vision = std::make_shared<const vision::VisionConfig>(
                    vision::load_vision_config(model_dir.toStdString(), engine->model_config(), &engine->tokenizer()));
        } catch (const std::exception& ex) {
            error = QString::fromStdString(user_message(ex, "load the model"));
            engine.reset();
        }
        // Hand the result to the GUI thread (through the application object, which outlives the
        // worker); a superseded or abandoned load is dropped there.
        auto* raw = engine.release();
        QMetaObject::invokeMethod(
            QCoreApplication::instance(),
            [self, raw, vision, error, model_dir, generation, counter] {
                std::unique_ptr<Engine> result(raw);
                if (!self || *counter != generation) return;  // abandoned
                self->loading_ = false;
                if (!result) {
                    emit self->load_failed(model_dir, error);
                    return;
                }
                self->engine_ = std::move(result);
                if (vision) self->images_ = std::make_shared<PreparedImages>(vision);
                const ModelConfig& c = self->engine_->model_config();
                // "cpu (2 threads) (why there is no GPU)": the status bar shows the part before the reason.
                QString device = QString::fromStdString(self->engine_->device_name());
                const qsizetype reason = device.indexOf(") (");
                if (reason > 0) device = device.left(reason + 1);
                self->model_ = LoadedModel{model_dir, QDir(model_dir).dirName(), device, c.is_vision_language(),
                                           vision != nullptr, self->engine_->session_len(),
                                           QString::fromStdString(self->engine_->weights()),
                                           QString::fromStdString(self->engine_->kv_cache())};
                emit self->loaded(self->model_);
            },
            Qt::QueuedConnection);
    });
    connect(thread, &QThread::finished, thread, &QObject::deleteLater);
    thread->start();
}

void EngineWorker::cancel_load() {
    if (!loading_) return;
    ++*generation_;
    loading_ = false;
    release_engine();
    emit unloaded();
}

void EngineWorker::unload() {
    if (loading_) cancel_load();
    if (!engine_) return;
    ++*generation_;
    release_engine();
    emit unloaded();
}

RequestId EngineWorker::submit(GenerationRequest request) { return engine_ ? engine_->submit(std::move(request)) : 0; }

void EngineWorker::cancel(RequestId id) {
    if (engine_) engine_->cancel(id);
}

quint64 EngineWorker::prepare(const std::string& prompt, const QList<QByteArray>& images, const EncodeOptions& options) {
    const quint64 ticket = ++next_ticket_;
    QPointer<EngineWorker> self(this);
    std::shared_ptr<Engine> engine = engine_;
    std::shared_ptr<PreparedImages> kept = images_;
    pool_.start([self, ticket, engine, kept, prompt, images, options] {
        PreparedInput input;
        QString error;
        try {
            if (!engine || !kept) throw Error("the model cannot take images");
            std::vector<vision::PreparedImage> prepared;
            for (const QByteArray& bytes : images) prepared.push_back(kept->get(bytes));
            auto p = vision::expand_prompt(prompt, prepared, kept->vision(), engine->tokenizer(), options);
            input = {std::move(p.ids), std::move(p.images)};
        } catch (const std::exception& e) {
            error = QString::fromStdString(user_message(e, "prepare the message"));
        }
        QMetaObject::invokeMethod(
            QCoreApplication::instance(),
            [self, ticket, input = std::move(input), error] {
                if (!self) return;
                if (error.isEmpty()) emit self->prepared(ticket, input);
                else emit self->preparation_failed(ticket, error);
            },
            Qt::QueuedConnection);
    });
    return ticket;
}

void EngineWorker::prefetch(const QByteArray& image) {
    if (!images_) return;
    pool_.start([kept = images_, engine = engine_, image] {
        try {
            const vision::PreparedImage prepared = kept->get(image);
            engine->encode_ahead(prepared.pixels, prepared.content_hash);
        } catch (const std::exception&) {
            // Said when the message is sent: prepare() meets the same error.
        }
    });
}

int EngineWorker::images_prepared() const { return images_ ? images_->prepared() : 0; }

}  // namespace lumen::ui
