#pragma once
// Settings: the loaded model's engine settings (device, context length, KV cache share,
// precision; only the choices this machine and model really offer), the current conversation's
// sampling and system prompt, and the appearance.
#include <QDialog>
#include <QJsonObject>

#include "ui/app_settings.h"

class QComboBox;
class QDoubleSpinBox;
class QPlainTextEdit;
class QSpinBox;

namespace lumen::ui {

struct ConversationSettings {
    QString system_prompt;
    QJsonObject sampling;  // temperature, top_p, top_k, repetition_penalty, max_new_tokens, seed
};

class SettingsDialog : public QDialog {
    Q_OBJECT
public:
    // `model_path` empty: no model section. `defaults`: the model's generation_config.json values.
    SettingsDialog(AppSettings& settings, const QString& model_path, const ConversationSettings& conversation,
                   const QJsonObject& defaults, bool gpu_available, QWidget* parent = nullptr);

    ModelSettings model_settings() const;
    ConversationSettings conversation_settings() const;
    QString theme() const;

private:
    QComboBox* device_ = nullptr;
    QSpinBox* session_len_ = nullptr;
    QDoubleSpinBox* cache_share_ = nullptr;
    QComboBox* compute_ = nullptr;
    QPlainTextEdit* system_;
    QDoubleSpinBox* temperature_;
    QDoubleSpinBox* top_p_;
    QSpinBox* top_k_;
    QDoubleSpinBox* repetition_;
    QSpinBox* max_new_;
    QSpinBox* seed_;
    QComboBox* theme_;
};

}  // namespace lumen::ui
