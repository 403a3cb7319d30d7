#include "ui/engine_worker.h"

#include <QDir>
#include <QCoreApplication>
#include <QMetaObject>
#include <QPointer>
#include <QThread>

#include "engine/model_config.h"
#include "engine/error.h"
#include "vision/encoder.h"
#include "vision/prompt.h"

#include <QThreadPool>

namespace lumen::ui {

EngineWorker::EngineWorker(QObject* parent) : QObject(parent), generation_(std::make_shared<std::atomic<int>>(0)) {
    qRegisterMetaType<lumen::ui::LoadedModel>();
    qRegisterMetaType<lumen::ui::PreparedInput>();
    qRegisterMetaType<lumen::Timings>();
}

EngineWorker::~EngineWorker() { ++*generation_; }

void EngineWorker::load(const QString& model_dir, const EngineOptions& given) {
    unload();
    EngineOptions options = given;
    options.image_encoder = vision::make_image_encoder;
    loading_ = true;
    const int generation = ++*generation_;
    emit load_started(model_dir);
    auto counter = generation_;
    // Taken here, on the GUI thread: the window (and this worker) may be gone before the loading
    // thread runs, so the thread never touches `this` except through a checked pointer.
    QPointer<EngineWorker> self(this);
    QThread* thread = QThread::create([self, model_dir, options, generation, counter] {
        std::unique_ptr<Engine> engine;
        std::shared_ptr<const vision::VisionConfig> vision;
        QString error;
        // The engine's callback may fire before the worker has the engine; it only emits signals.
        try {
            engine = Engine::create(model_dir.toStdString(), options, [self, counter, generation](const GenerationEvent& e) {
                if (*counter != generation || !self) return;
                if (!e.text.empty() || !e.ids.empty())
                    emit self->delta(e.request, QString::fromStdString(e.text), int(e.ids.size()));
                if (e.finish != FinishReason::None)
                    emit self->finished(e.request, int(e.finish), QString::fromStdString(e.error), e.timings);
            });
            if (engine->image_encoder())
                vision = std::make_shared<const vision::VisionConfig>(
                    vision::load_vision_config(model_dir.toStdString(), engine->model_config(), &engine->tokenizer()));
        } catch (const std::exception& ex) {
            error = QString::fromUtf8(ex.what());
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
                self->vision_ = vision;
                const ModelConfig& c = self->engine_->model_config();
                // "cpu (2 threads) (why there is no GPU)": the status bar shows the part before the reason.
                QString device = QString::fromStdString(self->engine_->device_name());
                const qsizetype reason = device.indexOf(") (");
                if (reason > 0) device = device.left(reason + 1);
                self->model_ = LoadedModel{model_dir, QDir(model_dir).dirName(), device, c.is_vision_language(),
                                           vision != nullptr, self->engine_->session_len()};
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
    emit unloaded();
}

void EngineWorker::unload() {
    if (loading_) cancel_load();
    if (!engine_) return;
    ++*generation_;
    engine_.reset();
    vision_.reset();
    model_ = LoadedModel{};
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
    std::shared_ptr<const vision::VisionConfig> vision = vision_;
    QThreadPool::globalInstance()->start([self, ticket, engine, vision, prompt, images, options] {
        PreparedInput input;
        QString error;
        try {
            if (!engine || !vision) throw Error("the model cannot take images");
            std::vector<vision::PreparedImage> prepared;
            for (const QByteArray& bytes : images)
                prepared.push_back(vision::prepare_image(
                    std::span(reinterpret_cast<const uint8_t*>(bytes.constData()), std::size_t(bytes.size())), *vision));
            auto p = vision::expand_prompt(prompt, prepared, *vision, engine->tokenizer(), options);
            input = {std::move(p.ids), std::move(p.images)};
        } catch (const std::exception& e) {
            error = QString::fromUtf8(e.what());
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

}  // namespace lumen::ui
