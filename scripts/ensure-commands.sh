#!/usr/bin/env bash
# Makes commands available from a Debian package, for the tests that run them: installs PACKAGE
# (scripts/apt-install.sh: quiet, no recommends, no service started) unless every COMMAND is
# already on the PATH. Asks sudo when not root. Usage: ensure-commands.sh PACKAGE COMMAND...
set -euo pipefail
[ "$#" -ge 2 ] || { echo "usage: $0 PACKAGE COMMAND..." >&2; exit 2; }
package=$1
shift
log() { echo "ensure-commands: $*" >&2; }
missing() { for c in "$@"; do command -v "$c" >/dev/null 2>&1 || return 0; done; return 1; }

if missing "$@"; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo -n "$0" "$package" "$@"
    fi
    log "$* missing, and installing $package needs root; run: sudo $0 $package $*"
    exit 1
  fi
  bash "$(dirname "$0")/apt-install.sh" "$package"
fi
for c in "$@"; do command -v "$c" >/dev/null 2>&1 || { log "$c is still missing after installing $package"; exit 1; }; done
log "ready: $* ($(dpkg-query -W -f='${Package} ${Version}' "$package" 2>/dev/null || echo "$package"))"
