#!/usr/bin/env bash
# bench/r4.sh — figure R4 of shared/design/BENCHMARKS.md.
#
# R4: kill -9 herd while TOTAL (100 000) messages are published with acks to the embedded pub/sub
#     backend; restart it on the same data dir; drain; a Jepsen-style total-queue check.
#
#   herd       `herd up -d` (HERD_CPU), [api], the default embedded pub/sub component `pubsub`
#              (redb log, fsync before the 204), a subscriber service (bench/pubsub-app.js sub-http,
#              `port = "auto"`, pinned to LOAD_CPU) with a declarative [[subscription]]
#              (max_in_flight = SUB_IN_FLIGHT). The app appends "<run> <seq>" to one record file
#              (O_APPEND, one write(2)) before it answers 200, so a delivery it answered survives
#              its own death (herd's kill takes the app with it: PR_SET_PDEATHSIG).
#   publisher  bench/pubsub-app.js pub, IN_FLIGHT lanes, 1 KB messages, every attempt a new id
#              (seq); an attempt is acknowledged when herd answers 204; a failed attempt (refused
#              connection, reset, non-204) is recorded, its lane waits RETRY_MS and goes on with a
#              new id, until TOTAL attempts have been acknowledged.
#   the kill   when the publisher's acknowledged count reaches each number in KILL_AT, herd gets
#              SIGKILL (publishing goes on and fails); after DOWN_SECONDS it is started again with
#              the same herd.toml and data dir.
#   the check  once the publisher is done, the subscriber's record is polled until every
#              acknowledged id has been delivered, or nothing new arrives for DRAIN_TIMEOUT s:
#              lost       = acknowledged, never delivered            (goal: 0)
#              unexpected = delivered, never acknowledged            (allowed: a publish whose 204
#                                                                     was lost in the kill)
#              duplicated = ids delivered more than once             (allowed: at-least-once)
#
# Usage: bash bench/r4.sh
#   env: TOTAL=100000 KILL_AT="50000" DOWN_SECONDS=1 IN_FLIGHT=64 SUB_IN_FLIGHT=64 RETRY_MS=20
#        MSG_BYTES=1024 DRAIN_TIMEOUT=60 STALL_TIMEOUT=60 HERD_CPU=1 LOAD_CPU=0
#        HERD_REV=<commit> CARGO_TARGET_DIR HERD_BENCH_CACHE=/tmp/herd-bench
# Exit: 0 when herd built, started, restarted and the publisher finished (goal met or not),
#       1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOTAL=${TOTAL:-100000}
KILL_AT=${KILL_AT:-50000}
DOWN_SECONDS=${DOWN_SECONDS:-1}       # how long herd stays dead (publishes fail meanwhile)
IN_FLIGHT=${IN_FLIGHT:-64}
SUB_IN_FLIGHT=${SUB_IN_FLIGHT:-64}
RETRY_MS=${RETRY_MS:-20}
MSG_BYTES=${MSG_BYTES:-1024}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-60}    # s without a new delivery before the rest counts as lost
STALL_TIMEOUT=${STALL_TIMEOUT:-60}    # s without a new ack (herd up) before the publisher is given up
if [ "$(nproc)" -ge 2 ]; then HERD_CPU=${HERD_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
else HERD_CPU=${HERD_CPU:-0}; LOAD_CPU=${LOAD_CPU:-0}; fi
CLI_CPU=$LOAD_CPU
export MSG_BYTES
read -ra KILLS <<<"$KILL_AT"

bench_init r4
APP="$BENCH_ROOT/bench/pubsub-app.js"
RUN="herd-r4-$(date +%s)-$$"
need node curl taskset awk

FAILED=""
if ! build_herd herd || [ ! -x "$HERD" ]; then cat "$WORK/cargo.log"; die "cargo build failed"; fi

# --- herd ------------------------------------------------------------------------------------------
HERD_DIR=$(mktemp -d "$WORK/herd.XXXX")
CFG="$HERD_DIR/herd.toml"
RECORDS="$WORK/records"; mkdir -p "$RECORDS"
free_port API_PORT
cat >"$CFG" <<EOF
data_dir = "$HERD_DIR/.herd"

[api]
listen = "127.0.0.1:$API_PORT"

[[component]]
name = "pubsub"
type = "pubsub.embedded"

[[service]]
name = "r4sub"
command = ["taskset", "-c", "$LOAD_CPU", "node", "$APP", "sub-http"]
port = "auto"
env = { RECORD_FILE = "$RECORDS/delivered" }

[[subscription]]
service = "r4sub"
pubsub = "pubsub"
topic = "r4"
route = "/r4"
max_in_flight = $SUB_IN_FLIGHT
EOF

# start_herd: `herd up -d`, then polls until the API answers and the subscription is active;
# sets HERD_PID and UP_MS (from `herd up` to ready).
UP_MS=0
start_herd() {
  local t0 i code subs
  t0=$(date +%s%N)
  herd_up "$CFG" "$HERD_CPU" HERD_LOG=info || return 1
  for ((i = 0; i < 600; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$API_PORT/v1.0/healthz" 2>/dev/null || true)
    subs=$(curl -s --max-time 1 "http://127.0.0.1:$API_PORT/v1.0/metadata" 2>/dev/null | grep -o '"pubsubname"' | wc -l || true)
    if [ "$code" = 204 ] && [ "$subs" -ge 1 ]; then UP_MS=$(( ($(date +%s%N) - t0) / 1000000 )); return 0; fi
    sleep 0.05
  done
  echo "herd: API or subscription not ready (healthz ${code:-nothing}, $subs subscription(s))"
  tail -5 "$HERD_DIR/.herd/herd.log" 2>/dev/null
  return 1
}

check() { # -> JSON of the total-queue check over the record so far
  ACKED_FILE="$WORK/acked" FAILED_FILE="$WORK/failed" RUN="$RUN" RECORD_GLOB_DIR="$RECORDS" \
    RECORD_PREFIX=delivered on_cpu "$LOAD_CPU" node "$APP" r4-check
}
json_num() { sed -n "s/.*\"$2\":\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" <<<"$1"; }

say "herd R4 kill -9 under publish load — $(date -u)"
say "nproc=$(nproc); node $(node --version); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)"
say "CPU budget: herd pinned to CPU $HERD_CPU; publisher and subscriber app (one Node process each) on CPU $LOAD_CPU"
say "load: $TOTAL acknowledged publishes wanted, $IN_FLIGHT in flight, $MSG_BYTES-byte messages, a failed attempt's lane waits ${RETRY_MS} ms and goes on with a new id; kill -9 of herd at ${KILL_AT// /, } acks, restarted after ${DOWN_SECONDS}s (same data dir); subscription max_in_flight $SUB_IN_FLIGHT"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

start_herd >"$WORK/herd.start" 2>&1 || { cat "$WORK/herd.start"; die "herd did not start"; }
say "herd: pid $HERD_PID up and subscribed in ${UP_MS} ms; data dir on $(df -T "$HERD_DIR/.herd" | awk 'NR == 2 {print $2 " " $1}')"

# --- publish, kill, restart ---------------------------------------------------------------------------
PROGRESS="$WORK/progress"
TARGET=herd API_PORT=$API_PORT PUBSUB=pubsub TOPIC=r4 RUN=$RUN IN_FLIGHT=$IN_FLIGHT TOTAL=$TOTAL \
  RETRY_MS=$RETRY_MS PROGRESS_FILE=$PROGRESS ACKED_FILE="$WORK/acked" FAILED_FILE="$WORK/failed" \
  taskset -c "$LOAD_CPU" node "$APP" pub >"$WORK/pub.out" 2>"$WORK/pub.err" &
PUB_PID=$!; KILL_PIDS+=("$PUB_PID")
t_start=$(date +%s%N)

progress() { # P_ACKED P_FAILED from the publisher's progress file (0 0 before its first write)
  P_ACKED=0 P_FAILED=0
  if [ -s "$PROGRESS" ]; then read -r P_ACKED P_FAILED <"$PROGRESS" || true; fi
}
P_ACKED=0 P_FAILED=0
KILL_LOG=()
for k in "${KILLS[@]}"; do
  last=-1 still=0
  while pid_alive "$PUB_PID"; do
    progress
    [ "$P_ACKED" -ge "$k" ] && break
    if [ "$P_ACKED" = "$last" ]; then still=$((still + 1)); else still=0; last=$P_ACKED; fi
    [ "$still" -ge $((STALL_TIMEOUT * 50)) ] && { FAILED="no ack for ${STALL_TIMEOUT}s before kill at $k (acked $P_ACKED)"; break 2; }
    sleep 0.02
  done
  pid_alive "$PUB_PID" || { FAILED="the publisher ended before $k acks: $(tail -3 "$WORK/pub.err" | tr '\n' ' ')"; break; }
  kids=$(children_of "$HERD_PID" | tr '\n' ' ')
  kill -KILL "$HERD_PID"
  progress; acked_at_kill=$P_ACKED failed_at_kill=$P_FAILED
  t_kill=$(date +%s%N)
  wait_gone "$HERD_PID" 10 || { FAILED="herd pid $HERD_PID still there after SIGKILL"; break; }
  for p in $kids; do wait_gone "$p" 10 || say "WARNING subscriber pid $p outlived herd"; done
  gone_ms=$(( ($(date +%s%N) - t_kill) / 1000000 ))
  sleep "$DOWN_SECONDS"
  progress; failed_down=$((P_FAILED - failed_at_kill))
  if ! start_herd >"$WORK/herd.restart" 2>&1; then
    cat "$WORK/herd.restart"; FAILED="herd did not restart on its data dir"; break
  fi
  t_up=$(( ($(date +%s%N) - t_kill) / 1000000 ))
  KILL_LOG+=("kill at $acked_at_kill acks ($failed_at_kill failed before), $failed_down attempts failed while down, herd and its app gone ${gone_ms} ms after the kill, herd back (API + subscription) ${t_up} ms after it (herd up → ready ${UP_MS} ms), new pid $HERD_PID")
  say "${KILL_LOG[-1]}"
done

# The rest of the publishes.
if [ -z "$FAILED" ]; then
  last=-1 still=0
  while pid_alive "$PUB_PID"; do
    progress
    if [ "$P_ACKED" = "$last" ]; then still=$((still + 1)); else still=0; last=$P_ACKED; fi
    [ "$still" -ge $((STALL_TIMEOUT * 10)) ] && { FAILED="no ack for ${STALL_TIMEOUT}s after the restart (acked $P_ACKED of $TOTAL)"; break; }
    sleep 0.1
  done
fi
if pid_alive "$PUB_PID"; then stop_pid "$PUB_PID"; else wait "$PUB_PID" || true; forget_pid "$PUB_PID"; fi
pub_line=$(grep '^{' "$WORK/pub.out" | tail -1 || true)
[ -n "$pub_line" ] || [ -n "$FAILED" ] || FAILED="the publisher printed no summary: $(tail -3 "$WORK/pub.err" | tr '\n' ' ')"
t_pub=$(( ($(date +%s%N) - t_start) / 1000000 ))
say "publisher: ${pub_line:-none} (${t_pub} ms)"

# --- drain and check ------------------------------------------------------------------------------------
RESULT_JSON="" lost=-1
if [ -f "$WORK/acked" ]; then
  last=-1 still=0 t_drain=$(date +%s)
  while :; do
    RESULT_JSON=$(check) || { FAILED="the check failed"; break; }
    lost=$(json_num "$RESULT_JSON" lost); delivered=$(json_num "$RESULT_JSON" delivered)
    [ "$lost" -eq 0 ] && break
    if [ "$delivered" = "$last" ]; then still=$((still + 1)); else still=0; last=$delivered; fi
    [ "$still" -ge $((DRAIN_TIMEOUT * 2)) ] && break
    sleep 0.5
  done
  say "drained in $(( $(date +%s) - t_drain ))s after the publisher ended; check: $RESULT_JSON"
fi
if pid_alive "${HERD_PID:-}"; then
  say "herd after the run: RSS $(vmrss_kb "$HERD_PID") kB, embedded log $(du -k "$HERD_DIR/.herd/pubsub/pubsub.redb" 2>/dev/null | cut -f1) kB"
  curl -s --max-time 2 "http://127.0.0.1:$API_PORT/v1.0/metadata" >/dev/null || say "WARNING herd's API does not answer after the run"
fi
if grep -E ' (WARN|ERROR) ' "$HERD_DIR/.herd/herd.log" >"$WORK/herd-warnings.txt" 2>/dev/null; then
  say "herd WARN/ERROR lines ($(wc -l <"$WORK/herd-warnings.txt"), first ones):"; head -10 "$WORK/herd-warnings.txt" | sed 's/^/#   /'
fi

status=0
[ -n "$FAILED" ] && { say "FAILED herd: $FAILED"; status=1; }
if [ -n "$RESULT_JSON" ]; then
  acked=$(json_num "$RESULT_JSON" acked); delivered=$(json_num "$RESULT_JSON" delivered)
  unexpected=$(json_num "$RESULT_JSON" unexpected); duplicated=$(json_num "$RESULT_JSON" duplicated)
  [ "$lost" -gt 0 ] && say "lost ids (first ones): $(sed -n 's/.*"lostSample":\[\([^]]*\)\].*/\1/p' <<<"$RESULT_JSON")"
  result "R4 acked=$acked delivered=$delivered lost=$lost unexpected=$unexpected duplicated=$duplicated extra_deliveries=$(json_num "$RESULT_JSON" extraDeliveries) failed_attempts=$(json_num "$RESULT_JSON" failedAttempts) kills=${#KILL_LOG[@]} goal=0-lost $([ "$lost" -eq 0 ] && echo met || echo missed) cpu=herd:$HERD_CPU,load+subscriber:$LOAD_CPU"
else
  result "R4 acked=n/a delivered=n/a lost=n/a unexpected=n/a duplicated=n/a goal=0-lost missed"
fi
say "elapsed ${SECONDS}s"
exit "$status"
