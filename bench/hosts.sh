#!/usr/bin/env bash
# bench/hosts.sh — H1, H2, H3 of issue "several hosts": herd on three separate hosts in two
# regions, made of Linux network namespaces on one machine (bench/hosts/net.sh: who is where, the
# WAN relay that adds DELAY_MS between the regions, the partition). Needs root, iproute2, node,
# redis-server and nats-server; every namespace, process and file it makes is removed on exit.
#
#   backends  redis-server and nats-server (JetStream) in their own namespace at 10.213.0.1, started
#             by this script, shared by all herds: state.redis `statestore`, pubsub.jetstream `pubsub`
#   h1, h2    region a;  h3 region b. One herd per host (`herd up -d` in the host's namespace):
#             [mesh] on <host>:3501 with the other two as peers (the other region's by WAN
#             address), refresh REFRESH; [api] on 127.0.0.1:3500 (per host); a gateway on
#             <host>:8000 routing / to an upstream of the three hosts' `echo` services (own region
#             first, per-try timeout, retries, health checks); services (bench/hosts/app.js serve
#             unless named): echo (2 instances, cluster mode on <host>:8080), where (h2: 2
#             instances, h3: 1; not on h1), at-<host> (1, records POSTed ids), sink (bench/
#             pubsub-app.js sub-http, subscribed to `orders`, records every delivery)
#
# H1  On h1 a probe invokes `where` through h1's API at H1_RATE/s: calls land on h2 (own region).
#     At +H1_LEAD s h2's herd is killed -9 (its instances die with it): calls move to h3; at
#     +H1_DOWN s more h2's herd is started again: calls come back. Printed: share landing in
#     region before the kill, p50 in and out of region, time from the kill until the last failed
#     or out-of-place answer (goal ≤ 1000 ms), time from h2 ready again until calls land there
#     again (goal ≤ 2 × REFRESH + 500 ms), failed calls.
# H3  Probes on h1 and h3 POST (unique ids) to at-h3 and at-h1 across the regions at H3_RATE/s;
#     at +H3_LEAD s the regions are partitioned (100 % loss) for H3_PART s, then healed. Printed:
#     time until the other region's peer has left (calls fail fast: answered within 100 ms;
#     goal ≤ 2 × REFRESH + 500 ms), time after the heal until calls succeed again; side effects: every acknowledged id was
#     executed (at-least-once), ids executed twice (goal 0: a POST that may have reached the app
#     is never sent again).
# H2  Load through the gateways of h1 and h3 (H2_RATE/s each, GET, from the client namespace),
#     publishers on h1 and h3 (pubsub-app.js pub, IN_FLIGHT 4), read-modify-write counters on all
#     three hosts (one shared key, ETags). At +H2_LEAD s host h2 dies: every process in its
#     namespace killed -9, then its link set down. Load runs H2_SECONDS in all. Printed: gateway
#     success (goal ≥ 99.99 %), acknowledged messages never delivered (goal 0; drained up to
#     DRAIN_TIMEOUT s, JetStream redelivers h2's unacknowledged deliveries after ackWait 2s), the
#     counter: values acknowledged twice and final < largest acknowledged (goal 0: no lost update).
#
# Usage: bash bench/hosts.sh       (about 2 minutes once built)
#   env: DELAY_MS=20 REFRESH_MS=500 H1_RATE=50 H1_LEAD=3 H1_DOWN=4 H1_AFTER=4 H3_RATE=20 H3_LEAD=3
#        H3_PART=6 H3_AFTER=6 H2_RATE=100 H2_LEAD=5 H2_SECONDS=20 DRAIN_TIMEOUT=30 SCENARIOS="H1 H3 H2"
#        HERD_BIN=<a herd binary> (default: build with build_herd, see bench/lib.sh) HERD_REV
#        CARGO_TARGET_DIR HERD_BENCH_CACHE
# Exit: 0 when every scenario ran (a missed goal is not a failure), 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/hosts/net.sh
. "$(dirname "${BASH_SOURCE[0]}")/hosts/net.sh"

DELAY_MS=${DELAY_MS:-20}
REFRESH_MS=${REFRESH_MS:-500}
H1_RATE=${H1_RATE:-50} H1_LEAD=${H1_LEAD:-3} H1_DOWN=${H1_DOWN:-4} H1_AFTER=${H1_AFTER:-4}
H3_RATE=${H3_RATE:-20} H3_LEAD=${H3_LEAD:-3} H3_PART=${H3_PART:-6} H3_AFTER=${H3_AFTER:-6}
H2_RATE=${H2_RATE:-100} H2_LEAD=${H2_LEAD:-5} H2_SECONDS=${H2_SECONDS:-20}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30}
SCENARIOS=${SCENARIOS:-H1 H3 H2}
APP="$BENCH_ROOT/bench/hosts/app.js"
PUBSUB_APP="$BENCH_ROOT/bench/pubsub-app.js"

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
need ip node redis-server nats-server curl
bench_init hosts
[ -n "${KEEP_WORK:-}" ] && say "keeping $WORK"
NET_PREFIX="hb$$"
NET_LOG="$WORK/relay.log"
hosts_cleanup() { net_down; }
CLEANUP_HOOKS+=(hosts_cleanup)
RUN="hosts-$(date +%s)-$$"

if [ -n "${HERD_BIN:-}" ]; then
  HERD=$HERD_BIN
else
  build_herd herd || { tail -20 "$WORK/cargo.log"; die "herd did not build"; }
fi
[ -x "$HERD" ] || die "no herd binary at $HERD"
say "herd $HERD ($(herd_rev_desc)); nproc $(nproc); $(date -u +%FT%TZ)"
say "hosts: h1 10.213.1.1 (a), h2 10.213.1.2 (a), h3 10.213.2.1 (b); backends 10.213.0.1; ${DELAY_MS} ms between regions (relay), mesh refresh ${REFRESH_MS} ms"

net_up "$NET_PREFIX" "$DELAY_MS" "3501 8080" || die "cannot build the namespaces"
net_exec be redis-server --bind 10.213.0.1 --port 6379 --protected-mode no --save "" --appendonly no \
  --logfile "$WORK/redis.log" >/dev/null 2>&1 </dev/null &
mkdir -p "$WORK/nats"
net_exec be nats-server -a 10.213.0.1 -p 4222 -js -sd "$WORK/nats" -l "$WORK/nats.log" \
  >/dev/null 2>&1 </dev/null &

region_of() { case $1 in h3) echo b ;; *) echo a ;; esac; }
# peer_addr from to: how host `from` reaches host `to` (own region: address; other: WAN).
peer_addr() {
  if [ "$(region_of "$1")" = "$(region_of "$2")" ]; then net_addr "$2"; else net_wan "$2"; fi
}

host_config() { # host: writes $WORK/<host>/herd.toml
  local h=$1 dir="$WORK/$1" addr region peers="" endpoints="" o where_n=0
  addr=$(net_addr "$h") region=$(region_of "$h")
  for o in h1 h2 h3; do
    endpoints+="  { address = \"$(peer_addr "$h" "$o"):8080\", region = \"$(region_of "$o")\" },"$'\n'
    [ "$o" = "$h" ] || peers+="\"$(peer_addr "$h" "$o"):3501\", "
  done
  case $h in h2) where_n=2 ;; h3) where_n=1 ;; esac
  mkdir -p "$dir"
  cat >"$dir/herd.toml" <<TOML
# host $h, region $region (bench/hosts.sh)
[api]
listen = "127.0.0.1:3500"

[mesh]
listen = "$addr:3501"
peers = [${peers%, }]
refresh = "${REFRESH_MS}ms"
region = "$region"

[gateway]
region = "$region"

[[gateway.listener]]
name = "public"
listen = "$addr:8000"

[[route]]
path_prefix = "/"
upstream = "echo"
timeout = "5s"
per_try_timeout = "1s"
retries = { policy = "constant", duration = "10ms", maxRetries = 3 }

[[upstream]]
name = "echo"
endpoints = [
$endpoints]
breaker = { trip = "consecutiveFailures >= 5", timeout = "2s", maxRequests = 1 }
health = { path = "/healthz", interval = "500ms", timeout = "1s", healthy = 2, unhealthy = 3 }

[[service]]
name = "echo"
command = ["node", "$APP", "serve"]
instances = 2
listen = "$addr:8080"
env = { HOST_NAME = "$h" }

[[service]]
name = "at-$h"
command = ["node", "$APP", "serve"]
port = "auto"
ready = { mode = "http", path = "/healthz" }
env = { HOST_NAME = "$h", RECORD_FILE = "$WORK/effects-$h" }

[[service]]
name = "sink"
command = ["node", "$PUBSUB_APP", "sub-http"]
port = "auto"
env = { RECORD_FILE = "$WORK/record-$h" }

[[subscription]]
service = "sink"
pubsub = "pubsub"
topic = "orders"
route = "/orders"

[[component]]
name = "statestore"
type = "state.redis"
metadata = { redisHost = "10.213.0.1:6379" }

[[component]]
name = "pubsub"
type = "pubsub.jetstream"
metadata = { natsURL = "nats://10.213.0.1:4222", ackWait = "2s" }
TOML
  if [ "$where_n" -gt 0 ]; then
    cat >>"$dir/herd.toml" <<TOML

[[service]]
name = "where"
command = ["node", "$APP", "serve"]
instances = $where_n
port = "auto"
ready = { mode = "http", path = "/healthz" }
env = { HOST_NAME = "$h" }
TOML
  fi
}

host_up() { # host: `herd up -d` in the host's namespace (returns once its instances are ready)
  net_exec "$1" env HERD_LOG=info "$HERD" -c "$WORK/$1/herd.toml" up -d >"$WORK/$1/up.out" 2>&1 ||
    { cat "$WORK/$1/up.out"; return 1; }
}
herd_pid_of() { cat "$WORK/$1/.herd/herd.pid"; }

# in_ns host url: GET from inside a namespace; prints the body ("" when it fails).
in_ns() { net_exec "$1" curl -s -m 2 "$2" 2>/dev/null || true; }

for h in h1 h2 h3; do host_config "$h"; done
for _ in $(seq 1 100); do
  net_exec cl bash -c 'exec 3<>/dev/tcp/10.213.0.1/6379 && exec 4<>/dev/tcp/10.213.0.1/4222' 2>/dev/null && break
  sleep 0.1
done
for h in h1 h2 h3; do host_up "$h" || die "herd on $h did not start"; done
say "three herds up"
# Ready when h1 reaches where (on h2) and at-h3 through the mesh, and h3 reaches at-h1.
for _ in $(seq 1 200); do
  in_ns h1 "http://127.0.0.1:3500/v1.0/invoke/where/method/x" | grep -q '"host":"h2"' &&
    in_ns h1 "http://127.0.0.1:3500/v1.0/invoke/at-h3/method/x" | grep -q '"host":"h3"' &&
    in_ns h3 "http://127.0.0.1:3500/v1.0/invoke/at-h1/method/x" | grep -q '"host":"h1"' && break
  sleep 0.1
done
in_ns h1 "http://127.0.0.1:3500/v1.0/invoke/where/method/x" | grep -q '"host":"h2"' ||
  die "the mesh did not form"
say "mesh formed"
ms() { date +%s%3N; }
FAILED=0

# --- H1 -----------------------------------------------------------------------------------------
h1() {
  local out="$WORK/h1.probe" stop="$WORK/h1.stop" t_kill t_restart t_ready pid
  net_exec h1 env URL="http://127.0.0.1:3500/v1.0/invoke/where/method/where" RATE="$H1_RATE" \
    OUT="$out" STOP_FILE="$stop" TIMEOUT_MS=5000 node "$APP" probe &
  pid=$!
  sleep "$H1_LEAD"
  t_kill=$(ms)
  kill -KILL "$(herd_pid_of h2)"
  sleep "$H1_DOWN"
  t_restart=$(ms)
  host_up h2 || { FAILED=1; say "H1: h2 did not come back"; }
  t_ready=$(ms)
  sleep "$H1_AFTER"
  touch "$stop"
  wait "$pid" || true
  say "H1: h2's herd killed; started again at +$((t_restart - t_kill)) ms, ready at +$((t_ready - t_kill)) ms"
  awk -v tk="$t_kill" -v ts="$t_restart" -v tr="$t_ready" -v refresh="$REFRESH_MS" '
    function p50(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t } return n ? a[int((n + 1) / 2)] : "n/a" }
    { sent = $1; st = $2; lat = $3; host = $4; done = sent + lat
      if (sent < tk) { nb++; if (st == 200 && host == "h2") { inb++; ina[++nin] = lat } else bad_before++ }
      else if (sent < ts) { if (st == 200 && host == "h3") outa[++nout] = lat; else { if (done - tk > fo) fo = done - tk; fail_win += (st != 200) } }
      else if (sent < tr) { fail_win += (st != 200) }
      else { n_after++; if (!(st == 200 && host == "h2")) { if (sent - tr > back) back = sent - tr + lat; fail_after += (st != 200) } }
    }
    END {
      share = nb ? 100 * inb / nb : 0
      goal_back = 2 * refresh + 500
      met = (share == 100 && fo <= 1000 && back <= goal_back && nout > 0) ? "met" : "missed"
      printf "RESULT H1 in_region_share=%.2f%% p50_in_ms=%s p50_out_ms=%s failover_ms=%d failed_during_failover=%d back_ms=%d failed_after=%d calls=%d goal=in-region,failover<=1000ms,back<=%dms %s\n", share, p50(ina, nin), p50(outa, nout), fo, fail_win, back, fail_after, NR, goal_back, met
    }' "$out"
}

# --- H3 -----------------------------------------------------------------------------------------
h3() {
  local stop="$WORK/h3.stop" t_part t_heal p1 p3
  net_exec h1 env URL="http://127.0.0.1:3500/v1.0/invoke/at-h3/method/effect" METHOD=POST \
    RATE="$H3_RATE" OUT="$WORK/h3-from-h1.probe" STOP_FILE="$stop" TIMEOUT_MS=10000 node "$APP" probe &
  p1=$!
  net_exec h3 env URL="http://127.0.0.1:3500/v1.0/invoke/at-h1/method/effect" METHOD=POST \
    RATE="$H3_RATE" OUT="$WORK/h3-from-h3.probe" STOP_FILE="$stop" TIMEOUT_MS=10000 node "$APP" probe &
  p3=$!
  sleep "$H3_LEAD"
  t_part=$(ms)
  net_partition on
  sleep "$H3_PART"
  t_heal=$(ms)
  net_partition off
  sleep "$H3_AFTER"
  touch "$stop"
  wait "$p1" "$p3" || true
  local side
  for side in "h1 h3" "h3 h1"; do
    set -- $side
    awk -v tp="$t_part" -v th="$t_heal" -v refresh="$REFRESH_MS" -v from="$1" -v to="$2" '
      FNR == NR { if ($1 == to) exec[$2]++; next }
      { sent = $1; st = $2; lat = $3; id = $5; n++
        if (st == 200) { acked++; if (!(id in exec)) lost++ }
        if (sent >= tp && sent < th && st != 200 && lat < 100 && left == "") left = sent - tp
        if (sent >= th && st != 200 && sent - th + lat > rejoin) rejoin = sent - th + lat
        if (sent < tp && st != 200) before++
      }
      END {
        for (id in exec) { if (exec[id] > 1) dup++; executed++ }
        goal_left = 2 * refresh + 500
        met = (left != "" && left <= goal_left && lost == 0 && dup == 0 && before == 0) ? "met" : "missed"
        printf "RESULT H3 from=%s to=%s peer_left_ms=%s rejoined_ms=%d calls=%d acknowledged=%d executed=%d acknowledged_not_executed=%d executed_twice=%d failed_before=%d goal=left<=%dms,0-lost,0-duplicates %s\n", from, to, (left == "" ? "never" : left), rejoin, n, acked, executed, lost + 0, dup + 0, before + 0, goal_left, met
      }' "$WORK/effects-$2" "$WORK/h3-from-$1.probe"
  done
}

# --- H2 -----------------------------------------------------------------------------------------
h2() {
  local stop="$WORK/h2.stop" pids=() h key="h2-counter-$RUN" t0
  for h in h1 h3; do
    net_exec cl env URL="http://$(net_addr "$h"):8000/" RATE="$H2_RATE" OUT="$WORK/h2-load-$h.probe" \
      STOP_FILE="$stop" TIMEOUT_MS=5000 node "$APP" probe &
    pids+=($!)
    net_exec "$h" env TARGET=herd API_PORT=3500 PUBSUB=pubsub TOPIC=orders RUN="$RUN-$h" IN_FLIGHT=4 \
      DURATION="$H2_SECONDS" RETRY_MS=50 MSG_BYTES=256 ACKED_FILE="$WORK/acked-$h" \
      FAILED_FILE="$WORK/failed-$h" node "$PUBSUB_APP" pub >"$WORK/pub-$h.out" 2>&1 &
    pids+=($!)
  done
  for h in h1 h2 h3; do
    net_exec "$h" env KEY="$key" ACKED_FILE="$WORK/counter-$h" STOP_FILE="$stop" PAUSE_MS=10 \
      node "$APP" counter >"$WORK/counter-$h.out" 2>&1 &
    [ "$h" = h2 ] || pids+=($!)
  done
  t0=$(ms)
  sleep "$H2_LEAD"
  net_kill h2
  sleep 0.5
  net_link h2 down
  say "H2: h2 killed at +$(( $(ms) - t0 )) ms, link down"
  sleep $((H2_SECONDS - H2_LEAD))
  touch "$stop"
  wait "${pids[@]}" || true
  # Gateways.
  local ok total
  read -r ok total < <(cat "$WORK"/h2-load-*.probe | awk '{ n++; if ($2 == 200) ok++ } END { print ok + 0, n + 0 }')
  # Messages: every acknowledged "<run> <seq>" in some record, draining up to DRAIN_TIMEOUT s.
  local acked="$WORK/h2-acked" lost=0 last_change seen=0 now_seen
  for h in h1 h3; do sed "s/^/$RUN-$h /" "$WORK/acked-$h" | grep -v ' $' >>"$acked" || true; done
  last_change=$(date +%s)
  while :; do
    lost=$(cat "$WORK"/record-* 2>/dev/null | sort -u | comm -23 <(sort -u "$acked") - | wc -l)
    [ "$lost" -eq 0 ] && break
    now_seen=$(cat "$WORK"/record-* 2>/dev/null | wc -l)
    [ "$now_seen" -ne "$seen" ] && { seen=$now_seen; last_change=$(date +%s); }
    [ $(($(date +%s) - last_change)) -ge "$DRAIN_TIMEOUT" ] && break
    sleep 0.5
  done
  local n_acked deliveries unique
  n_acked=$(wc -l <"$acked")
  deliveries=$(cat "$WORK"/record-* 2>/dev/null | grep -c "^$RUN-" || true)
  unique=$(cat "$WORK"/record-* 2>/dev/null | grep "^$RUN-" | sort -u | wc -l)
  # The counter.
  local final max twice
  final=$(in_ns h1 "http://127.0.0.1:3500/v1.0/state/statestore/$key")
  max=$(cat "$WORK"/counter-h? | sort -n | tail -1)
  twice=$(cat "$WORK"/counter-h? | sort -n | uniq -d | wc -l)
  local rate met
  rate=$(awk -v o="$ok" -v t="$total" 'BEGIN { printf "%.3f", t ? 100 * o / t : 0 }')
  met=$(awk -v o="$ok" -v t="$total" -v l="$lost" -v tw="$twice" -v f="${final:-0}" -v m="${max:-0}" \
    'BEGIN { print (t > 0 && o / t >= 0.9999 && l == 0 && tw == 0 && f + 0 >= m + 0) ? "met" : "missed" }')
  say "H2 publishers: $(cat "$WORK/pub-h1.out") / $(cat "$WORK/pub-h3.out")"
  say "H2 counters: h1 $(cat "$WORK/counter-h1.out") h3 $(cat "$WORK/counter-h3.out") (h2's died with it)"
  result "H2 gateway_success=${rate}% ok=$ok requests=$total acked_messages=$n_acked delivered_unique=$unique deliveries=$deliveries lost=$lost counter_final=${final:-none} counter_max_acked=${max:-none} counter_acked=$(cat "$WORK"/counter-h? | wc -l) acked_twice=$twice goal=99.99%,0-lost,no-lost-update $met"
}

for s in $SCENARIOS; do
  case $s in
    H1) say "H1: invocation prefers the own region and fails over"; h1 ;;
    H3) say "H3: partition between the regions, then heal"; h3 ;;
    H2) say "H2: host h2 dies under load"; h2 ;;
    *) die "unknown scenario $s" ;;
  esac
done
exit "$FAILED"
