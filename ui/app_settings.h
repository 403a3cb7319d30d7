#pragma once
// The app's persistent settings, one typed wrapper over QSettings.
#include <QSettings>
#include <QStringList>

namespace lumen::ui {

class AppSettings {
public:
    AppSettings() = default;

    // Folders scanned for models besides the Hugging Face cache.
    QStringList model_folders() const;
    void set_model_folders(const QStringList& folders);
    bool scan_hf_cache() const;
    void set_scan_hf_cache(bool on);

private:
    mutable QSettings settings_;
};

}  // namespace lumen::ui
