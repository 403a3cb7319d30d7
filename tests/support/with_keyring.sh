#!/bin/sh
# Runs a command with a keychain of its own: a private D-Bus session and a fresh, unlocked
# gnome-keyring (in a temporary folder, never the user's) answering the Secret Service API, as on
# a desktop. The keychain goes when the command ends.
keyrings=$(mktemp -d) || exit 1
trap 'rm -rf "$keyrings"' EXIT
XDG_DATA_HOME="$keyrings" dbus-run-session -- sh -c '
  eval "$(printf lumen-test | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"
  export GNOME_KEYRING_CONTROL
  exec "$@"' sh "$@"
