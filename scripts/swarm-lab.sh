#!/usr/bin/env bash
# A three-node Docker Swarm on one machine, for the swarm runtime's tests and benchmarks: three
# network namespaces on a bridge, one dockerd in each, joined as one manager and two workers.
# Usage: swarm-lab.sh up|down|status|ensure|crash NODE (ensure: up unless the lab already answers). Needs root. Addresses come from 198.18.0.0/15 only, and not
# from the ranges the machine's own dockerd uses (198.18.0.0/24, 198.19.0.0/16: ensure-docker.sh).
#
#   bridge tqlab0 in the root namespace       198.18.100.1/24   (the agent, proxy and database listen here)
#   node1 (manager)  netns tqlab-node1        198.18.100.11     docker0 198.18.101.1/24
#   node2 (worker)   netns tqlab-node2        198.18.100.12     docker0 198.18.102.1/24
#   node3 (worker)   netns tqlab-node3        198.18.100.13     docker0 198.18.103.1/24
#   each node's other local networks: 198.18.64.0/18 in /24s; Swarm's overlay pool 198.18.128.0/17 in /24s
#   each daemon's socket: /run/turquoise-lab/nodeN/docker.sock (a file, so the host reaches it)
set -euo pipefail

LAB_RUN=/run/turquoise-lab
LAB_DATA=/var/lib/turquoise-lab
BRIDGE=tqlab0
BRIDGE_ADDR=198.18.100.1
PREFIX=24
NODES=(node1 node2 node3)
# The tag on our FORWARD rule, so that down removes only what up added.
RULE_COMMENT=turquoise-swarm-lab
WAIT_SECONDS=60

log() { echo "swarm-lab: $*" >&2; }
die() { log "$*"; exit 1; }

node_index() { echo "${1#node}"; }
node_addr() { echo "198.18.100.1$(node_index "$1")"; }
node_ns() { echo "tqlab-$1"; }
node_sock() { echo "$LAB_RUN/$1/docker.sock"; }
# cgroup v1 and v2 alike: every container of the node lives under this parent, so down finds them all.
node_cgroup() { echo "turquoise-lab-$1"; }
dk() { local node=$1; shift; docker -H "unix://$(node_sock "$node")" "$@"; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, a bridge, dockerd); run: sudo $0 $*"
}

ensure_tools() {
  local here
  here=$(dirname "$0")
  command -v ip >/dev/null 2>&1 || bash "$here/ensure-commands.sh" iproute2 ip
  command -v iptables >/dev/null 2>&1 || bash "$here/ensure-commands.sh" iptables iptables
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    bash "$here/apt-install.sh" docker.io
  fi
}

ping_sock() {
  [ -S "$1" ] || return 1
  curl -fsS --max-time 3 --unix-socket "$1" http://localhost/_ping >/dev/null 2>&1
}

# Every pid of a node: processes in its namespace (dockerd, containerd, shims) and in its cgroups (containers).
node_pids() {
  local node=$1 ns cg
  ns=$(node_ns "$node")
  cg=$(node_cgroup "$node")
  { ip netns pids "$ns" 2>/dev/null || true
    find /sys/fs/cgroup -path "*/$cg/*" -name cgroup.procs -exec cat {} + 2>/dev/null || true
    find /sys/fs/cgroup -path "*/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  } | sort -u
}

kill_node() {
  local node=$1 pid pids
  pid=$(cat "$LAB_RUN/$node/dockerd.pid" 2>/dev/null || true)
  # A clean stop first: dockerd stops its containers and its containerd.
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  fi
  for _ in 1 2 3; do
    pids=$(node_pids "$node")
    [ -n "$pids" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.3
  done
  # Empty cgroups, deepest first.
  find /sys/fs/cgroup -depth -type d -path "*/$(node_cgroup "$node")*" -exec rmdir {} \; 2>/dev/null || true
}

down() {
  local node
  for node in "${NODES[@]}"; do kill_node "$node"; done
  for node in "${NODES[@]}"; do
    ip netns del "$(node_ns "$node")" 2>/dev/null || true
    ip link del "tqlab-$node" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$RULE_COMMENT" -j ACCEPT 2>/dev/null; do :; done
  # A daemon killed mid-way can leave mounts under its data root (the host's mount namespace is
  # normally spared: each daemon mounts inside its own).
  if [ -d "$LAB_DATA" ]; then
    { grep -o " $LAB_DATA[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  { grep -o " $LAB_RUN[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$LAB_DATA" "$LAB_RUN"
}

start_node() {
  local node=$1 ns addr idx dir
  ns=$(node_ns "$node")
  addr=$(node_addr "$node")
  idx=$(node_index "$node")
  dir="$LAB_RUN/$node"
  mkdir -p "$dir" "$LAB_DATA/$node"
  ip netns add "$ns"
  ip link add "tqlab-$node" type veth peer name eth0 netns "$ns"
  ip link set "tqlab-$node" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/$PREFIX" dev eth0
  ip -n "$ns" link set eth0 up
  # Inside the node, the host is the way out; the host forwards nothing beyond the lab (FORWARD DROP).
  ip -n "$ns" route add default via "$BRIDGE_ADDR"
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  # Not `ip netns exec`: its fresh /sys hides the cgroup mounts dockerd needs. The same idea by
  # hand: a private mount namespace (the daemon's mounts never reach the host's), a sysfs that
  # shows this namespace's links, the host's cgroup tree bound back in, a host name of its own
  # (Swarm's node name), its own session (it outlives this script). Its own roots, socket,
  # containerd namespace and cgroup parent: the daemons never share a file or a container.
  nsenter --net="/run/netns/$ns" setsid unshare --mount --uts --propagation slave sh -c '
      mkdir -p "$1/cgroup" && mount --rbind /sys/fs/cgroup "$1/cgroup" &&
      mount -t sysfs sysfs /sys && mount --rbind "$1/cgroup" /sys/fs/cgroup && umount -l "$1/cgroup" &&
      hostname "$2" && shift 2 && exec "$@"' sh "$dir" "turquoise-lab-$node" dockerd \
    --data-root "$LAB_DATA/$node" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" \
    --host "unix://$dir/docker.sock" \
    --containerd-namespace "turquoise-lab-$node" \
    --containerd-plugins-namespace "turquoise-lab-$node-plugins" \
    --cgroup-parent "/$(node_cgroup "$node")" \
    --bip "198.18.10$idx.1/24" \
    --default-address-pool base=198.18.64.0/18,size=24 \
    --iptables=true \
    >"$dir/dockerd.log" 2>&1 </dev/null &
}

wait_node() {
  local node=$1 sock
  sock=$(node_sock "$node")
  for _ in $(seq 1 $((WAIT_SECONDS * 5))); do
    ping_sock "$sock" && return 0
    sleep 0.2
  done
  tail -n 20 "$LAB_RUN/$node/dockerd.log" >&2 || true
  die "dockerd of $node did not answer on $sock within ${WAIT_SECONDS}s (log above: $LAB_RUN/$node/dockerd.log)"
}

up() {
  local started node token manager
  started=$(date +%s%N)
  ensure_tools
  # A crashed run may have left anything behind: start from nothing.
  down
  mkdir -p "$LAB_RUN" "$LAB_DATA"
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_ADDR/$PREFIX" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Bridged frames go through the host's iptables (br_netfilter), whose FORWARD policy Docker sets to DROP.
  iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$RULE_COMMENT" -j ACCEPT
  for node in "${NODES[@]}"; do start_node "$node"; done
  for node in "${NODES[@]}"; do wait_node "$node"; done

  manager=${NODES[0]}
  dk "$manager" swarm init --advertise-addr "$(node_addr "$manager")" --listen-addr "$(node_addr "$manager"):2377" \
    --default-addr-pool 198.18.128.0/17 --default-addr-pool-mask-length 24 >/dev/null
  token=$(dk "$manager" swarm join-token -q worker)
  for node in "${NODES[@]:1}"; do
    dk "$node" swarm join --advertise-addr "$(node_addr "$node")" --listen-addr "$(node_addr "$node"):2377" \
      --token "$token" "$(node_addr "$manager"):2377" >/dev/null
  done
  for _ in $(seq 1 $((WAIT_SECONDS * 5))); do
    [ "$(dk "$manager" node ls --format '{{.Status}}' | grep -c '^Ready$')" -eq "${#NODES[@]}" ] && break
    sleep 0.2
  done
  [ "$(dk "$manager" node ls --format '{{.Status}}' | grep -c '^Ready$')" -eq "${#NODES[@]}" ] || { status; die "the nodes did not all become Ready within ${WAIT_SECONDS}s"; }
  # Node labels by name, so a spec can pin a task (node.labels.turquoise-lab==node2).
  for node in "${NODES[@]}"; do
    dk "$manager" node update --label-add "turquoise-lab=$node" "$(dk "$node" info --format '{{.Swarm.NodeID}}')" >/dev/null
  done
  status
  log "up in $(( ($(date +%s%N) - started) / 1000000 )) ms; manager socket $(node_sock "$manager")"
}

status() {
  local node
  for node in "${NODES[@]}"; do
    if ping_sock "$(node_sock "$node")"; then
      echo "$node $(node_addr "$node") $(node_sock "$node") dockerd up, swarm $(dk "$node" info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' | sed 's/ true$/ manager/; s/ false$/ worker/')"
    else
      echo "$node $(node_addr "$node") $(node_sock "$node") dockerd down"
    fi
  done
  if ping_sock "$(node_sock "${NODES[0]}")"; then dk "${NODES[0]}" node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}} {{.Self}}' 2>/dev/null || true; fi
}

case "${1:-}" in
  up) need_root up; up ;;
  down) need_root down; down; log "down: no namespace, link, daemon, mount or data dir of the lab is left" ;;
  status) status ;;
  crash)
    # A node whose Docker and every container on it die at once, its network still up: what
    # npm run bench:swarm does to a worker. `up` builds a whole cluster again afterwards.
    need_root crash
    case "${2:-}" in node1|node2|node3) ;; *) echo "usage: $0 crash node1|node2|node3" >&2; exit 2 ;; esac
    pids=$(node_pids "$2")
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    log "crashed $2: killed $(echo $pids | wc -w) processes"
    ;;
  ensure)
    if ping_sock "$(node_sock "${NODES[0]}")" && [ "$(dk "${NODES[0]}" node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$')" -eq "${#NODES[@]}" ]; then
      log "already up"
    else
      need_root ensure; up
    fi
    ;;
  *) echo "usage: $0 up|down|status|ensure|crash NODE" >&2; exit 2 ;;
esac
