#!/usr/bin/env bash
# Makes jq available for the log tests, which run the jq examples of docs/logs.md against a real
# agent.log, on a fresh Debian machine, as root. Idempotent: when jq is on the PATH it only checks it.
set -euo pipefail

log() { echo "ensure-jq: $*" >&2; }

if ! command -v jq >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo -n "$0" "$@"
    fi
    log "jq is missing and installing it needs root; run: sudo $0"
    exit 1
  fi
  bash "$(dirname "$0")/apt-install.sh" jq
fi
command -v jq >/dev/null 2>&1 || { log "jq is still missing"; exit 1; }
