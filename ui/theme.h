#pragma once
// Light, dark, or whatever the desktop uses.
#include <QString>

namespace lumen::ui {

// "system" keeps the platform's style and palette; "light" and "dark" use Fusion with a matching
// palette. Also sets the few style-sheet accents the chat uses.
void apply_theme(const QString& theme);

}  // namespace lumen::ui
