#!/usr/bin/env bash
# Makes Debian's pebble (the ACME test server from Let's Encrypt) available for the ACME tests, as
# root. Each test runs its own pebble and pebble-challtestsrv on loopback with a generated config.
exec bash "$(dirname "$0")/ensure-commands.sh" pebble pebble pebble-challtestsrv
