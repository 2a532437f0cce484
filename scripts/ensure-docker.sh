#!/usr/bin/env bash
# Makes a local Docker Engine ready for the docker runtime's tests, on a fresh Debian machine as
# root: installs docker.io when dockerd is missing, and starts the daemon in the background when it
# does not answer on its socket (there is no systemd here). Idempotent; when the daemon already
# answers it only pings it. Nothing is pulled: the tests build their images locally.
set -euo pipefail

SOCKET=/var/run/docker.sock
LOG=/var/log/turquoise-dockerd.log
WAIT_SECONDS=30

log() { echo "ensure-docker: $*" >&2; }

ping() {
  [ -S "$SOCKET" ] || return 1
  curl -fsS --max-time 3 --unix-socket "$SOCKET" http://localhost/_ping >/dev/null 2>&1 && return 0
  # curl may be missing on a fresh machine; node is not.
  node -e '
    const req = require("http").get({ socketPath: process.argv[1], path: "/_ping", timeout: 3000 }, (res) => process.exit(res.statusCode === 200 ? 0 : 1));
    req.on("error", () => process.exit(1));
    req.on("timeout", () => process.exit(1));
  ' "$SOCKET"
}

if ping; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  log "the Docker daemon does not answer on ${SOCKET}, and installing or starting it needs root; run: sudo $0"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Docker Engine (docker.io)"
  bash "$(dirname "$0")/apt-install.sh" docker.io
fi

# The daemon may be starting already (a parallel run, or a start that has not finished): it has
# written its pid file. Not "any process named dockerd": the Swarm lab's daemons (swarm-lab.sh)
# are dockerds too, on other sockets.
pid=$(cat /var/run/docker.pid 2>/dev/null || true)
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  # A containerd pid file left by a daemon that died: dockerd trusts any live pid in it (a thread of
  # another program, once pids wrap) and waits for a containerd that is not there.
  cpid=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)
  if [ -n "$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" != containerd ]; then rm -f /var/run/docker/containerd/containerd.pid; fi
  log "starting dockerd (log: ${LOG})"
  # Its own session: it must outlive this script and whatever test process ran it.
  # Docker's own networks come from 198.18.0.0/15 (reserved for network tests), never its private defaults.
  setsid dockerd --bip 198.18.0.1/24 --default-address-pool base=198.19.0.0/16,size=24 >"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 $((WAIT_SECONDS * 5))); do
  ping && exit 0
  sleep 0.2
done
log "dockerd did not answer on ${SOCKET} within ${WAIT_SECONDS}s; see ${LOG}"
tail -n 20 "$LOG" >&2 2>/dev/null || true
exit 1
