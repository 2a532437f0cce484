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
  # Debian's postinst scripts start a service through invoke-rc.d, which asks policy-rc.d first:
  # exit status 101 means "do not start". Only a policy this script wrote is removed afterwards.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by turquoise scripts/ensure-nginx.sh for the length of an install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  trap 'if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
  log "installing ${packages[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
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
