#pragma once
// The engine as the GUI sees it: loading happens on a worker thread (the window never freezes),
// and the engine's events arrive as queued Qt signals on the GUI thread.
#include <QObject>
#include <QString>
#include <atomic>
#include <memory>

#include "engine/engine.h"

namespace lumen::ui {

struct LoadedModel {
    QString path;
    QString name;
    QString device;
    bool vision = false;
    qint64 session_len = 0;
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

signals:
    void load_started(const QString& path);
    void loaded(const lumen::ui::LoadedModel& model);
    void load_failed(const QString& path, const QString& error);
    void unloaded();
    // Streamed text of a request (deltas are whole characters), then its end.
    void delta(quint64 request, const QString& text, int tokens);
    void finished(quint64 request, int reason, const QString& error, const lumen::Timings& timings);

private:
    std::unique_ptr<Engine> engine_;
    LoadedModel model_;
    bool loading_ = false;
    std::shared_ptr<std::atomic<int>> generation_;  // bumps to abandon a load in flight
};

}  // namespace lumen::ui

Q_DECLARE_METATYPE(lumen::ui::LoadedModel)
Q_DECLARE_METATYPE(lumen::Timings)
