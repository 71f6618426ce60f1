#!/usr/bin/env bash
# shellcheck disable=SC2317  # clean-up hooks are called indirectly
# bench/pubsub-profile.sh — where herd's CPU goes on the embedded pub/sub path (P4), counted in
# instructions by valgrind's callgrind, which stays stable on a busy machine where timings do not.
#
# herd (release build, `pubsub.embedded`) runs under `valgrind --tool=callgrind`; bench/pubsub-app.js
# publishes TOTAL messages of MSG_BYTES (IN_FLIGHT in flight) through POST /v1.0/publish and its
# sub-http role receives them under a declarative [[subscription]] (max_in_flight SUB_IN_FLIGHT;
# BULK=1 makes it a bulk subscription of BULK_MAX messages). Once every message was delivered herd is
# stopped and callgrind_annotate prints the inclusive cost of the functions that matter, per
# message: the publish handler, the writer thread's commits (publish batches with fsync, sweeps),
# the consumers' claims (read transactions on tokio's blocking pool) and acks, the delivery tasks (CloudEvent parsing, the POST), hyper and axum.
#
# Usage: bash bench/pubsub-profile.sh   (about 1–3 minutes; the output file stays in $OUT_DIR)
#   env: TOTAL=4000 IN_FLIGHT=64 SUB_IN_FLIGHT=64 MSG_BYTES=1024 BULK=0 BULK_MAX=64
#        OUT_DIR=/tmp/herd-profile HERD_REV CARGO_TARGET_DIR HERD_BENCH_CACHE
#        HERD_BIN=<path>: profile that herd binary (e.g. main's release build) instead of building one
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOTAL=${TOTAL:-4000}
IN_FLIGHT=${IN_FLIGHT:-64}
SUB_IN_FLIGHT=${SUB_IN_FLIGHT:-64}
MSG_BYTES=${MSG_BYTES:-1024}
BULK=${BULK:-0}
BULK_MAX=${BULK_MAX:-64}
OUT_DIR=${OUT_DIR:-/tmp/herd-profile}
export MSG_BYTES

bench_init pubsub-profile
need node valgrind callgrind_annotate curl
if [ -n "${HERD_BIN:-}" ]; then
  HERD=$HERD_BIN
else
  build_herd herd || { cat "$WORK/cargo.log"; die "cargo build failed"; }
fi
APP="$BENCH_ROOT/bench/pubsub-app.js"
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/callgrind.out.$(date +%s)"

free_port API_PORT; free_port STATS
DIR=$(mktemp -d "$WORK/herd.XXXX")
CFG="$DIR/herd.toml"
BULK_TOML=""
[ "$BULK" = 1 ] && BULK_TOML="bulk_subscribe = { enabled = true, max_messages_count = $BULK_MAX, max_await_duration_ms = 5 }"
cat >"$CFG" <<EOF
data_dir = "$DIR/.herd"

[api]
listen = "127.0.0.1:$API_PORT"

[[component]]
name = "pubsub"
type = "pubsub.embedded"

[[service]]
name = "sub"
command = ["node", "$APP", "sub-http"]
port = "auto"
env = { STATS_PORT = "$STATS" }

[[subscription]]
service = "sub"
pubsub = "pubsub"
topic = "profile"
route = "/p4"
max_in_flight = $SUB_IN_FLIGHT
$BULK_TOML
EOF

HERD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT" "$HERD" -c "$CFG" up >"$DIR/herd.out" 2>&1 &
VG_PID=$!; KILL_PIDS+=("$VG_PID")
stop_profiled() { pid_alive "$VG_PID" && { kill -TERM "$VG_PID" 2>/dev/null; wait_gone "$VG_PID" 60 || true; }; return 0; }
CLEANUP_HOOKS+=(stop_profiled)

for ((i = 0; i < 600; i++)); do
  subs=$(curl -s --max-time 2 "http://127.0.0.1:$API_PORT/v1.0/metadata" 2>/dev/null | grep -o '"pubsubname"' | wc -l || true)
  [ "$subs" -ge 1 ] && [ -n "$(curl -s --max-time 1 "http://127.0.0.1:$STATS/stats?run=x" 2>/dev/null)" ] && break
  sleep 0.2
done
[ "${subs:-0}" -ge 1 ] || { cat "$DIR/herd.out"; die "herd did not start under valgrind"; }

RUN="profile-$$"
say "publishing $TOTAL messages of $MSG_BYTES bytes, $IN_FLIGHT in flight, to herd under callgrind (bulk=$BULK)"
TARGET=herd API_PORT=$API_PORT PUBSUB=pubsub TOPIC=profile RUN=$RUN IN_FLIGHT=$IN_FLIGHT DURATION=600 TOTAL=$TOTAL \
  node "$APP" pub >"$DIR/pub.out"
for ((i = 0; i < 1200; i++)); do
  unique=$(curl -s --max-time 2 "http://127.0.0.1:$STATS/stats?run=$RUN" | sed -n 's/.*"unique":\([0-9]*\).*/\1/p')
  [ "${unique:-0}" -ge "$TOTAL" ] && break
  sleep 0.5
done
say "publisher: $(cat "$DIR/pub.out"); delivered ${unique:-0}"
"$HERD" -c "$CFG" down >/dev/null 2>&1 || kill -TERM "$VG_PID"
wait_gone "$VG_PID" 120 || true
forget_pid "$VG_PID"

total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}' || true)
say "callgrind: $OUT; program total $total Ir, $(awk -v t="$total" -v n="$TOTAL" 'BEGIN{printf "%.0f", t / n}') Ir per message"
echo
say "inclusive cost of the top functions (Ir, % of total, Ir per message):"
callgrind_annotate --inclusive=yes --threshold=99 "$OUT" 2>/dev/null >"$OUT.inclusive" || true
awk -v n="$TOTAL" '/^ *[0-9,]+ \(/ && k++ < top { c = $1; gsub(",", "", c); printf "%14s %8s %10.0f  %s\n", $1, $2, c / n, substr($0, index($0, $3)) }' \
  top="${TOP:-60}" "$OUT.inclusive"
