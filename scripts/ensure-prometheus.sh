#!/usr/bin/env bash
# Makes Prometheus available for the metrics tests on a fresh Debian machine, as root. It never
# starts the system service: each test runs its own Prometheus on loopback with a generated config.
exec bash "$(dirname "$0")/ensure-commands.sh" prometheus prometheus
