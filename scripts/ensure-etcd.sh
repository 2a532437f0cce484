#!/usr/bin/env bash
# Makes etcd available for the etcd state-driver tests on a fresh Debian machine, as root.
# Idempotent: when `etcd` is on the PATH it only checks it. It never starts the system service:
# each test file runs its own three-member cluster on loopback ports (test/support/etcd.ts).
set -euo pipefail

log() { echo "ensure-etcd: $*" >&2; }

if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo -n "$0" "$@"
    fi
    log "etcd is missing and installing it needs root; run: sudo $0"
    exit 1
  fi
  bash "$(dirname "$0")/apt-install.sh" etcd-server
fi
command -v etcd >/dev/null 2>&1 || { log "etcd is still missing"; exit 1; }
log "ready: $(etcd --version 2>&1 | head -n 1)"
