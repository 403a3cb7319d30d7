#pragma once
// Secrets (API keys, the Hugging Face token) in the platform's keychain through QtKeychain: Secret
// Service or KWallet on Linux, the macOS Keychain, Windows' Credential Store. Each call answers
// later, through its callback (a keychain may first ask the user to unlock it), and never after
// `context` is gone. Entries are kept under the application's name, so a test run as another
// program never touches the app's.
#include <QObject>
#include <QString>
#include <functional>

namespace lumen::ui {

// `done(error)`: error empty when the keychain took it.
void keychain_write(const QString& key, const QString& secret, QObject* context, std::function<void(const QString& error)> done);
// `done(secret, error)`: error empty when it was read; `missing` when the keychain has no such entry.
void keychain_read(const QString& key, QObject* context,
                   std::function<void(const QString& secret, const QString& error, bool missing)> done);
void keychain_delete(const QString& key);

}  // namespace lumen::ui
