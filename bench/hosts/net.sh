# shellcheck shell=bash
# bench/hosts/net.sh — separate hosts on one machine: Linux network namespaces on a private test
# subnet, for bench/hosts.sh and crates/herd/tests/it/hosts.rs. Sourced (functions net_*), or run
# as `bash net.sh VERB PREFIX ...` (the verbs below). Needs root and iproute2 (`ip`).
#
# Topology, every name starting with PREFIX (a namespace per box, nothing in the caller's own):
#
#   PREFIX-net  the switch and router: bridges br0 (10.213.0.0/24, the backends and the client),
#               br1 (region a, 10.213.1.0/24) and br2 (region b, 10.213.2.0/24), each with the
#               router's address .254, forwarding between them
#   PREFIX-be   10.213.0.1   the shared backends (bench/hosts.sh runs redis-server and nats-server
#                            here, on this address: reachable from every host, from nothing else)
#   PREFIX-cl   10.213.0.2   where load generators and checks run
#   PREFIX-h1   10.213.1.1   host 1, region a
#   PREFIX-h2   10.213.1.2   host 2, region a
#   PREFIX-h3   10.213.2.1   host 3, region b
#
# Every host namespace has `lo` up (herd's own API on 127.0.0.1 is per host) and eth0, a veth
# whose other end is a port of its region's bridge; the 10.213.x.0/24 subnets exist only inside
# these namespaces, so no traffic leaves them.
#
# Between the regions hosts dial each other's WAN address: host 10.213.R.X is 10.213.(10+R).X
# (h1 10.213.11.1, h2 10.213.11.2, h3 10.213.12.1), addresses of the router where relay.js
# listens on the ports given and connects on to the host, holding every chunk DELAY/2 ms in each
# direction: DELAY ms more round trip. (`tc netem` needs CONFIG_NET_SCH_NETEM, which the kernels
# this runs on lack: tc answers "Specified qdisc kind is unknown"; an in-path transparent relay
# would need iptables or IP_TRANSPARENT sockets. A WAN address per host is also how regions
# usually see each other.) Within a region, and between a region and br0 (backends, client),
# hosts use their own addresses, forwarded undelayed.
#
# Partition (`partition on`): blackhole rules in the router for every pair of a region's own and
# WAN addresses and the other region's, both directions, relayed connections included — 100 %
# loss, as netem loss 100 % would be: established connections stall, new ones time out.
# `partition off` heals.
#
# Teardown (`down`): SIGKILL to every process in the namespaces, then the namespaces go (veths and
# bridges with them). Callers arrange it on every exit (bench: trap; test: a Drop guard).

NET_HOSTS="h1:a:10.213.1.1 h2:a:10.213.1.2 h3:b:10.213.2.1"
NET_SIDE="be:10.213.0.1 cl:10.213.0.2"
NET_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

net_region_subnet() { case $1 in a) echo 1 ;; b) echo 2 ;; esac; }
net_ns() { echo "$NET_PREFIX-$1"; }                  # name -> namespace
net_exec() { local n=$1; shift; ip netns exec "$(net_ns "$n")" "$@"; }   # name cmd...
net_addr() {                                          # name -> its address
  local e
  for e in $NET_HOSTS $NET_SIDE; do
    case $e in "$1":*) echo "${e##*:}"; return 0 ;; esac
  done
  return 1
}

net_wan() {                                           # host name -> its WAN address
  local a
  a=$(net_addr "$1") || return 1
  IFS=. read -r o1 o2 o3 o4 <<<"$a"
  echo "$o1.$o2.$((o3 + 10)).$o4"
}

# _net_attach name bridge addr: namespace `name` with eth0 at addr/24 on `bridge` of the router.
_net_attach() {
  local name=$1 br=$2 addr=$3 ns router
  ns=$(net_ns "$name") router=$(net_ns net)
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add eth0 netns "$ns" type veth peer name "$name" netns "$router"
  ip -n "$router" link set "$name" master "$br" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "${addr%.*}.254"
}

# net_up prefix delay_ms relay_ports: builds the topology; with relay_ports (space-separated)
# adds the WAN addresses and starts relay.js on them, delay_ms round trip.
net_up() {
  NET_PREFIX=$1
  local delay=${2:-0} ports=${3:-} router i e name region addr
  router=$(net_ns net)
  ip netns add "$router"
  ip -n "$router" link set lo up
  ip netns exec "$router" sysctl -qw net.ipv4.ip_forward=1
  for i in 0 1 2; do
    ip -n "$router" link add "br$i" type bridge
    ip -n "$router" addr add "10.213.$i.254/24" dev "br$i"
    ip -n "$router" link set "br$i" up
  done
  for e in $NET_SIDE; do _net_attach "${e%%:*}" br0 "${e##*:}"; done
  for e in $NET_HOSTS; do
    IFS=: read -r name region addr <<<"$e"
    _net_attach "$name" "br$(net_region_subnet "$region")" "$addr"
  done
  [ -n "$ports" ] || return 0
  for e in $NET_HOSTS; do ip -n "$router" addr add "$(net_wan "${e%%:*}")/32" dev lo; done
  local log=${NET_LOG:-$(mktemp)}
  # shellcheck disable=SC2086  # one argument per port
  ip netns exec "$router" node "$NET_DIR/relay.js" "$((delay / 2))" $ports >"$log" 2>&1 </dev/null &
  disown $!
  for i in $(seq 1 200); do
    grep -q '^relay ready' "$log" && return 0
    sleep 0.05
  done
  echo "net.sh: relay.js did not start:" >&2
  cat "$log" >&2
  return 1
}

# net_partition on|off: 100 % loss between the regions, or none.
net_partition() {
  local router verb
  router=$(net_ns net)
  verb=$([ "$1" = on ] && echo add || echo del)
  local from to
  for from in 10.213.1.0/24 10.213.11.0/24; do
    for to in 10.213.2.0/24 10.213.12.0/24; do
      ip -n "$router" rule "$verb" from "$from" to "$to" blackhole prio 10
      ip -n "$router" rule "$verb" from "$to" to "$from" blackhole prio 10
    done
  done
}

# net_kill name: SIGKILL to every process in the namespace (a host dies).
net_kill() {
  local pids
  pids=$(ip netns pids "$(net_ns "$1")" 2>/dev/null || true)
  # shellcheck disable=SC2086  # one argument per pid
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

# net_link name up|down: the host's port on its bridge.
net_link() { ip -n "$(net_ns net)" link set "$1" "$2"; }

# net_down: every process in the namespaces killed, the namespaces deleted. Safe to call twice.
net_down() {
  local e n
  for e in $NET_HOSTS $NET_SIDE net:; do
    n=${e%%:*}
    ip netns list 2>/dev/null | grep -q "^$(net_ns "$n")\b" || continue
    net_kill "$n"
  done
  for e in $NET_HOSTS $NET_SIDE net:; do
    n=${e%%:*}
    ip netns list 2>/dev/null | grep -q "^$(net_ns "$n")\b" || continue
    ip netns del "$(net_ns "$n")" 2>/dev/null || true
  done
}

# As a command: bash net.sh up PREFIX DELAY_MS PORTS... | down PREFIX | partition PREFIX on|off |
# kill PREFIX NAME | link PREFIX NAME up|down | addr PREFIX NAME | wan PREFIX NAME
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  verb=${1:?verb}
  NET_PREFIX=${2:?prefix}
  shift 2
  case $verb in
    up) delay=${1:-0}; shift || true; net_up "$NET_PREFIX" "$delay" "$*" ;;
    down) net_down ;;
    partition) net_partition "$1" ;;
    kill) net_kill "$1" ;;
    link) net_link "$1" "$2" ;;
    addr) net_addr "$1" ;;
    wan) net_wan "$1" ;;
    *) echo "net.sh: unknown verb $verb" >&2; exit 2 ;;
  esac
fi
