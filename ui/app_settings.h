#pragma once
// The app's persistent settings, one typed wrapper over QSettings. Per-model engine settings are
// kept under a key derived from the model's folder.
#include <QByteArray>
#include <QSettings>
#include <QStringList>

#include "ui/chat_sampling.h"

namespace lumen::ui {

struct ModelSettings {
    QString device = "auto";     // auto, cuda, cpu
    qint64 session_len = 0;      // 0: the model's own context length
    double cache_share = 0.8;    // KV cache: share of free memory after the weights
    QString compute = "auto";    // activations and KV cache: auto (the weights' type) or float32
    QString weights = "auto";    // auto (as stored), int8, int4 or fp8: a 16-bit folder quantized at load
    int kv_bits = 0;             // KV cache: 0 (the compute type), 8 or 4 bits (LMDeploy's quant_policy)
    QString vision = "auto";     // a vision-language model's image encoder: auto (as stored) or fp8

    bool operator==(const ModelSettings&) const = default;
};

// Serving the loaded model over the OpenAI API to other programs (Settings > Server).
struct ServerSettings {
    bool enabled = false;
    int port = 23333;     // 0: any free port
    bool network = false;  // other computers may connect (all addresses, not only loopback)
    QString api_key;      // empty: none asked

    bool operator==(const ServerSettings&) const = default;
};

// A remote OpenAI-compatible server the user added (see RemoteEntries).
struct RemoteEntry {
    QString url;              // as RemoteServer::normalized() gives it: "http://host:port/v1"
    QString key_store;        // where its API key is: "" (none), "keychain" or "settings"
    QString key_in_settings;  // the key, when key_store is "settings"

    bool operator==(const RemoteEntry&) const = default;
};

// A conversation's system prompt and sampling (a field left unset takes the model's default).
struct ConversationSettings {
    QString system_prompt;
    ChatSampling sampling;
};

class AppSettings {
public:
    AppSettings() = default;

    // Folders scanned for models besides the Hugging Face cache.
    QStringList model_folders() const;
    void set_model_folders(const QStringList& folders);
    bool scan_hf_cache() const;
    void set_scan_hf_cache(bool on);

    ModelSettings model_settings(const QString& model_path) const;
    void set_model_settings(const QString& model_path, const ModelSettings& s);

    // What new chats with a model start from (empty: its generation_config.json).
    ConversationSettings chat_preset(const QString& model_path) const;
    void set_chat_preset(const QString& model_path, const ConversationSettings& preset);

    // The model chosen last: a folder, or a remote server's model (choosing one forgets the other).
    QString last_model() const;
    void set_last_model(const QString& path);
    QString last_remote_server() const;
    QString last_remote_model() const;
    void set_last_remote(const QString& server_url, const QString& model);

    QList<RemoteEntry> remote_servers() const;
    void set_remote_servers(const QList<RemoteEntry>& servers);

    ServerSettings server_settings() const;
    void set_server_settings(const ServerSettings& s);

    // The Hugging Face Hub: its address (HF_ENDPOINT as huggingface_hub reads it, unless set here),
    // and where a token given in the app is kept: "" (none: HF_TOKEN or huggingface-cli's file),
    // "keychain", or "settings" (no keychain answered).
    QString hub_endpoint() const;
    void set_hub_endpoint(const QString& url);
    QString hub_token_store() const;
    QString hub_token_in_settings() const;
    void set_hub_token(const QString& store, const QString& token_in_settings);

    QString theme() const;  // "system", "light" or "dark"
    void set_theme(const QString& theme);

    // The size of the conversation's text, in percent (Ctrl+= / Ctrl+- / Ctrl+0).
    static constexpr int kZoomMin = 50, kZoomMax = 300;
    int zoom() const;
    void set_zoom(int percent);

    QByteArray window_state() const;
    void set_window_state(const QByteArray& state);

    void sync() { settings_.sync(); }
    QString file_name() const { return settings_.fileName(); }

private:
    static QString model_key(const QString& model_path);
    mutable QSettings settings_;
};

}  // namespace lumen::ui
