#pragma once
// Settings: the loaded model's engine settings (device, context length, KV cache share,
// precision; only the choices this machine and model really offer) with an estimate of the
// memory they take, the current (or new) conversation's sampling and system prompt, and the
// appearance. Each tab says what it applies to.
#include <QDialog>

#include "ui/app_settings.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QDoubleSpinBox;
class QPlainTextEdit;
class QSpinBox;

namespace lumen::ui {

class SettingsDialog : public QDialog {
    Q_OBJECT
public:
    // `model_path` empty: no model section. `defaults`: what the model's replies use unless the
    // conversation says otherwise (its generation_config.json, under its new-chat preset).
    // `gpu_free_bytes`: the GPU's free memory, for the estimate. `for_new_chat`: the conversation
    // settings are for a chat not yet sent.
    SettingsDialog(AppSettings& settings, const QString& model_path, const ConversationSettings& conversation,
                   const ChatSampling& defaults, bool gpu_available, uint64_t gpu_free_bytes, bool for_new_chat,
                   QWidget* parent = nullptr);

    ModelSettings model_settings() const;
    ConversationSettings conversation_settings() const;
    bool use_for_new_chats() const;  // the conversation settings become the model's preset
    QString theme() const;
    ServerSettings server_settings() const;

private:
    QCheckBox* serve_ = nullptr;
    QSpinBox* port_ = nullptr;
    QCheckBox* network_ = nullptr;
    QLineEdit* api_key_ = nullptr;
    QComboBox* device_ = nullptr;
    QSpinBox* session_len_ = nullptr;
    QDoubleSpinBox* cache_share_ = nullptr;
    QComboBox* compute_ = nullptr;
    QComboBox* weights_ = nullptr;
    QComboBox* kv_cache_ = nullptr;
    QComboBox* vision_ = nullptr;  // vision-language models only
    QLabel* memory_ = nullptr;
    QPlainTextEdit* system_;
    QDoubleSpinBox* temperature_;
    QDoubleSpinBox* top_p_;
    QDoubleSpinBox* min_p_;
    QSpinBox* top_k_;
    QDoubleSpinBox* repetition_;
    QSpinBox* max_new_;
    QSpinBox* seed_;
    QComboBox* theme_;
    QCheckBox* preset_ = nullptr;
};

}  // namespace lumen::ui
