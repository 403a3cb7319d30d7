#include "ui/engine_worker.h"

#include <QDir>
#include <QCoreApplication>
#include <QMetaObject>
#include <QPointer>
#include <QThread>

#include "engine/model_config.h"

namespace lumen::ui {

EngineWorker::EngineWorker(QObject* parent) : QObject(parent), generation_(std::make_shared<std::atomic<int>>(0)) {
    qRegisterMetaType<lumen::ui::LoadedModel>();
    qRegisterMetaType<lumen::Timings>();
}

EngineWorker::~EngineWorker() { ++*generation_; }

void EngineWorker::load(const QString& model_dir, const EngineOptions& options) {
    unload();
    loading_ = true;
    const int generation = ++*generation_;
    emit load_started(model_dir);
    auto counter = generation_;
    // Taken here, on the GUI thread: the window (and this worker) may be gone before the loading
    // thread runs, so the thread never touches `this` except through a checked pointer.
    QPointer<EngineWorker> self(this);
    QThread* thread = QThread::create([self, model_dir, options, generation, counter] {
        std::unique_ptr<Engine> engine;
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
        } catch (const std::exception& ex) {
            error = QString::fromUtf8(ex.what());
        }
        // Hand the result to the GUI thread (through the application object, which outlives the
        // worker); a superseded or abandoned load is dropped there.
        auto* raw = engine.release();
        QMetaObject::invokeMethod(
            QCoreApplication::instance(),
            [self, raw, error, model_dir, generation, counter] {
                std::unique_ptr<Engine> result(raw);
                if (!self || *counter != generation) return;  // abandoned
                self->loading_ = false;
                if (!result) {
                    emit self->load_failed(model_dir, error);
                    return;
                }
                self->engine_ = std::move(result);
                const ModelConfig& c = self->engine_->model_config();
                // "cpu (2 threads) (why there is no GPU)": the status bar shows the part before the reason.
                QString device = QString::fromStdString(self->engine_->device_name());
                const qsizetype reason = device.indexOf(") (");
                if (reason > 0) device = device.left(reason + 1);
                self->model_ = LoadedModel{model_dir, QDir(model_dir).dirName(), device, c.is_vision_language(),
                                           self->engine_->session_len()};
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
    model_ = LoadedModel{};
    emit unloaded();
}

RequestId EngineWorker::submit(GenerationRequest request) { return engine_ ? engine_->submit(std::move(request)) : 0; }

void EngineWorker::cancel(RequestId id) {
    if (engine_) engine_->cancel(id);
}

}  // namespace lumen::ui
