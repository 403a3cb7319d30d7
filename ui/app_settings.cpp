#include "ui/app_settings.h"

#include <algorithm>

#include <QCryptographicHash>
#include <QDir>
#include <QJsonDocument>

#include "hub/hub_cache.h"

namespace lumen::ui {

QStringList AppSettings::model_folders() const {
    if (!settings_.contains("models/folders")) {
        // A sensible first guess: ~/models, where many people keep downloaded weights.
        return {QDir::home().filePath("models")};
    }
    return settings_.value("models/folders").toStringList();
}

void AppSettings::set_model_folders(const QStringList& folders) { settings_.setValue("models/folders", folders); }

bool AppSettings::scan_hf_cache() const { return settings_.value("models/scan_hf_cache", true).toBool(); }

void AppSettings::set_scan_hf_cache(bool on) { settings_.setValue("models/scan_hf_cache", on); }

QString AppSettings::model_key(const QString& model_path) {
    return "model/" + QString::fromLatin1(QCryptographicHash::hash(QDir::cleanPath(model_path).toUtf8(), QCryptographicHash::Sha1).toHex());
}

ModelSettings AppSettings::model_settings(const QString& model_path) const {
    const QString k = model_key(model_path);
    ModelSettings s;
    s.device = settings_.value(k + "/device", s.device).toString();
    s.session_len = settings_.value(k + "/session_len", s.session_len).toLongLong();
    s.cache_share = settings_.value(k + "/cache_share", s.cache_share).toDouble();
    s.compute = settings_.value(k + "/compute", s.compute).toString();
    s.weights = settings_.value(k + "/weights", s.weights).toString();
    s.kv_bits = settings_.value(k + "/kv_bits", s.kv_bits).toInt();
    s.vision = settings_.value(k + "/vision", s.vision).toString();
    return s;
}

void AppSettings::set_model_settings(const QString& model_path, const ModelSettings& s) {
    const QString k = model_key(model_path);
    settings_.setValue(k + "/path", model_path);
    settings_.setValue(k + "/device", s.device);
    settings_.setValue(k + "/session_len", s.session_len);
    settings_.setValue(k + "/cache_share", s.cache_share);
    settings_.setValue(k + "/compute", s.compute);
    settings_.setValue(k + "/weights", s.weights);
    settings_.setValue(k + "/kv_bits", s.kv_bits);
    settings_.setValue(k + "/vision", s.vision);
}

ConversationSettings AppSettings::chat_preset(const QString& model_path) const {
    const QString k = model_key(model_path);
    return {settings_.value(k + "/system_prompt").toString(),
            ChatSampling::from_json(QJsonDocument::fromJson(settings_.value(k + "/sampling").toByteArray()).object())};
}

void AppSettings::set_chat_preset(const QString& model_path, const ConversationSettings& preset) {
    const QString k = model_key(model_path);
    settings_.setValue(k + "/path", model_path);
    settings_.setValue(k + "/system_prompt", preset.system_prompt);
    settings_.setValue(k + "/sampling", QJsonDocument(preset.sampling.to_json()).toJson(QJsonDocument::Compact));
}

QString AppSettings::last_model() const { return settings_.value("models/last").toString(); }
void AppSettings::set_last_model(const QString& path) {
    settings_.setValue("models/last", path);
    settings_.remove("models/last_remote");
}

QString AppSettings::last_remote_server() const { return settings_.value("models/last_remote/server").toString(); }
QString AppSettings::last_remote_model() const { return settings_.value("models/last_remote/model").toString(); }
void AppSettings::set_last_remote(const QString& server_url, const QString& model) {
    settings_.remove("models/last");
    settings_.setValue("models/last_remote/server", server_url);
    settings_.setValue("models/last_remote/model", model);
}

QList<RemoteEntry> AppSettings::remote_servers() const {
    QList<RemoteEntry> out;
    const int n = settings_.beginReadArray("remote_servers");
    for (int i = 0; i < n; ++i) {
        settings_.setArrayIndex(i);
        RemoteEntry e{settings_.value("url").toString(), settings_.value("key_store").toString(),
                      settings_.value("api_key").toString()};
        if (!e.url.isEmpty()) out << e;
    }
    settings_.endArray();
    return out;
}

void AppSettings::set_remote_servers(const QList<RemoteEntry>& servers) {
    settings_.remove("remote_servers");
    settings_.beginWriteArray("remote_servers", int(servers.size()));
    for (int i = 0; i < servers.size(); ++i) {
        settings_.setArrayIndex(i);
        settings_.setValue("url", servers[i].url);
        settings_.setValue("key_store", servers[i].key_store);
        // Only a key no keychain would take is written here.
        if (servers[i].key_store == "settings") settings_.setValue("api_key", servers[i].key_in_settings);
    }
    settings_.endArray();
}

ServerSettings AppSettings::server_settings() const {
    ServerSettings s;
    s.enabled = settings_.value("server/enabled", s.enabled).toBool();
    s.port = std::clamp(settings_.value("server/port", s.port).toInt(), 0, 65535);
    s.network = settings_.value("server/network", s.network).toBool();
    s.api_key = settings_.value("server/api_key", s.api_key).toString();
    return s;
}

void AppSettings::set_server_settings(const ServerSettings& s) {
    settings_.setValue("server/enabled", s.enabled);
    settings_.setValue("server/port", s.port);
    settings_.setValue("server/network", s.network);
    settings_.setValue("server/api_key", s.api_key);
}

QString AppSettings::hub_endpoint() const {
    const QString set = settings_.value("hub/endpoint").toString();
    return set.isEmpty() ? QString::fromStdString(hub::default_endpoint()) : set;
}
void AppSettings::set_hub_endpoint(const QString& url) { settings_.setValue("hub/endpoint", url); }
QString AppSettings::hub_token_store() const { return settings_.value("hub/token_store").toString(); }
QString AppSettings::hub_token_in_settings() const { return settings_.value("hub/token").toString(); }
void AppSettings::set_hub_token(const QString& store, const QString& token_in_settings) {
    settings_.setValue("hub/token_store", store);
    if (store == "settings") settings_.setValue("hub/token", token_in_settings);
    else settings_.remove("hub/token");
}

QString AppSettings::theme() const { return settings_.value("appearance/theme", "system").toString(); }
void AppSettings::set_theme(const QString& theme) { settings_.setValue("appearance/theme", theme); }

int AppSettings::zoom() const { return std::clamp(settings_.value("appearance/zoom", 100).toInt(), kZoomMin, kZoomMax); }
void AppSettings::set_zoom(int percent) { settings_.setValue("appearance/zoom", std::clamp(percent, kZoomMin, kZoomMax)); }

QByteArray AppSettings::window_state() const { return settings_.value("window/state").toByteArray(); }
void AppSettings::set_window_state(const QByteArray& state) { settings_.setValue("window/state", state); }

}  // namespace lumen::ui
