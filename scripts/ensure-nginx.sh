#!/usr/bin/env bash
# Makes nginx (for the nginx proxy driver and its tests) and wrk (for the benchmarks) available on
# a fresh Debian machine, as root. Idempotent: when both are on the PATH it only checks them.
# It never starts the system nginx: Turquoise runs its own instances, each from its own prefix
# directory, and a system nginx would only take port 80 for nothing.
set -euo pipefail

log() { echo "ensure-nginx: $*" >&2; }

packages=()
command -v nginx >/dev/null 2>&1 || packages+=(nginx)
command -v wrk >/dev/null 2>&1 || packages+=(wrk)

if [ "${#packages[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      exec sudo -n "$0" "$@"
    fi
    log "missing ${packages[*]} and installing needs root; run: sudo $0"
    exit 1
  fi
  bash "$(dirname "$0")/apt-install.sh" "${packages[@]}"
fi

# The driver needs stub_status (stats, the control server) and realip (client addresses behind
# its edge); Debian's nginx has both built in.
modules=$(nginx -V 2>&1)
for module in http_stub_status_module http_realip_module; do
  case "$modules" in
    *"--with-${module}"*) ;;
    *) log "this nginx lacks ${module}; install Debian's nginx package"; exit 1 ;;
  esac
done
command -v wrk >/dev/null 2>&1 || { log "wrk is still missing"; exit 1; }
log "ready: $(nginx -v 2>&1), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
