#!/usr/bin/env bash
# Makes etcd available for the etcd state-driver tests on a fresh Debian machine, as root. It never
# starts the system service: each test file runs its own three-member cluster on loopback ports
# (test/support/etcd.ts).
exec bash "$(dirname "$0")/ensure-commands.sh" etcd-server etcd
