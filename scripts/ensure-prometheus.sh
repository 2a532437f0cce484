#!/usr/bin/env bash
# Makes Prometheus available for the metrics and Consul-discovery tests on a fresh Debian machine,
# as root. Idempotent: when `prometheus` is on the PATH it only checks it. It never starts the
# system service: each test runs its own Prometheus on loopback with a generated config.
set -euo pipefail

log() { echo "ensure-prometheus: $*" >&2; }

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo -n "$0" "$@"
    fi
    log "prometheus is missing and installing it needs root; run: sudo $0"
    exit 1
  fi
  bash "$(dirname "$0")/apt-install.sh" prometheus
fi
command -v prometheus >/dev/null 2>&1 || { log "prometheus is still missing"; exit 1; }
log "ready: $(prometheus --version 2>&1 | head -n 1)"
