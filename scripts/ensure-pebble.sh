#!/usr/bin/env bash
# Makes Debian's pebble (the ACME test server from Let's Encrypt) available for the ACME tests, as
# root. Idempotent: when `pebble` is on the PATH it only checks it. The package starts no service;
# each test runs its own pebble and pebble-challtestsrv on loopback with a generated config.
set -euo pipefail

log() { echo "ensure-pebble: $*" >&2; }

if ! command -v pebble >/dev/null 2>&1 || ! command -v pebble-challtestsrv >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo -n "$0" "$@"
    fi
    log "pebble is missing and installing it needs root; run: sudo $0"
    exit 1
  fi
  bash "$(dirname "$0")/apt-install.sh" pebble
fi
command -v pebble >/dev/null 2>&1 || { log "pebble is still missing"; exit 1; }
command -v pebble-challtestsrv >/dev/null 2>&1 || { log "pebble-challtestsrv is missing"; exit 1; }
log "ready: $(dpkg-query -W -f='pebble ${Version}' pebble 2>/dev/null || command -v pebble)"
