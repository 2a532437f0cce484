#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser tests (driven by playwright-core) unless
# /usr/bin/chromium is already there. Prints the browser's path on its last line.
set -euo pipefail
bash "$(dirname "$0")/ensure-commands.sh" chromium chromium >&2
command -v chromium
