#!/usr/bin/env bash
# Makes jq available for the log tests, which run docs/logs.md's jq examples against a real
# agent.log, on a fresh Debian machine (installing needs root).
exec bash "$(dirname "$0")/ensure-commands.sh" jq jq
