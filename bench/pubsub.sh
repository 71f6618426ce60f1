#!/usr/bin/env bash
# shellcheck disable=SC2317  # clean-up hooks are called indirectly
# bench/pubsub.sh — figure P4 of shared/design/BENCHMARKS.md.
#
# P4: durable pub/sub, publish → delivered to a subscriber, 1 KB messages, 64 publishes in flight.
#   herd            herd's embedded pub/sub (`pubsub.embedded`: redb log, fsync before the 204,
#                   concurrent publishes share one commit), end to end: 64 concurrent publishers
#                   POST /v1.0/publish/pubsub/<topic> (keep-alive), a declarative [[subscription]]
#                   (max_in_flight = SUB_IN_FLIGHT) delivers each CloudEvent by HTTP POST to the
#                   subscriber app (bench/pubsub-app.js sub-http, a `port = "auto"` service)
#   herd-bulk       the same with Dapr's bulk subscribe: the [[subscription]] has bulk_subscribe
#                   (max_messages_count BULK_MAX, max_await_duration_ms BULK_AWAIT_MS), and the app
#                   gets batches of Dapr's bulk envelope, answering a status per entry
#   rabbitmq        RabbitMQ used directly (amqplib): a durable queue (x-queue-type
#                   RABBIT_QUEUE_TYPE, classic by default), persistent messages, publisher confirms
#                   (64 unconfirmed at once), a consumer with prefetch SUB_IN_FLIGHT and manual acks
#   nats            NATS JetStream used directly (nats.js): a file-storage stream with the server's
#                   default sync (JetStream fsyncs every 2 min by default, not per message), the
#                   PubAck awaited (64 at once), a durable pull consumer with explicit acks and
#                   max_ack_pending SUB_IN_FLIGHT
#   herd-rabbitmq   herd end to end with `pubsub.rabbitmq` on the same RabbitMQ (same queue type)
#   herd-jetstream  herd end to end with `pubsub.jetstream` on the same NATS server
#                   (HERD_BACKENDS=0 drops the last two)
#
# The fair race (PIN_BROKERS=1, the default): herd runs on one CPU (HERD_CPU), so for the P4
# figures the broker gets that same CPU: before each run the script sets the CPU affinity of
# every thread of the broker's server process (RabbitMQ's beam.smp, nats-server) with `taskset -a
# -p` to HERD_CPU, and restores the affinity it found on exit. Each broker contender also runs
# unpinned (`rabbitmq-free`, `nats-free`, and `herd-rabbitmq-free`, `herd-jetstream-free` with the
# backends: the broker may use every CPU), and the unpinned ratios are printed beside the pinned.
# With the herd backends pinned, herd and its broker share HERD_CPU.
#
# Every message is {run, seq, t, pad} JSON of MSG_BYTES bytes, t = send time (CLOCK_MONOTONIC, µs).
# The subscriber counts every seq (unique, duplicates) and the end-to-end latency (receive − t).
# A run publishes for DURATION seconds, then waits until every acknowledged message has been
# delivered (DRAIN_TIMEOUT seconds without progress = lost). msgs/s = messages delivered / (last
# delivery − first send), i.e. end to end. One warm-up round, then ROUNDS rounds, the contenders'
# order rotating per round; medians. Also per run: the publish (ack) rate and ack latency, herd's
# and the broker's CPU time per message, the disk's flush requests per message (machine-wide).
#
# Brokers: the RabbitMQ (AMQP_URL, guest/guest) and NATS (NATS_URL) running on this machine, shared
# with other users; every queue, exchange and stream this run creates carries the prefix
# herd-p4-<time>-<pid> (herd's queue: p4sub-<that topic>) and is deleted on exit.
#
# Usage: bash bench/pubsub.sh
#   env: ROUNDS=5 DURATION=5 WARMUP_DURATION=2 IN_FLIGHT=64 SUB_IN_FLIGHT=64 MSG_BYTES=1024
#        DRAIN_TIMEOUT=20 HERD_BACKENDS=1 RABBIT_QUEUE_TYPE=classic BULK=1 BULK_MAX=32 BULK_AWAIT_MS=10
#        AMQP_URL=amqp://guest:guest@127.0.0.1:5672 NATS_URL=nats://127.0.0.1:4222
#        AMQPLIB_VERSION=2.3.1 NATS_JS_VERSION=2.29.3 GOAL_NATS=1.0 GOAL_RABBIT=2
#        HERD_CPU=1 LOAD_CPU=0 PIN_BROKERS=1 HERD_REV=<commit> CARGO_TARGET_DIR HERD_BENCH_CACHE=/tmp/herd-bench
# Exit: 0 when every contender ran and delivered every acknowledged message (goals met or not),
#       1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP_DURATION=${WARMUP_DURATION:-2}
IN_FLIGHT=${IN_FLIGHT:-64}            # publishes in flight (each lane awaits its ack)
SUB_IN_FLIGHT=${SUB_IN_FLIGHT:-64}    # deliveries in flight to the subscriber / consumer prefetch
MSG_BYTES=${MSG_BYTES:-1024}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-20}    # seconds without a new delivery before the rest counts as lost
HERD_BACKENDS=${HERD_BACKENDS:-1}
RABBIT_QUEUE_TYPE=${RABBIT_QUEUE_TYPE:-classic}
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}
NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
AMQPLIB_VERSION=${AMQPLIB_VERSION:-2.3.1}
NATS_JS_VERSION=${NATS_JS_VERSION:-2.29.3}
GOAL_NATS=${GOAL_NATS:-1.0}
GOAL_RABBIT=${GOAL_RABBIT:-2}
PIN_BROKERS=${PIN_BROKERS:-1}
BULK=${BULK:-1}
BULK_MAX=${BULK_MAX:-32}
BULK_AWAIT_MS=${BULK_AWAIT_MS:-10}
if [ "$(nproc)" -ge 2 ]; then HERD_CPU=${HERD_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
else HERD_CPU=${HERD_CPU:-0}; LOAD_CPU=${LOAD_CPU:-0}; fi
CLI_CPU=$LOAD_CPU
export AMQP_URL NATS_URL MSG_BYTES SUB_IN_FLIGHT

bench_init pubsub
APP="$BENCH_ROOT/bench/pubsub-app.js"
RUN_ID="herd-p4-$(date +%s)-$$"

# --- tools -----------------------------------------------------------------------------------
need node npm curl taskset awk
NPM_DIR="$CACHE/p4-npm-$AMQPLIB_VERSION-$NATS_JS_VERSION"
if [ ! -f "$NPM_DIR/node_modules/amqplib/channel_api.js" ] || [ ! -d "$NPM_DIR/node_modules/nats" ]; then
  say "installing amqplib@$AMQPLIB_VERSION and nats@$NATS_JS_VERSION with npm into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  [ -f "$NPM_DIR/package.json" ] || echo '{"private": true}' >"$NPM_DIR/package.json"
  (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent "amqplib@$AMQPLIB_VERSION" "nats@$NATS_JS_VERSION") \
    >"$WORK/npm.log" 2>&1 || { cat "$WORK/npm.log"; die "npm install failed"; }
fi
export NODE_PATH="$NPM_DIR/node_modules"
app() { on_cpu "$LOAD_CPU" node "$APP" "$@"; }

declare -A FAILED=()
CONTENDERS=(herd)
[ "$BULK" = 1 ] && CONTENDERS+=(herd_bulk)
CONTENDERS+=(rabbitmq nats)
[ "$HERD_BACKENDS" = 1 ] && CONTENDERS+=(herd_rabbitmq herd_jetstream)
declare -A NAME=([herd]=herd [herd_bulk]=herd-bulk [rabbitmq]=rabbitmq [nats]=nats [herd_rabbitmq]=herd-rabbitmq [herd_jetstream]=herd-jetstream)
# Unpinned twins (`<contender>_free`): the same run with the broker on every CPU.
if [ "$PIN_BROKERS" = 1 ]; then
  for c in "${CONTENDERS[@]}"; do
    { [ "$c" = herd ] || [ "$c" = herd_bulk ]; } && continue
    CONTENDERS+=("${c}_free"); NAME[${c}_free]="${NAME[$c]}-free"
  done
fi
base_of() { echo "${1%_free}"; }

if ! build_herd herd || [ ! -x "$HERD" ]; then
  cat "$WORK/cargo.log"
  for c in herd herd_bulk herd_rabbitmq herd_jetstream; do FAILED[$c]="cargo build failed"; done
fi

# --- names on the shared brokers -----------------------------------------------------------------
PEER_QUEUE="$RUN_ID-rmq"                   # rabbitmq: a queue on the default exchange
PEER_STREAM="$RUN_ID-js"                   # nats: stream and subject
PEER_CONSUMER="p4sub"
EMB_TOPIC="$RUN_ID-emb"                    # herd: embedded topic
BULK_TOPIC="$RUN_ID-bulk"                  # herd-bulk: embedded topic, bulk subscription
HRMQ_TOPIC="$RUN_ID-hrmq"                  # herd-rabbitmq: exchange <topic>, queue p4sub-<topic>
HJS_TOPIC="$RUN_ID-hjs"                    # herd-jetstream: stream <topic>, consumer p4sub__<topic>
SERVICE=p4sub

HERD_CFG=""
declare -A SUB_PID=()
delete_broker_objects() {
  # herd first: its consumers would declare their queues again.
  [ -n "$HERD_CFG" ] && stop_herd_cfg "$HERD_CFG"
  local c
  for c in "${!SUB_PID[@]}"; do pid_alive "${SUB_PID[$c]}" && stop_pid "${SUB_PID[$c]}"; done
  local gone
  gone=$(DELETE_QUEUES="$PEER_QUEUE $SERVICE-$HRMQ_TOPIC" DELETE_EXCHANGES="$HRMQ_TOPIC" \
    timeout 20 node "$APP" cleanup-amqp 2>&1 || true)
  say "RabbitMQ: deleted ${gone:-nothing}"
  gone=$(DELETE_STREAMS="$PEER_STREAM $HJS_TOPIC" timeout 20 node "$APP" cleanup-nats 2>&1 || true)
  say "NATS: deleted ${gone:-nothing}"
}
CLEANUP_HOOKS+=(delete_broker_objects)

# --- helpers ---------------------------------------------------------------------------------------
json_num() { # json key -> the number (empty for null / missing)
  sed -n "s/.*\"$2\":\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" <<<"$1"
}
stats_of() { curl -s --max-time 2 "http://127.0.0.1:$1/stats?run=$2" 2>/dev/null || true; }

cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }
cpu_busy() { # before after cpu -> percent
  awk -v c="cpu$3" -v a="$1" -v b="$2" 'BEGIN{
    n = split(a, A, "\n"); for (i = 1; i <= n; i++) { split(A[i], f, " "); if (f[1] == c) { t0 = 0; for (j = 2; j <= 11; j++) t0 += f[j]; i0 = f[5] + f[6] } }
    n = split(b, B, "\n"); for (i = 1; i <= n; i++) { split(B[i], f, " "); if (f[1] == c) { t1 = 0; for (j = 2; j <= 11; j++) t1 += f[j]; i1 = f[5] + f[6] } }
    d = t1 - t0; printf "%.0f", (d > 0 ? 100 * (d - (i1 - i0)) / d : 0) }'
}
DISK=""
disk_flushes() { # flush requests completed by DISK (field 19 of /proc/diskstats, Linux >= 5.5)
  [ -n "$DISK" ] || { echo 0; return; }
  awk -v d="$DISK" '$3 == d { print ($19 == "" ? 0 : $19) }' /proc/diskstats
}
per_msg_us() { awk -v t="$1" -v u="$TICK_US" -v n="$2" 'BEGIN{ if (n > 0) printf "%.1f", t * u / n; else print "n/a" }'; }

# The brokers' server processes, for their CPU time only (they are system services, never signalled).
RABBIT_PID=$(pgrep -o -x beam.smp || true)
NATS_PID=$(pgrep -o -x nats-server || true)
broker_pid() { case $(base_of "$1") in rabbitmq | herd_rabbitmq) echo "$RABBIT_PID" ;; nats | herd_jetstream) echo "$NATS_PID" ;; *) echo "" ;; esac; }

# Broker CPU affinity: HERD_CPU for a pinned run, every CPU for a `_free` one; restored on exit.
ALL_CPUS="0-$(($(nproc) - 1))"
declare -A AFFINITY_WAS=()
for p in $RABBIT_PID $NATS_PID; do AFFINITY_WAS[$p]=$(affinity_of "$p"); done
set_broker_cpus() { # cpus
  local p
  for p in $RABBIT_PID $NATS_PID; do taskset -a -cp "$1" "$p" >/dev/null 2>&1 || say "cannot set the CPU affinity of pid $p"; done
}
restore_broker_cpus() {
  local p
  for p in "${!AFFINITY_WAS[@]}"; do [ -n "${AFFINITY_WAS[$p]}" ] && taskset -a -cp "${AFFINITY_WAS[$p]}" "$p" >/dev/null 2>&1; done
  return 0
}
[ "$PIN_BROKERS" = 1 ] && CLEANUP_HOOKS+=(restore_broker_cpus)
broker_cpus_for() { # contender -> the brokers' CPUs during its run
  if [ "$PIN_BROKERS" = 1 ] && [[ $1 != *_free ]]; then echo "$HERD_CPU"; else echo "$ALL_CPUS"; fi
}

# --- herd ------------------------------------------------------------------------------------------
API_PORT="" HERD_STATS="" HERD_DIR=""
start_herd() {
  HERD_DIR=$(mktemp -d "$WORK/herd.XXXX")
  free_port API_PORT; free_port HERD_STATS
  HERD_CFG="$HERD_DIR/herd.toml"
  {
    cat <<EOF
data_dir = "$HERD_DIR/.herd"

[api]
listen = "127.0.0.1:$API_PORT"

[[component]]
name = "pubsub"
type = "pubsub.embedded"

[[service]]
name = "$SERVICE"
command = ["taskset", "-c", "$LOAD_CPU", "node", "$APP", "sub-http"]
port = "auto"
env = { STATS_PORT = "$HERD_STATS", NODE_PATH = "$NODE_PATH" }

[[subscription]]
service = "$SERVICE"
pubsub = "pubsub"
topic = "$EMB_TOPIC"
route = "/p4"
max_in_flight = $SUB_IN_FLIGHT
EOF
    if [ "$BULK" = 1 ]; then
      cat <<EOF

[[subscription]]
service = "$SERVICE"
pubsub = "pubsub"
topic = "$BULK_TOPIC"
route = "/p4"
max_in_flight = $SUB_IN_FLIGHT
bulk_subscribe = { enabled = true, max_messages_count = $BULK_MAX, max_await_duration_ms = $BULK_AWAIT_MS }
EOF
    fi
    if [ "$HERD_BACKENDS" = 1 ]; then
      cat <<EOF

[[component]]
name = "rabbit"
type = "pubsub.rabbitmq"
metadata = { connectionString = "$AMQP_URL", queueType = "$RABBIT_QUEUE_TYPE" }

[[component]]
name = "jetstream"
type = "pubsub.jetstream"
metadata = { natsURL = "$NATS_URL" }

[[subscription]]
service = "$SERVICE"
pubsub = "rabbit"
topic = "$HRMQ_TOPIC"
route = "/p4"
max_in_flight = $SUB_IN_FLIGHT

[[subscription]]
service = "$SERVICE"
pubsub = "jetstream"
topic = "$HJS_TOPIC"
route = "/p4"
max_in_flight = $SUB_IN_FLIGHT
EOF
    fi
  } >"$HERD_CFG"
  herd_up "$HERD_CFG" "$HERD_CPU" HERD_LOG=warn || return 1
  local want=1 i code subs=0
  [ "$HERD_BACKENDS" = 1 ] && want=$((want + 2))
  [ "$BULK" = 1 ] && want=$((want + 1))
  for ((i = 0; i < 300; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$API_PORT/v1.0/healthz/outbound" 2>/dev/null || true)
    subs=$(curl -s --max-time 1 "http://127.0.0.1:$API_PORT/v1.0/metadata" 2>/dev/null | grep -o '"pubsubname"' | wc -l || true)
    if [ "$code" = 204 ] && [ "$subs" -ge "$want" ] && [ -n "$(stats_of "$HERD_STATS" x)" ]; then return 0; fi
    sleep 0.1
  done
  echo "herd: not ready (healthz/outbound ${code:-nothing}, $subs of $want subscriptions active)"
  tail -5 "$HERD_DIR/.herd/herd.log" 2>/dev/null
  return 1
}

# --- peers: queue / stream and a consumer each --------------------------------------------------------
declare -A STATS_PORT=()
start_consumer() { # contender role env...
  local c=$1 role=$2 port
  shift 2
  free_port port
  STATS_PORT[$c]=$port
  env "$@" STATS_PORT="$port" taskset -c "$LOAD_CPU" node "$APP" "$role" >"$WORK/$c.consumer.log" 2>&1 &
  SUB_PID[$c]=$!; KILL_PIDS+=("${SUB_PID[$c]}")
  local i
  for ((i = 0; i < 100; i++)); do
    [ -n "$(stats_of "$port" x)" ] && return 0
    pid_alive "${SUB_PID[$c]}" || break
    sleep 0.1
  done
  cat "$WORK/$c.consumer.log"; return 1
}
start_rabbitmq() {
  QUEUE=$PEER_QUEUE QUEUE_TYPE=$RABBIT_QUEUE_TYPE timeout 20 node "$APP" setup-amqp || return 1
  start_consumer rabbitmq sub-amqp QUEUE="$PEER_QUEUE"
}
start_nats() {
  STREAM=$PEER_STREAM SUBJECT=$PEER_STREAM CONSUMER=$PEER_CONSUMER timeout 20 node "$APP" setup-nats || return 1
  start_consumer nats sub-nats STREAM="$PEER_STREAM" CONSUMER="$PEER_CONSUMER"
}

# pub_env contender: the publisher's target settings
pub_env() {
  case $(base_of "$1") in
    herd) echo "TARGET=herd API_PORT=$API_PORT PUBSUB=pubsub TOPIC=$EMB_TOPIC" ;;
    herd_bulk) echo "TARGET=herd API_PORT=$API_PORT PUBSUB=pubsub TOPIC=$BULK_TOPIC" ;;
    herd_rabbitmq) echo "TARGET=herd API_PORT=$API_PORT PUBSUB=rabbit TOPIC=$HRMQ_TOPIC" ;;
    herd_jetstream) echo "TARGET=herd API_PORT=$API_PORT PUBSUB=jetstream TOPIC=$HJS_TOPIC" ;;
    rabbitmq) echo "TARGET=amqp QUEUE=$PEER_QUEUE" ;;
    nats) echo "TARGET=nats SUBJECT=$PEER_STREAM" ;;
  esac
}

# run_one contender duration tag: one run; sets R_* (R_OK=0 when the run failed)
run_one() {
  local c=$1 dur=$2 tag=$3 run port out pid bpid before after t0 b0 hp=() f0 pub_pid
  run="$RUN_ID-$c-$tag"; run=${run//[^A-Za-z0-9-]/-}
  port=${STATS_PORT[$(base_of "$c")]}; out="$WORK/$c.$tag.pub"
  set_broker_cpus "$(broker_cpus_for "$c")"
  bpid=$(broker_pid "$c")
  hp=(); [[ $c == herd* ]] && hp=("$HERD_PID")
  t0=$(cpu_ticks "${hp[@]}"); b0=0; [ -n "$bpid" ] && b0=$(cpu_ticks "$bpid")
  f0=$(disk_flushes); before=$(cpu_snap)
  local -a penv
  read -ra penv <<<"$(pub_env "$c")"
  env "${penv[@]}" RUN="$run" IN_FLIGHT="$IN_FLIGHT" DURATION="$dur" FAILED_FILE="$out.failed" \
    taskset -c "$LOAD_CPU" node "$APP" pub >"$out" 2>"$out.err" &
  pub_pid=$!; KILL_PIDS+=("$pub_pid")
  wait "$pub_pid" || true; forget_pid "$pub_pid"
  R_OK=1 R_WHY=""
  local line; line=$(grep '^{' "$out" | tail -1 || true)
  if [ -z "$line" ]; then R_OK=0; R_WHY="publisher failed: $(tail -3 "$out.err" | tr '\n' ' ')"; return; fi
  R_ACKED=$(json_num "$line" acked); R_PFAIL=$(json_num "$line" failed); R_ATT=$(json_num "$line" attempted)
  R_ACKRATE=$(json_num "$line" ackRate); R_ACKRATE=${R_ACKRATE%.*}
  R_ACKP99=$(json_num "$line" ackP99); R_ACKP99=$(awk -v v="${R_ACKP99:-0}" 'BEGIN{printf "%.2f", v}')
  R_ERRS=$(sed -n 's/.*"errors":\({[^}]*}\).*/\1/p' <<<"$line")
  # Drain: until every acknowledged message is delivered, or DRAIN_TIMEOUT s without progress.
  local s unique=0 last=-1 still=0 u0 d0
  s=$(stats_of "$port" "$run"); u0=$(json_num "$s" unique); u0=${u0:-0}; d0=$(date +%s%N)
  while :; do
    s=$(stats_of "$port" "$run")
    unique=$(json_num "$s" unique); unique=${unique:-0}
    [ "$unique" -ge "$R_ACKED" ] && break
    if [ "$unique" = "$last" ]; then still=$((still + 1)); else still=0; last=$unique; fi
    [ "$still" -ge $((DRAIN_TIMEOUT * 10)) ] && break
    sleep 0.1
  done
  after=$(cpu_snap)
  # Backlog when the publisher stopped, and how fast it was delivered afterwards (no publishing).
  R_BACKLOG=$((R_ACKED - u0))
  R_DRAIN=$(awk -v n=$((unique - u0)) -v t=$(( $(date +%s%N) - d0 )) -v b="$R_BACKLOG" -v f="$IN_FLIGHT" \
    'BEGIN{ if (b > 4 * f && t > 0) printf "%.0f", n / (t / 1e9); else print "n/a" }')
  R_HERDUS=n/a; [ ${#hp[@]} -gt 0 ] && R_HERDUS=$(per_msg_us $(( $(cpu_ticks "${hp[@]}") - t0 )) "$unique")
  R_BROKERUS=n/a; [ -n "$bpid" ] && R_BROKERUS=$(per_msg_us $(( $(cpu_ticks "$bpid") - b0 )) "$unique")
  R_FLUSH=$(awk -v f=$(( $(disk_flushes) - f0 )) -v n="$unique" 'BEGIN{ if (n > 0) printf "%.3f", f / n; else print "n/a" }')
  R_CPU="cpu$HERD_CPU $(cpu_busy "$before" "$after" "$HERD_CPU")% cpu$LOAD_CPU $(cpu_busy "$before" "$after" "$LOAD_CPU")%"
  R_UNIQUE=$unique
  R_DUP=$(json_num "$s" duplicates); R_DUP=${R_DUP:-0}
  R_RATE=$(json_num "$s" rate); R_RATE=$(awk -v v="${R_RATE:-0}" 'BEGIN{printf "%.0f", v}')
  R_P50=$(awk -v v="$(json_num "$s" p50)" 'BEGIN{printf "%.2f", v}')
  R_P99=$(awk -v v="$(json_num "$s" p99)" 'BEGIN{printf "%.2f", v}')
  R_MAX=$(awk -v v="$(json_num "$s" max)" 'BEGIN{printf "%.2f", v}')
  # Lost: seqs acknowledged but never delivered (a seq whose publish failed may be missing).
  R_LOST=0
  if [ "$unique" -lt "$R_ACKED" ] || [ "$R_PFAIL" -gt 0 ]; then
    curl -s --max-time 5 "http://127.0.0.1:$port/missing?run=$run&n=$R_ATT" | tr -d '[]' | tr ',' '\n' | sed '/^$/d' | sort -n >"$out.missing" || true
    sort -n "$out.failed" >"$out.failed.sorted" 2>/dev/null || : >"$out.failed.sorted"
    R_LOST=$(comm -23 "$out.missing" "$out.failed.sorted" | wc -l)
    R_MISSING_SAMPLE=$(comm -23 "$out.missing" "$out.failed.sorted" | head -5 | tr '\n' ' ')
  fi
  curl -s --max-time 2 "http://127.0.0.1:$port/forget?run=$run" >/dev/null || true
  [ "$R_ACKED" -gt 0 ] || { R_OK=0; R_WHY="no publish acknowledged: errors $R_ERRS $(tail -2 "$out.err" | tr '\n' ' ')"; }
}

# --- start -----------------------------------------------------------------------------------------
say "herd P4 pub/sub benchmark — $(date -u)"
say "nproc=$(nproc); node $(node --version); amqplib $AMQPLIB_VERSION; nats.js $NATS_JS_VERSION; RabbitMQ $(timeout 10 rabbitmqctl version 2>/dev/null || echo '?') at $AMQP_URL (server pid ${RABBIT_PID:-?}); $(nats-server --version 2>/dev/null || echo 'nats-server ?') at $NATS_URL (pid ${NATS_PID:-?}); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)"
say "CPU budget: herd (tokio runtime sized from its affinity: 1 worker; the embedded log's writer thread inherits it) pinned to CPU $HERD_CPU; the load (publisher, one Node process) and the subscriber (herd's subscriber app / the peers' consumer, one Node process each) pinned to CPU $LOAD_CPU; RabbitMQ and NATS (shared system services) $([ "$PIN_BROKERS" = 1 ] && echo "pinned to CPU $HERD_CPU (every thread, taskset -a -p) for the P4 figures, and on every CPU ($ALL_CPUS) in the *-free runs; their affinity before the run (RabbitMQ ${AFFINITY_WAS[$RABBIT_PID]:-?}, NATS ${AFFINITY_WAS[$NATS_PID]:-?}) is restored on exit" || echo "not pinned (either CPU)"); their CPU time per message is printed"
say "load: $IN_FLIGHT publishes in flight (each awaits its ack: herd's 204 / RabbitMQ's confirm / JetStream's PubAck), $MSG_BYTES-byte JSON messages, ${DURATION}s per run (warm-up ${WARMUP_DURATION}s), then drained; subscriber side $SUB_IN_FLIGHT in flight (herd max_in_flight / RabbitMQ prefetch / JetStream max_ack_pending + pull batch); 1 warm-up round + $ROUNDS rounds, order rotating"
say "durability: herd embedded fsyncs before each 204 (group commit); RabbitMQ durable $RABBIT_QUEUE_TYPE queue, persistent messages, confirms after its own fsync; JetStream file storage with the server's default sync (not per message)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

HERD_PID=""
if [ -z "${FAILED[herd]:-}" ]; then
  if start_herd >"$WORK/herd.start" 2>&1; then
    STATS_PORT[herd]=$HERD_STATS STATS_PORT[herd_bulk]=$HERD_STATS STATS_PORT[herd_rabbitmq]=$HERD_STATS STATS_PORT[herd_jetstream]=$HERD_STATS
    dev=$(df "$HERD_DIR/.herd" | awk 'NR == 2 {print $1}'); dev=${dev#/dev/}
    if awk -v d="$dev" '$3 == d && NF >= 19 { f = 1 } END { exit !f }' /proc/diskstats; then DISK=$dev; fi
    say "herd: pid $HERD_PID, API on 127.0.0.1:$API_PORT, affinity cpu$(affinity_of "$HERD_PID"); threads: $(cat /proc/"$HERD_PID"/task/*/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}' || true)"
    say "herd: data dir on $(df -T "$HERD_DIR/.herd" | awk 'NR == 2 {print $2 " " $1}'); flushes counted on ${DISK:-no device}; subscriber app pid(s) $(children_of "$HERD_PID" | tr '\n' ' ')"
  else
    cat "$WORK/herd.start"
    for c in herd herd_bulk herd_rabbitmq herd_jetstream; do FAILED[$c]="did not start: $(tail -3 "$WORK/herd.start" | tr '\n' ' ')"; done
  fi
fi
for c in rabbitmq nats; do
  "start_$c" >"$WORK/$c.start" 2>&1 || FAILED[$c]="did not start: $(tail -3 "$WORK/$c.start" | tr '\n' ' ')"
done
for c in "${CONTENDERS[@]}"; do
  b=$(base_of "$c"); [ "$b" != "$c" ] && [ -n "${FAILED[$b]:-}" ] && FAILED[$c]=${FAILED[$b]}
  [ -n "${FAILED[$c]:-}" ] && say "${NAME[$c]}: FAILED: ${FAILED[$c]}"
done

# --- rounds ------------------------------------------------------------------------------------------
declare -A DRAIN=() BACKLOG=() RATE=() P50=() P99=() ACKR=() ACKP99=() HUS=() BUS=() FLUSH=() MSGS=() LOST=() DUPS=() PFAIL=()
HERD_LOGF="${HERD_DIR:+$HERD_DIR/.herd/herd.log}"
for ((round = 0; round <= ROUNDS; round++)); do
  if [ "$round" -eq 0 ]; then d=$WARMUP_DURATION; tag="warm-up"; else d=$DURATION; tag="round $round/$ROUNDS"; fi
  round_order "$round" "${CONTENDERS[@]}"
  for c in "${ORDER[@]}"; do
    [ -n "${FAILED[$c]:-}" ] && continue
    mark=0; [ -n "$HERD_LOGF" ] && mark=$(stat -c %s "$HERD_LOGF" 2>/dev/null || echo 0)
    R_MISSING_SAMPLE=""
    run_one "$c" "$d" "r$round"
    if [[ $c == herd* ]]; then
      pid_alive "$HERD_PID" || { R_OK=0; R_WHY="herd died"; }
      tail -c +$((mark + 1)) "$HERD_LOGF" 2>/dev/null | grep -E ' (WARN|ERROR) ' | head -3 >>"$WORK/herd-warnings.txt" || true
    fi
    if [ "$R_OK" -ne 1 ]; then FAILED[$c]="$tag: $R_WHY"; say "$tag ${NAME[$c]}: FAILED: $R_WHY"; continue; fi
    say "$(printf '%-9s %-14s %6s msgs/s e2e  p50 %7s ms  p99 %7s ms  max %7s ms | publish %6s acks/s, ack p99 %6s ms, acked %6s, failed %s | delivered %6s, dup %s, lost %s, backlog at publish end %s, drained at %s msgs/s | herd %5s us/msg  broker %5s us/msg  flushes/msg %5s | %s' \
      "$tag" "${NAME[$c]}" "$R_RATE" "$R_P50" "$R_P99" "$R_MAX" "$R_ACKRATE" "$R_ACKP99" "$R_ACKED" "$R_PFAIL" "$R_UNIQUE" "$R_DUP" "$R_LOST" "$R_BACKLOG" "$R_DRAIN" "$R_HERDUS" "$R_BROKERUS" "$R_FLUSH" "$R_CPU")${R_ERRS:+ errors $R_ERRS}"
    [ "$R_LOST" -gt 0 ] && say "  ${NAME[$c]}: $R_LOST acknowledged message(s) never delivered, e.g. seq $R_MISSING_SAMPLE"
    LOST[$c]=$(( ${LOST[$c]:-0} + R_LOST ))
    if [ "$round" -gt 0 ]; then
      RATE[$c]+="$R_RATE "; P50[$c]+="$R_P50 "; P99[$c]+="$R_P99 "; ACKR[$c]+="$R_ACKRATE "; ACKP99[$c]+="$R_ACKP99 "
      HUS[$c]+="$R_HERDUS "; DRAIN[$c]+="$R_DRAIN "; BACKLOG[$c]+="$R_BACKLOG "; BUS[$c]+="$R_BROKERUS "; FLUSH[$c]+="$R_FLUSH "
      MSGS[$c]=$(( ${MSGS[$c]:-0} + R_UNIQUE )); DUPS[$c]=$(( ${DUPS[$c]:-0} + R_DUP )); PFAIL[$c]=$(( ${PFAIL[$c]:-0} + R_PFAIL ))
    fi
  done
done
say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$HERD_PID" ] && pid_alive "$HERD_PID"; then
  say "herd after the load: RSS $(vmrss_kb "$HERD_PID") kB, $(threads_of "$HERD_PID") threads, embedded log $(du -k "$HERD_DIR/.herd/pubsub/pubsub.redb" 2>/dev/null | cut -f1) kB"
fi
if [ -s "$WORK/herd-warnings.txt" ]; then
  say "herd WARN/ERROR lines during load (first ones):"; sed 's/^/#   /' "$WORK/herd-warnings.txt" | head -10 || true
fi

# --- summary -------------------------------------------------------------------------------------------
status=0
for c in "${CONTENDERS[@]}"; do
  if [ "${LOST[$c]:-0}" -gt 0 ] && [ -z "${FAILED[$c]:-}" ]; then FAILED[$c]="${LOST[$c]} acknowledged message(s) never delivered"; fi
  [ -n "${FAILED[$c]:-}" ] && { say "FAILED ${NAME[$c]}: ${FAILED[$c]}"; status=1; }
done
med() { local v=() x; for x in "$@"; do [ "$x" = n/a ] || v+=("$x"); done; if [ ${#v[@]} -eq 0 ]; then echo n/a; else median "${v[@]}"; fi; }
declare -A M_DRAIN=() M_BACKLOG=() M_RATE=() M_P50=() M_P99=() M_ACKR=() M_ACKP99=() M_HUS=() M_BUS=() M_FLUSH=()
for c in "${CONTENDERS[@]}"; do
  if [ -n "${FAILED[$c]:-}" ] || [ -z "${RATE[$c]:-}" ]; then
    M_RATE[$c]=n/a M_P50[$c]=n/a M_P99[$c]=n/a M_ACKR[$c]=n/a M_ACKP99[$c]=n/a M_DRAIN[$c]=n/a M_BACKLOG[$c]=n/a M_HUS[$c]=n/a M_BUS[$c]=n/a M_FLUSH[$c]=n/a; continue
  fi
  # shellcheck disable=SC2086  # one value per word
  { M_RATE[$c]=$(median_int ${RATE[$c]}); M_P50[$c]=$(med ${P50[$c]}); M_P99[$c]=$(med ${P99[$c]}); M_ACKR[$c]=$(median_int ${ACKR[$c]})
    M_ACKP99[$c]=$(med ${ACKP99[$c]}); M_DRAIN[$c]=$(med ${DRAIN[$c]}); M_BACKLOG[$c]=$(med ${BACKLOG[$c]}); M_HUS[$c]=$(med ${HUS[$c]}); M_BUS[$c]=$(med ${BUS[$c]}); M_FLUSH[$c]=$(med ${FLUSH[$c]}); }
done

echo
say "medians over $ROUNDS rounds (CPU budget: herd on CPU $HERD_CPU, publisher + subscriber on CPU $LOAD_CPU, brokers $([ "$PIN_BROKERS" = 1 ] && echo "on CPU $HERD_CPU, in the *-free runs on every CPU" || echo unpinned)); msgs/s = delivered / (last delivery − first send); p50/p99 end to end (send → subscriber); backlog = acknowledged but not yet delivered when the publisher stopped; drain msgs/s = delivery rate of that backlog with no publishing (n/a: backlog ≤ 4 × in flight); messages: delivered, all measured rounds"
printf '| %-14s | %8s | %8s | %8s | %13s | %11s | %8s | %12s | %12s | %14s | %11s | %9s | %10s | %6s |\n' contender "msgs/s" "p50 ms" "p99 ms" "publish acks/s" "ack p99 ms" "backlog" "drain msgs/s" "herd us/msg" "broker us/msg" "flushes/msg" "messages" "duplicates" "lost"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ---------------- ---------: ---------: ---------: ---------------: -------------: ---------: -------------: --------------: ----------------: -------------: -----------: ------------: -------:
for c in "${CONTENDERS[@]}"; do
  printf '| %-14s | %8s | %8s | %8s | %13s | %11s | %8s | %12s | %12s | %14s | %11s | %9s | %10s | %6s |\n' "${NAME[$c]}" "${M_RATE[$c]}" "${M_P50[$c]}" "${M_P99[$c]}" \
    "${M_ACKR[$c]}" "${M_ACKP99[$c]}" "${M_BACKLOG[$c]}" "${M_DRAIN[$c]}" "${M_HUS[$c]}" "${M_BUS[$c]}" "${M_FLUSH[$c]}" "${MSGS[$c]:-n/a}" "${DUPS[$c]:-n/a}" "${LOST[$c]:-n/a}"
done
echo
r_nats=$(ratio "${M_RATE[herd]}" "${M_RATE[nats]}")
r_rabbit=$(ratio "${M_RATE[herd]}" "${M_RATE[rabbitmq]}")
v_nats=$(meets "$r_nats" '>=' "$GOAL_NATS"); v_rabbit=$(meets "$r_rabbit" '>=' "$GOAL_RABBIT")
verdict=met; [ "$v_nats" = met ] && [ "$v_rabbit" = met ] || verdict=missed
brokers=unpinned; [ "$PIN_BROKERS" = 1 ] && brokers="$HERD_CPU"
cpu="cpu=herd:$HERD_CPU,load+subscriber:$LOAD_CPU,brokers:$brokers"
free=""
if [ "$PIN_BROKERS" = 1 ]; then
  free=" unpinned: nats_msgs=${M_RATE[nats_free]} rabbitmq_msgs=${M_RATE[rabbitmq_free]} ratio_nats=$(ratio "${M_RATE[herd]}" "${M_RATE[nats_free]}") ratio_rabbitmq=$(ratio "${M_RATE[herd]}" "${M_RATE[rabbitmq_free]}")"
fi
p99_goal=$(meets "${M_P99[herd]}" '<=' "${M_P99[nats]}")
if [ "$BULK" = 1 ]; then
  rb_nats=$(ratio "${M_RATE[herd_bulk]}" "${M_RATE[nats]}"); rb_rabbit=$(ratio "${M_RATE[herd_bulk]}" "${M_RATE[rabbitmq]}")
  vb=met; [ "$(meets "$rb_nats" '>=' "$GOAL_NATS")" = met ] && [ "$(meets "$rb_rabbit" '>=' "$GOAL_RABBIT")" = met ] || vb=missed
  result "P4-bulk herd_bulk_msgs=${M_RATE[herd_bulk]} ratio_nats=$rb_nats ratio_rabbitmq=$rb_rabbit goal=both $vb herd_bulk_p99_ms=${M_P99[herd_bulk]} nats_p99_ms=${M_P99[nats]} p99_goal=$(meets "${M_P99[herd_bulk]}" '<=' "${M_P99[nats]}") bulk_max=$BULK_MAX bulk_await_ms=$BULK_AWAIT_MS $cpu"
fi
result "P4 herd_msgs=${M_RATE[herd]} nats_msgs=${M_RATE[nats]} rabbitmq_msgs=${M_RATE[rabbitmq]} ratio_nats=$r_nats goal_nats=$GOAL_NATS $v_nats ratio_rabbitmq=$r_rabbit goal_rabbitmq=$GOAL_RABBIT $v_rabbit goal=both $verdict herd_fsync=every-ack rabbitmq_queue=$RABBIT_QUEUE_TYPE in_flight=$IN_FLIGHT bytes=$MSG_BYTES $cpu$free"
result "P4-p99 herd_p99_ms=${M_P99[herd]} nats_p99_ms=${M_P99[nats]} goal=herd<=nats $p99_goal rabbitmq_p99_ms=${M_P99[rabbitmq]} herd_backlog=${M_BACKLOG[herd]} herd_drain_msgs=${M_DRAIN[herd]} herd_p50_ms=${M_P50[herd]} nats_p50_ms=${M_P50[nats]} rabbitmq_p50_ms=${M_P50[rabbitmq]} $cpu$([ "$PIN_BROKERS" = 1 ] && echo " unpinned: nats_p99_ms=${M_P99[nats_free]} rabbitmq_p99_ms=${M_P99[rabbitmq_free]}")"
lost_all=0 dup_all=0; for c in "${CONTENDERS[@]}"; do lost_all=$((lost_all + ${LOST[$c]:-0})); dup_all=$((dup_all + ${DUPS[$c]:-0})); done
result "P4-count lost=herd:${LOST[herd]:-n/a}$([ "$BULK" = 1 ] && echo ",herd_bulk:${LOST[herd_bulk]:-n/a}"),rabbitmq:${LOST[rabbitmq]:-n/a},nats:${LOST[nats]:-n/a}$([ "$HERD_BACKENDS" = 1 ] && echo ",herd_rabbitmq:${LOST[herd_rabbitmq]:-n/a},herd_jetstream:${LOST[herd_jetstream]:-n/a}") duplicates=herd:${DUPS[herd]:-n/a}$([ "$BULK" = 1 ] && echo ",herd_bulk:${DUPS[herd_bulk]:-n/a}"),rabbitmq:${DUPS[rabbitmq]:-n/a},nats:${DUPS[nats]:-n/a}$([ "$HERD_BACKENDS" = 1 ] && echo ",herd_rabbitmq:${DUPS[herd_rabbitmq]:-n/a},herd_jetstream:${DUPS[herd_jetstream]:-n/a}") goal=0-lost $([ "$lost_all" -eq 0 ] && echo met || echo missed)"
if [ "$HERD_BACKENDS" = 1 ]; then
  r_hr=$(ratio "${M_RATE[herd_rabbitmq]}" "${M_RATE[rabbitmq]}"); r_hj=$(ratio "${M_RATE[herd_jetstream]}" "${M_RATE[nats]}")
  v_b=met; [ "$(meets "$r_hr" '>=' 0.8)" = met ] && [ "$(meets "$r_hj" '>=' 0.8)" = met ] || v_b=missed
  free=""
  [ "$PIN_BROKERS" = 1 ] && free=" unpinned: herd_rabbitmq_msgs=${M_RATE[herd_rabbitmq_free]} ratio_to_rabbitmq=$(ratio "${M_RATE[herd_rabbitmq_free]}" "${M_RATE[rabbitmq_free]}") herd_jetstream_msgs=${M_RATE[herd_jetstream_free]} ratio_to_nats=$(ratio "${M_RATE[herd_jetstream_free]}" "${M_RATE[nats_free]}")"
  result "P4-backends herd_rabbitmq_msgs=${M_RATE[herd_rabbitmq]} ratio_to_rabbitmq=$r_hr herd_rabbitmq_p99_ms=${M_P99[herd_rabbitmq]} rabbitmq_p99_ms=${M_P99[rabbitmq]} herd_jetstream_msgs=${M_RATE[herd_jetstream]} ratio_to_nats=$r_hj herd_jetstream_p99_ms=${M_P99[herd_jetstream]} nats_p99_ms=${M_P99[nats]} goal=0.8 $v_b $cpu$free"
fi
say "elapsed ${SECONDS}s"
exit "$status"
