#include "ui/app_settings.h"

#include <QDir>
#include <QStandardPaths>

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

}  // namespace lumen::ui
