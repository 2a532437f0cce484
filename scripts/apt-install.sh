#!/usr/bin/env bash
# Installs Debian packages for the ensure-* scripts, as root: without recommended packages, with no
# service started by a package's postinst (each ensure script starts what it needs, its own way),
# and quietly: apt's and dpkg's output goes to a log that is printed only when the install fails.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }

LOG=/var/log/turquoise-apt.log

# One install at a time: test files run in parallel and each may install what it needs, and a
# second apt-get fails at once on dpkg's lock. Waits for ours, then for any other apt's lock.
exec 9>/var/lock/turquoise-apt.lock
flock -w 900 9 || { echo "apt-install: another install held /var/lock/turquoise-apt.lock for 15 minutes" >&2; exit 1; }

# invoke-rc.d asks policy-rc.d before starting a service: 101 means "do not start". Only a policy
# this script wrote is removed afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# written by turquoise scripts/apt-install.sh for the length of an install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
trap 'if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi' EXIT

export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
echo "apt-install: $* (log: ${LOG})" >&2
{
  echo "== $(date -u +%FT%TZ) apt-get install $*"
  # The package lists are fetched once per machine, or again when an install cannot find a package.
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e '^lock$' -e '^partial$' || true)" ]; then apt-get update -q; fi
  apt-get install -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends "$@" || { apt-get update -q && apt-get install -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends "$@"; }
} >>"$LOG" 2>&1 || {
  echo "apt-install: installing $* failed; the end of ${LOG}:" >&2
  tail -n 30 "$LOG" >&2
  exit 1
}
