#!/usr/bin/env bash
# Makes jq available for the log tests, which run docs/logs.md's jq examples against a real
# agent.log, on a fresh Debian machine (installing needs root). Idempotent.
set -euo pipefail
command -v jq >/dev/null 2>&1 || bash "$(dirname "$0")/apt-install.sh" jq
command -v jq >/dev/null 2>&1 || { echo "ensure-jq: jq is still missing; run as root: $0" >&2; exit 1; }
