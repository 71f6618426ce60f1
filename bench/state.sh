#!/usr/bin/env bash
# shellcheck disable=SC2317  # the contenders' functions are called indirectly ("run_$kind")
# bench/state.sh — figure P5 of shared/design/BENCHMARKS.md.
#
# P5: state get/set through the sidecar API (Dapr's HTTP API v1.0), against Redis used directly.
#     One herd (`herd up -d`, no services, `[api]` + two components) pinned to HERD_CPU:
#       herd-redis-get     GET  /v1.0/state/redis/p5key      state.redis (the shared Redis)
#       herd-redis-set     POST /v1.0/state/redis            [{"key":"p5key","value":<~110 B JSON>}]
#       herd-embedded-get  GET  /v1.0/state/embedded/p5key   state.embedded (redb in the data dir)
#       herd-embedded-set  POST /v1.0/state/embedded         the same body; fsync before the 204,
#                                                           concurrent writes grouped into one commit
#       herd-healthz       GET  /v1.0/healthz (204, no store): herd's HTTP floor, a reference
#     driven by wrk (1 thread, keep-alive, a Lua script that counts every answer: 200 with the
#     value's length for GET, 204 for POST; anything else is an error), and the peer:
#       redis-get / redis-set   redis-benchmark -P 1 -c <same> at the same Redis, GET/SET of one
#                               key holding the same value (custom commands, so the key carries
#                               this run's prefix; `-t get,set` would use fixed key names)
#     plus a reference for what herd's Redis backend sends (SAME_OPS=1):
#       redis-hmget             HMGET key data version (herd's get pipelines it with PTTL)
#       redis-evalsha           EVALSHA of herd's own TRANSACT script (crates/herd-state/src/redis/
#                               transact.lua), with the arguments herd passes for a plain save
#
# Every concurrency in CONNS is measured for every contender. One warm-up round, then ROUNDS
# measured rounds; in each round, per concurrency, every contender gets one run, the order rotating
# from round to round (A B C, B C A, ...). Medians per contender and concurrency.
# Figures: added p50 (herd-redis − redis, per op; goal ≤ 0.1 ms), ops/s ratio herd-redis / redis,
# embedded get/set ops/s and latency, and the embedded writes per second at 1, 16 and 64 writers
# (group commit: the rate must grow with the writers, not stay at one fsync per request), with the
# block device's flush requests per acknowledged write and their mean time (machine-wide, from
# /proc/diskstats). Per run it also prints herd's and Redis's CPU time per operation, herd's own
# handler time (its herd_state_request_seconds histogram, read from the admin listener), every
# save checked against the ETag counter (no acknowledged save lost), and the CPU load from outside
# the benchmark (the machine is shared).
#
# Every key this run writes carries the prefix herd-p5-<time>-<pid> (herd's Redis component has
# keyPrefix = that prefix), so runs never touch other users' keys on the shared Redis; they are
# deleted on exit. herd's Redis backend also increments the shared counter key `herd||version`
# (its ETag source), which is left alone.
#
# Usage: bash bench/state.sh
#   env: ROUNDS=5 DURATION=4 WARMUP_DURATION=2 CONNS="1 16 64" SAME_OPS=1 GOAL_ADDED_MS=0.1
#        GOAL_GROUP=2 REDIS_HOST=127.0.0.1 REDIS_PORT=6379 REDIS_PRIVATE=0 (1, or no Redis
#        answering there: a private redis-server on a free port, pinned to HERD_CPU beside herd)
#        HERD_CPU=1 LOAD_CPU=0 HERD_REV=<commit> CARGO_TARGET_DIR
#        HERD_BENCH_CACHE=/tmp/herd-bench (HERD_REV, CARGO_TARGET_DIR: see build_herd in bench/lib.sh)
# Exit: 0 when every contender ran and answered correctly (goals met or not), 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}                 # measured rounds, after one warm-up round
DURATION=${DURATION:-4}             # seconds per measured run
WARMUP_DURATION=${WARMUP_DURATION:-2}
CONNS=${CONNS:-"1 16 64"}           # concurrencies (wrk -c / redis-benchmark -c)
SAME_OPS=${SAME_OPS:-1}             # 1: also run redis-hmget / redis-evalsha (herd's own commands)
GOAL_ADDED_MS=${GOAL_ADDED_MS:-0.1} # P5 goal: herd-redis p50 − redis p50, per op
GOAL_GROUP=${GOAL_GROUP:-2}         # group commit: embedded set ops/s at the most writers ≥ this × 1 writer
REDIS_PRIVATE=${REDIS_PRIVATE:-0}  # 1: a private redis-server pinned to HERD_CPU instead of the shared one
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
read -ra CONNS_LIST <<<"$CONNS"

# CPU budget: herd alone on HERD_CPU (its tokio runtime sizes itself from the affinity: 1 worker;
# the embedded store's writer thread and the blocking pool that runs its reads inherit the same
# affinity); the load generators (wrk -t1, redis-benchmark, single-threaded) on LOAD_CPU.
# The shared redis-server is a system service used by others and is not pinned; a private one
# (REDIS_PRIVATE=1) runs on HERD_CPU beside herd, so both paths cross between the CPUs alike.
if [ "$(nproc)" -ge 2 ]; then HERD_CPU=${HERD_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
else HERD_CPU=${HERD_CPU:-0}; LOAD_CPU=${LOAD_CPU:-0}; fi
CLI_CPU=$LOAD_CPU

bench_init state
RUN_PREFIX="herd-p5-$(date +%s)-$$"

# --- tools -----------------------------------------------------------------------------------
need curl taskset awk
ensure_wrk
if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
  apt_install redis-tools || { tail -5 "$WORK/apt.log"; die "cannot install redis-tools (redis-cli, redis-benchmark)"; }
fi

declare -A FAILED=()   # contender -> why it failed to run or answered wrongly

if ! build_herd herd || [ ! -x "$HERD" ]; then
  cat "$WORK/cargo.log"
  FAILED[herd]="cargo build failed"
fi

# --- helpers this script needs beyond bench/lib.sh --------------------------------------------
rcli() { on_cpu "$LOAD_CPU" redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }

# Busy share of each CPU between two /proc/stat snapshots.
cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }
cpu_busy() { # before after cpu -> percent
  awk -v c="cpu$3" -v a="$1" -v b="$2" 'BEGIN{
    n = split(a, A, "\n"); for (i = 1; i <= n; i++) { split(A[i], f, " "); if (f[1] == c) { t0 = 0; for (j = 2; j <= 11; j++) t0 += f[j]; i0 = f[5] + f[6] } }
    n = split(b, B, "\n"); for (i = 1; i <= n; i++) { split(B[i], f, " "); if (f[1] == c) { t1 = 0; for (j = 2; j <= 11; j++) t1 += f[j]; i1 = f[5] + f[6] } }
    d = t1 - t0; printf "%.0f", (d > 0 ? 100 * (d - (i1 - i0)) / d : 0) }'
}

# The whole machine's CPU ticks "total idle+iowait steal irq+softirq" (USER_HZ, all CPUs), and the
# CPU ticks of this script's finished children (wrk, redis-benchmark, curl, ...: cutime + cstime
# of $$). Interrupt and softirq time (which includes the loopback network stack, largely ours) is
# charged to no process, so it is left out of the outside load.
sys_snap() { awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6, $9, $7 + $8 }' /proc/stat; }
children_ticks() { cut -d')' -f2- "/proc/$$/stat" | awk '{ print $14 + $15 }'; }

# Flush requests completed by the block device holding the data dir, and the milliseconds spent on
# them (fields 19 and 20 of /proc/diskstats, Linux ≥ 5.5; every fsync on ext4/xfs issues one):
# "count ms". Machine-wide: other processes' fsyncs count too.
DISK=""
disk_flushes() {
  [ -n "$DISK" ] || { echo "0 0"; return; }
  awk -v d="$DISK" '$3 == d { print ($19 == "" ? 0 : $19), ($20 == "" ? 0 : $20) }' /proc/diskstats
}

# write_state_lua file expected_status body_length|- [method body]: a wrk script that counts an
# answer as good only when its status is expected_status (and its body has body_length bytes,
# unless "-"), and prints the same machine-readable WRK line as bench/lib.sh's write_wrk_lua
# (ok2xx = good answers, non2xx = every other answer), so parse_wrk reads it.
write_state_lua() {
  local file=$1 expect=$2 len=$3 method=${4:-} body=${5:-} cond
  cond="status == $expect"; [ "$len" = - ] || cond+=" and #body == $len"
  {
    if [ -n "$method" ]; then
      printf 'wrk.method = "%s"\nwrk.body = [==[%s]==]\nwrk.headers["Content-Type"] = "application/json"\n' "$method" "$body"
    fi
    printf 'response = function(status, headers, body)\n  if %s then ok2xx = ok2xx + 1 else non2xx = non2xx + 1 end\nend\n' "$cond"
    cat <<'EOF'
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) ok2xx = 0; non2xx = 0 end
done = function(summary, latency, requests)
  local ok, bad = 0, 0
  local e = summary.errors
  for _, t in ipairs(threads) do ok = ok + t:get("ok2xx"); bad = bad + t:get("non2xx") end
  io.write(string.format(
    "WRK requests=%d duration_us=%d ok2xx=%d non2xx=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, ok, bad, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
EOF
  } >"$file"
}
wrk_us() { grep '^WRK ' "$1" | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }
us_to_ms() { awk -v u="$1" 'BEGIN{printf "%.3f", u / 1000}'; }

# herd's own view of a request (the `herd_state_request_seconds` histogram from the admin
# listener: from routing to the store's answer, HTTP parsing and writing excluded) for one store
# and op: "sum count count_within_5ms".
herd_metric() { # store op
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null | awk -v s="$1" -v o="$2" '
    /^herd_state_request_seconds_/ && index($0, "store=\"" s "\"") && index($0, "op=\"" o "\"") {
      if ($1 ~ /_sum\{/) sum = $2; else if ($1 ~ /_count\{/) cnt = $2; else if (index($1, "le=\"0.005\"")) le5 = $2 }
    END { printf "%s %s %s\n", (sum == "" ? 0 : sum), (cnt == "" ? 0 : cnt), (le5 == "" ? 0 : le5) }'
}

http_code() { # curl args...: the status code only
  curl -s -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' --max-time 2 "$@" 2>/dev/null || true
}
etag_of() { # store: the ETag of p5key as herd's GET answers it (empty when none)
  http_code "http://127.0.0.1:$API_PORT/v1.0/state/$1/p5key" >/dev/null
  tr -d '\r' <"$WORK/headers" | awk -F': ' 'tolower($1) == "etag" { gsub(/"/, "", $2); print $2 }'
}

# --- the value, the keys, the load scripts ------------------------------------------------------
VALUE='{"user":"p5","n":123456,"tags":["alpha","beta","gamma"],"note":"state get/set benchmark value, about 110 B"}'
BODY="[{\"key\":\"p5key\",\"value\":$VALUE}]"
KEY_DIRECT="$RUN_PREFIX:direct"          # redis-get / redis-set
KEY_REF="$RUN_PREFIX:ref"                # redis-hmget / redis-evalsha (herd's layout: a hash)
KEY_HERD="$RUN_PREFIX||p5key"            # what herd's Redis component stores p5key as
write_state_lua "$WORK/get.lua" 200 "${#VALUE}"
write_state_lua "$WORK/set.lua" 204 - POST "$BODY"
write_state_lua "$WORK/healthz.lua" 204 -

# --- Redis -------------------------------------------------------------------------------------
REDIS_PID="" REDIS_DESC="" REDIS_CPU=unpinned
if [ "$REDIS_PRIVATE" != 1 ] && ! rcli ping 2>/dev/null | grep -q PONG; then
  say "no Redis answers at $REDIS_HOST:$REDIS_PORT: using a private redis-server"
  REDIS_PRIVATE=1
fi
if [ "$REDIS_PRIVATE" = 1 ]; then
  command -v redis-server >/dev/null || apt_install redis-server || true
  command -v redis-server >/dev/null || { tail -5 "$WORK/apt.log"; die "cannot install redis-server"; }
  REDIS_HOST=127.0.0.1; free_port REDIS_PORT
  # The server side on one CPU: Redis beside herd, so that herd's path (client CPU -> herd ->
  # Redis) and the direct one (client CPU -> Redis) cross between the CPUs the same number of times.
  taskset -c "$HERD_CPU" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!; KILL_PIDS+=("$REDIS_PID")
  for _ in $(seq 50); do rcli ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  rcli ping 2>/dev/null | grep -q PONG || { tail -5 "$WORK/redis.log"; die "private redis-server did not start"; }
  REDIS_CPU=$HERD_CPU
  REDIS_DESC="private redis-server on $REDIS_HOST:$REDIS_PORT (--save '' --appendonly no), pinned to CPU $HERD_CPU beside herd"
else
  REDIS_DESC="shared system service at $REDIS_HOST:$REDIS_PORT, not pinned (runs on either CPU)"
fi
REDIS_VERSION=$(rcli info server 2>/dev/null | tr -d '\r' | awk -F: '$1 == "redis_version" {print $2}')
[ -n "$REDIS_PID" ] || REDIS_PID=$(rcli info server 2>/dev/null | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')
[ -r "/proc/$REDIS_PID/stat" ] || REDIS_PID=""   # another host or namespace: no CPU figures
REDIS_PERSIST=$(rcli config get appendonly 2>/dev/null | tr '\n' ' ' | awk '{print "appendonly=" $2}')
REDIS_PERSIST+=" save='$(rcli config get save 2>/dev/null | sed -n 2p)'"

delete_run_keys() { # every key this run wrote (the shared `herd||version` counter stays)
  local pattern n=0 k
  for pattern in "$RUN_PREFIX*" "herd-fence||$RUN_PREFIX*"; do
    while IFS= read -r k; do
      [ -n "$k" ] || continue
      rcli del "$k" >/dev/null 2>&1 && n=$((n + 1))
    done < <(rcli --scan --pattern "$pattern" 2>/dev/null || true)
  done
  say "deleted $n Redis key(s) with prefix $RUN_PREFIX"
}
CLEANUP_HOOKS+=(delete_run_keys)

# herd's TRANSACT script, for the redis-evalsha reference: crates/herd-state/src/redis/transact.lua,
# or in older revisions the Rust raw string in redis.rs, byte for byte. EVAL_ARGS: the arguments
# herd passes for a plain save (scripts that take the number of operations first get `1`).
EVAL_SHA="" EVAL_ARGS=()
load_transact_script() {
  local lua="$SRC/crates/herd-state/src/redis/transact.lua" rs="$SRC/crates/herd-state/src/redis.rs"
  if [ -f "$lua" ]; then
    cp "$lua" "$WORK/transact.lua"
  else
    [ -f "$rs" ] || return 1
    { echo; awk '/^const TRANSACT: &str = r#"$/ { f = 1; next } f && /^"#;$/ { exit } f' "$rs"; } >"$WORK/transact.lua"
  fi
  [ -s "$WORK/transact.lua" ] || return 1
  EVAL_ARGS=(s '' u '' 0 "$VALUE")
  if grep -q 'tonumber(ARGV\[1\])' "$WORK/transact.lua"; then EVAL_ARGS=(1 "${EVAL_ARGS[@]}"); fi
  EVAL_SHA=$(rcli -x script load <"$WORK/transact.lua" 2>/dev/null | tr -d '\r')
  [[ $EVAL_SHA =~ ^[0-9a-f]{40}$ ]]
}

# --- herd --------------------------------------------------------------------------------------
API_PORT="" ADMIN_PORT="" HERD_DIR=""
start_herd() {
  HERD_DIR=$(mktemp -d "$WORK/herd.XXXX")
  free_port API_PORT; free_port ADMIN_PORT
  cat >"$HERD_DIR/herd.toml" <<EOF
data_dir = "$HERD_DIR/.herd"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[api]
listen = "127.0.0.1:$API_PORT"

[[component]]
name = "redis"
type = "state.redis"
metadata = { redisHost = "$REDIS_HOST:$REDIS_PORT", keyPrefix = "$RUN_PREFIX" }

[[component]]
name = "embedded"
type = "state.embedded"
EOF
  herd_up "$HERD_DIR/herd.toml" "$HERD_CPU" || return 1
  local i code
  for ((i = 0; i < 100; i++)); do
    code=$(http_code "http://127.0.0.1:$API_PORT/v1.0/healthz/outbound")
    [ "$code" = 204 ] && return 0
    sleep 0.1
  done
  echo "herd: components not connected (healthz/outbound answers ${code:-nothing})"; cat "$WORK/body" 2>/dev/null; echo
  tail -5 "$HERD_DIR/.herd/herd.log" 2>/dev/null
  return 1
}

# herd_serves store: save p5key, read it back: 204, then 200 with the value and an ETag.
herd_serves() {
  local code etag
  code=$(http_code -X POST -H 'Content-Type: application/json' --data "$BODY" "http://127.0.0.1:$API_PORT/v1.0/state/$1")
  [ "$code" = 204 ] || { echo "save answered ${code:-nothing}: $(head -c 200 "$WORK/body")"; return 1; }
  code=$(http_code "http://127.0.0.1:$API_PORT/v1.0/state/$1/p5key")
  [ "$code" = 200 ] || { echo "get answered ${code:-nothing}: $(head -c 200 "$WORK/body")"; return 1; }
  [ "$(cat "$WORK/body")" = "$VALUE" ] || { echo "get returned another value: $(head -c 200 "$WORK/body")"; return 1; }
  etag=$(tr -d '\r' <"$WORK/headers" | awk -F': ' 'tolower($1) == "etag" { print $2 }')
  [ -n "$etag" ] || { echo "get answered without an ETag"; return 1; }
  if [ "$1" = redis ] && [ "$(rcli hget "$KEY_HERD" data 2>/dev/null)" != "$VALUE" ]; then
    echo "the value is not in Redis under $KEY_HERD (the prefix this run deletes)"; return 1
  fi
  echo "etag $etag"
}

# --- one run per contender: sets R_* ------------------------------------------------------------
# R_RPS ops/s, R_P50/R_P99 ms (3 decimals), R_REQ answers, R_ERR wrong answers + socket errors,
# R_HCPU herd CPU us/op, R_RCPU redis-server CPU us/op, R_FLUSH device flushes/op, R_SRV herd's
# mean handler time in ms and R_SLOW handler times over 5 ms (from its metrics), R_CPU busy % of
# both CPUs, R_NOTE extra checks.
declare -A RB_RATE=()   # redis-benchmark: ops/s seen last, to size -n for the next run
R_RPS=0 R_P50=0 R_P99=0 R_REQ=0 R_ERR=0 R_HCPU=n/a R_RCPU=n/a R_FLUSH=n/a R_SRV=n/a R_SLOW=n/a R_CPU="" R_NOTE=""
R_OUT=0 R_STEAL=0 R_FLMS=n/a R_SRVN=n/a R_HSHARE=0

per_op() { awk -v d="$1" -v n="$2" -v s="${3:-1}" -v f="${4:-%.1f}" 'BEGIN{ if (n > 0) printf f, d * s / n; else print "n/a" }'; }

# R_OUT: the share of the machine's CPU (all CPUs) busy with work other than herd, Redis and this
# script's own processes during the run (the shared machine's outside load); R_STEAL: stolen by the
# hypervisor.
measure_begin() {
  M_T0=$EPOCHREALTIME
  M_CPU0=$(cpu_snap); M_FL0=$(disk_flushes); M_SYS0=$(sys_snap); M_CH0=$(children_ticks)
  M_H0=$(cpu_ticks "$HERD_PID"); M_R0=0; [ -n "$REDIS_PID" ] && M_R0=$(cpu_ticks "$REDIS_PID")
  return 0
}
measure_end() { # ops
  local cpu1 n=$1 h r
  cpu1=$(cpu_snap)
  R_CPU="cpu$HERD_CPU $(cpu_busy "$M_CPU0" "$cpu1" "$HERD_CPU")% cpu$LOAD_CPU $(cpu_busy "$M_CPU0" "$cpu1" "$LOAD_CPU")%"
  read -r R_FLUSH R_FLMS < <(awk -v a="$M_FL0" -v b="$(disk_flushes)" -v n="$n" 'BEGIN{
    split(a, x, " "); split(b, y, " "); f = y[1] - x[1]
    printf "%s %s\n", (n > 0 ? sprintf("%.3f", f / n) : "n/a"), (f > 0 ? sprintf("%.1f", (y[2] - x[2]) / f) : "n/a") }')
  h=$(( $(cpu_ticks "$HERD_PID") - M_H0 )); r=0
  [ -n "$REDIS_PID" ] && r=$(( $(cpu_ticks "$REDIS_PID") - M_R0 ))
  R_HCPU=$(per_op "$h" "$n" "$TICK_US")
  R_HSHARE=$(awk -v t0="$M_T0" -v t1="$EPOCHREALTIME" -v h="$h" -v u="$TICK_US" 'BEGIN{ d = (t1 - t0) * 1e6; printf "%.0f", (d > 0 ? 100 * h * u / d : 0) }')
  R_RCPU=n/a; [ -n "$REDIS_PID" ] && R_RCPU=$(per_op "$r" "$n" "$TICK_US")
  read -r R_OUT R_STEAL < <(awk -v a="$M_SYS0" -v b="$(sys_snap)" -v ours="$(( h + r + $(children_ticks) - M_CH0 ))" 'BEGIN{
    split(a, x, " "); split(b, y, " "); t = y[1] - x[1]; busy = t - (y[2] - x[2]) - (y[3] - x[3]) - (y[4] - x[4])
    o = busy - ours; if (o < 0) o = 0
    if (t > 0) printf "%.0f %.0f\n", 100 * o / t, 100 * (y[3] - x[3]) / t; else print "0 0" }')
  return 0
}

run_wrk_state() { # store(redis|embedded|-) op(get|set|healthz) conns dur out
  local store=$1 op=$2 conns=$3 dur=$4 out=$5 url lua m0 m1 e0="" e1 wrk_pid metric_op
  url="http://127.0.0.1:$API_PORT/v1.0/state/$store"; lua="$WORK/set.lua"; metric_op=save
  if [ "$op" = get ]; then url+="/p5key"; lua="$WORK/get.lua"; metric_op="get"; fi
  if [ "$op" = healthz ]; then url="http://127.0.0.1:$API_PORT/v1.0/healthz"; lua="$WORK/healthz.lua"; fi
  [ "$op" = set ] && e0=$(etag_of "$store")
  m0=$(herd_metric "$store" "$metric_op")
  measure_begin
  taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"$dur"s --latency -s "$lua" "$url" >"$out" 2>&1 &
  wrk_pid=$!; KILL_PIDS+=("$wrk_pid")
  wait "$wrk_pid" || true; forget_pid "$wrk_pid"
  parse_wrk "$out" || return 1
  measure_end "$W_REQ"
  m1=$(herd_metric "$store" "$metric_op")
  R_SRV=$(awk -v a="$m0" -v b="$m1" 'BEGIN{ split(a, x, " "); split(b, y, " "); n = y[2] - x[2]
    if (n > 0) printf "%.3f", 1000 * (y[1] - x[1]) / n; else print "n/a" }')
  R_SLOW=$(awk -v a="$m0" -v b="$m1" 'BEGIN{ split(a, x, " "); split(b, y, " "); n = y[2] - x[2]
    if (n > 0) printf "%d", n - (y[3] - x[3]); else print "n/a" }')
  R_SRVN=$(awk -v a="$m0" -v b="$m1" 'BEGIN{ split(a, x, " "); split(b, y, " "); printf "%d", y[2] - x[2] }')
  R_RPS=$W_RPS R_REQ=$W_REQ R_ERR=$((W_NON2XX + W_SOCKERR))
  R_P50=$(us_to_ms "$(wrk_us "$out" p50_us)") R_P99=$(us_to_ms "$(wrk_us "$out" p99_us)")
  R_NOTE=""
  if [ "$op" = healthz ]; then R_SRV=n/a R_SLOW=n/a R_SRVN=n/a; fi
  if [ "$op" = set ]; then
    # Every acknowledged save must have committed: the ETag (a version counter) moved by at least
    # the number of 204s, and (embedded: herd is its only writer) by at most that plus the saves
    # still in flight when wrk stopped (one per connection).
    e1=$(etag_of "$store")
    if [[ $e0 =~ ^[0-9]+$ && $e1 =~ ^[0-9]+$ ]]; then
      local moved=$((e1 - e0))
      R_NOTE="etag +$moved"; [ "$store" = redis ] && R_NOTE+=" (shared counter: at least the saves)"
      if [ "$moved" -lt "$W_OK" ] || { [ "$store" = embedded ] && [ "$moved" -gt $((W_OK + conns)) ]; }; then
        R_NOTE+=" MISMATCH: $W_OK saves acknowledged"; R_ERR=$((R_ERR + 1))
      fi
    else
      R_NOTE="etag not numeric ('$e0' -> '$e1')"; R_ERR=$((R_ERR + 1))
    fi
  fi
  [ "$W_OK" -gt 0 ]
}

run_redis_benchmark() { # kind conns dur out command...
  local kind=$1 conns=$2 dur=$3 out=$4 rate n line rc=0
  shift 4
  rate=${RB_RATE[$kind/$conns]:-20000}
  n=$(awk -v r="$rate" -v d="$dur" 'BEGIN{ n = int(r * d); if (n < 1000) n = 1000; print n }')
  measure_begin
  taskset -c "$LOAD_CPU" redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" -c "$conns" -n "$n" -P 1 --csv "$@" \
    >"$out" 2>&1 || rc=$?
  # redis-benchmark 7 stops at the first error reply (exit 1, "Error from server: ...").
  line=$(grep -v '^"test"' "$out" | grep '^"' | tail -1 || true)
  if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
    R_REQ=0 R_ERR=1; echo "redis-benchmark exit $rc: $(tail -2 "$out" | tr '\n' ' ')" >>"$out.why"; return 1
  fi
  measure_end "$n"
  # The test name (the command) may hold commas: read the 7 figures from the end of the line.
  read -r R_RPS R_P50 R_P99 < <(echo "$line" | tr -d '"' | awk -F, '{ printf "%.0f %.3f %.3f\n", $(NF-6), $(NF-3), $(NF-1) }')
  R_REQ=$n R_ERR=0 R_SRV=n/a R_SLOW=n/a R_SRVN=n/a R_NOTE=""
  RB_RATE[$kind/$conns]=$R_RPS
  return 0
}

run_herd_healthz() { run_wrk_state - healthz "$@"; }
run_herd_redis_get() { run_wrk_state redis get "$@"; }
run_herd_redis_set() { run_wrk_state redis set "$@"; }
run_herd_embedded_get() { run_wrk_state embedded get "$@"; }
run_herd_embedded_set() { run_wrk_state embedded set "$@"; }
run_redis_get() { run_redis_benchmark redis_get "$@" GET "$KEY_DIRECT"; }
run_redis_set() {
  run_redis_benchmark redis_set "$@" SET "$KEY_DIRECT" "$VALUE" || return 1
  [ "$(rcli get "$KEY_DIRECT")" = "$VALUE" ] || { R_ERR=1; R_NOTE="value not found after SET"; }
}
run_redis_hmget() { run_redis_benchmark redis_hmget "$@" HMGET "$KEY_REF" data version; }
run_redis_evalsha() {
  run_redis_benchmark redis_evalsha "$@" EVALSHA "$EVAL_SHA" 3 "herd||version" "$KEY_REF" "herd-fence||$KEY_REF" "${EVAL_ARGS[@]}" || return 1
  [ "$(rcli hget "$KEY_REF" data)" = "$VALUE" ] || { R_ERR=1; R_NOTE="value not found after EVALSHA"; }
}

# --- start ---------------------------------------------------------------------------------------
CONTENDERS=(herd_redis_get herd_redis_set herd_embedded_get herd_embedded_set redis_get redis_set herd_healthz)
declare -A NAME=([herd_healthz]=herd-healthz [herd_redis_get]=herd-redis-get [herd_redis_set]=herd-redis-set
  [herd_embedded_get]=herd-embedded-get [herd_embedded_set]=herd-embedded-set
  [redis_get]=redis-get [redis_set]=redis-set [redis_hmget]=redis-hmget [redis_evalsha]=redis-evalsha)

say "herd P5 state benchmark — $(date -u)"
say "nproc=$(nproc); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2 || true); redis-benchmark $(redis-benchmark --version 2>/dev/null | awk '{print $2}' || true); Redis $REDIS_VERSION ($REDIS_PERSIST); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)"
say "CPU budget: herd (1 tokio worker; the embedded store's writer thread and blocking-pool readers inherit the affinity) pinned to CPU $HERD_CPU; the load generator (wrk -t1 / redis-benchmark, single-threaded) pinned to CPU $LOAD_CPU; Redis: $REDIS_DESC"
say "load: per concurrency in {$CONNS}: wrk -t1 -c<n> -d${DURATION}s --latency, keep-alive / redis-benchmark -c<n> -P 1 -n <≈${DURATION}s of ops> --csv; 1 warm-up round (${WARMUP_DURATION}s) + $ROUNDS measured rounds; order rotating per round"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -z "${FAILED[herd]:-}" ]; then
  if start_herd >"$WORK/herd.start" 2>&1; then
    DATA_FS=$(df -T "$HERD_DIR/.herd" | awk 'NR == 2 {print $2 " on " $1}')
    dev=$(df "$HERD_DIR/.herd" | awk 'NR == 2 {print $1}'); dev=${dev#/dev/}
    if awk -v d="$dev" '$3 == d && NF >= 19 { f = 1 } END { exit !f }' /proc/diskstats; then DISK=$dev; fi
    say "herd: pid $HERD_PID, API on 127.0.0.1:$API_PORT, admin on 127.0.0.1:$ADMIN_PORT, affinity cpu$(affinity_of "$HERD_PID"); threads: $(cat /proc/"$HERD_PID"/task/*/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}' || true)"
    say "herd: components redis (state.redis, keyPrefix $RUN_PREFIX) and embedded (state.embedded, $HERD_DIR/.herd/state/embedded.redb, $DATA_FS; flushes counted on ${DISK:-no device})"
    for store in redis embedded; do
      if seen=$(herd_serves "$store" 2>&1); then say "herd $store store: save 204, get 200 with the value, $seen"
      else
        say "herd $store store: FAILED before load: $seen"
        FAILED[herd_${store}_get]="does not serve before load: $seen"; FAILED[herd_${store}_set]=${FAILED[herd_${store}_get]}
      fi
    done
  else
    cat "$WORK/herd.start"
    FAILED[herd]="did not start: $(tail -3 "$WORK/herd.start" | tr '\n' ' ')"
  fi
fi
if [ -n "${FAILED[herd]:-}" ]; then
  for c in herd_healthz herd_redis_get herd_redis_set herd_embedded_get herd_embedded_set; do FAILED[$c]=${FAILED[herd]}; done
  HERD_PID=$$   # CPU figures of the herd runs are not taken; keeps measure_* harmless
fi

rcli set "$KEY_DIRECT" "$VALUE" >/dev/null || FAILED[redis_get]="cannot SET $KEY_DIRECT"
if [ "$SAME_OPS" = 1 ]; then
  CONTENDERS+=(redis_hmget redis_evalsha)
  if ! load_transact_script; then
    FAILED[redis_evalsha]="cannot read herd's TRANSACT script from crates/herd-state/src/redis.rs or load it"
    FAILED[redis_hmget]="no value written by the TRANSACT script"
  elif ! rcli evalsha "$EVAL_SHA" 3 "herd||version" "$KEY_REF" "herd-fence||$KEY_REF" "${EVAL_ARGS[@]}" >/dev/null ||
       [ "$(rcli hget "$KEY_REF" data)" != "$VALUE" ]; then
    FAILED[redis_evalsha]="EVALSHA of herd's TRANSACT script did not store the value"; FAILED[redis_hmget]=${FAILED[redis_evalsha]}
  else
    say "reference: herd's TRANSACT script loaded into Redis as $EVAL_SHA; one save through it stores the value"
  fi
fi
for c in "${CONTENDERS[@]}"; do [ -n "${FAILED[$c]:-}" ] && say "${NAME[$c]}: FAILED: ${FAILED[$c]}"; done

# --- rounds ------------------------------------------------------------------------------------
declare -A RPS=() P50=() P99=() HCPU=() HSHARE=() RCPU=() FLUSH=() FLMS=() SRV=() SLOW=() ERRS=() REQS=()
OUTSIDE="" STEAL=""
HERD_LOGF="$HERD_DIR/.herd/herd.log"
for ((round = 0; round <= ROUNDS; round++)); do
  if [ "$round" -eq 0 ]; then d=$WARMUP_DURATION; tag="warm-up"
  else d=$DURATION; tag="round $round/$ROUNDS"; fi
  round_order "$round" "${CONTENDERS[@]}"
  for conns in "${CONNS_LIST[@]}"; do
    for c in "${ORDER[@]}"; do
      [ -n "${FAILED[$c]:-}" ] && continue
      k="$c/$conns" out="$WORK/$c.c$conns.r$round"
      mark=$(stat -c %s "$HERD_LOGF" 2>/dev/null || echo 0)
      ok=1; "run_$c" "$conns" "$d" "$out" || ok=0
      if [[ $c == herd_* ]]; then
        if ! pid_alive "$HERD_PID"; then ok=0; fi
        tail -c +$((mark + 1)) "$HERD_LOGF" 2>/dev/null | grep -E ' (WARN|ERROR) ' | head -3 >>"$WORK/herd-warnings.txt" || true
      fi
      if [ "$ok" -ne 1 ]; then
        FAILED[$c]="failed or served nothing ($tag, -c$conns): $({ cat "$out.why" 2>/dev/null; tail -2 "$out" 2>/dev/null; } | tr '\n' ' ' | head -c 300 || true)"
        say "$tag ${NAME[$c]} -c$conns: FAILED"; continue
      fi
      say "$(printf '%-9s %-17s c%-3s %7s ops/s  p50 %7s ms  p99 %7s ms  answers %8s  errors %s  herd %5s us CPU/op (%s%% of a CPU)  redis %5s us CPU/op  flushes/op %5s (%s ms each)  herd handler mean %5s ms, %s of %s over 5 ms  (%s; outside load %s%%, steal %s%%)%s' \
        "$tag" "${NAME[$c]}" "$conns" "$R_RPS" "$R_P50" "$R_P99" "$R_REQ" "$R_ERR" \
        "$([[ $c == herd_* ]] && echo "$R_HCPU" || echo -)" "$([[ $c == herd_* ]] && echo "$R_HSHARE" || echo -)" "$R_RCPU" "$R_FLUSH" "$R_FLMS" "$R_SRV" "$R_SLOW" "$R_SRVN" "$R_CPU" "$R_OUT" "$R_STEAL" "${R_NOTE:+; $R_NOTE}")"
      ERRS[$k]=$(( ${ERRS[$k]:-0} + R_ERR ))
      if [ "$round" -gt 0 ]; then
        OUTSIDE+="$R_OUT "; STEAL+="$R_STEAL "
        RPS[$k]+="$R_RPS "; P50[$k]+="$R_P50 "; P99[$k]+="$R_P99 "; HCPU[$k]+="$R_HCPU "
        RCPU[$k]+="$R_RCPU "; HSHARE[$k]+="$R_HSHARE "; FLUSH[$k]+="$R_FLUSH "; SRV[$k]+="$R_SRV "; FLMS[$k]+="$R_FLMS "
        [ "$R_SLOW" = n/a ] || SLOW[$k]=$(( ${SLOW[$k]:-0} + R_SLOW ))
        REQS[$k]=$(( ${REQS[$k]:-0} + R_REQ ))
      fi
    done
  done
done
say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# Still serving after the load, still on the budget?
for store in redis embedded; do
  [ -n "${FAILED[herd_${store}_get]:-}" ] && continue
  seen=$(herd_serves "$store" 2>&1) || { FAILED[herd_${store}_get]="stopped serving after the load: $seen"; FAILED[herd_${store}_set]=${FAILED[herd_${store}_get]}; }
done
if [ -z "${FAILED[herd]:-}" ] && pid_alive "$HERD_PID"; then
  a=$(affinity_of "$HERD_PID"); [ "$a" = "$HERD_CPU" ] || say "WARNING herd: affinity '$a', expected '$HERD_CPU'"
  say "herd after the load: RSS $(vmrss_kb "$HERD_PID") kB, $(threads_of "$HERD_PID") threads, embedded file $(du -k "$HERD_DIR/.herd/state/embedded.redb" 2>/dev/null | cut -f1) kB"
fi
if [ -s "$WORK/herd-warnings.txt" ]; then
  say "herd WARN/ERROR lines during load (first ones):"; sed 's/^/#   /' "$WORK/herd-warnings.txt" | head -10 || true
fi

# --- summary -----------------------------------------------------------------------------------
status=0
for c in "${CONTENDERS[@]}"; do
  for conns in "${CONNS_LIST[@]}"; do
    e=${ERRS[$c/$conns]:-0}
    if [ "$e" -gt 0 ] && [ -z "${FAILED[$c]:-}" ]; then FAILED[$c]="$e wrong answers/socket errors/commit mismatches (see the run lines)"; fi
  done
done
for c in "${CONTENDERS[@]}"; do [ -n "${FAILED[$c]:-}" ] && { say "FAILED ${NAME[$c]}: ${FAILED[$c]}"; status=1; }; done

declare -A M_RPS=() M_P50=() M_P99=() M_HCPU=() M_HSHARE=() M_RCPU=() M_FLUSH=() M_FLMS=() M_SRV=()
med() { # values...: median ignoring n/a
  local v=() x; for x in "$@"; do [ "$x" = n/a ] || v+=("$x"); done
  if [ ${#v[@]} -eq 0 ]; then echo n/a; else median "${v[@]}"; fi
}
for c in "${CONTENDERS[@]}" redis_hmget redis_evalsha; do
  for conns in "${CONNS_LIST[@]}"; do
    k="$c/$conns"
    if [ -n "${FAILED[$c]:-}" ] || [ -z "${RPS[$k]:-}" ]; then
      M_RPS[$k]=n/a M_P50[$k]=n/a M_P99[$k]=n/a M_HCPU[$k]=n/a M_RCPU[$k]=n/a M_FLUSH[$k]=n/a M_FLMS[$k]=n/a M_SRV[$k]=n/a M_HSHARE[$k]=n/a; continue
    fi
    # shellcheck disable=SC2086  # one value per word
    { M_RPS[$k]=$(median_int ${RPS[$k]}); M_P50[$k]=$(med ${P50[$k]}); M_P99[$k]=$(med ${P99[$k]})
      M_HCPU[$k]=$(med ${HCPU[$k]}); M_RCPU[$k]=$(med ${RCPU[$k]}); M_FLUSH[$k]=$(med ${FLUSH[$k]}); M_FLMS[$k]=$(med ${FLMS[$k]}); M_SRV[$k]=$(med ${SRV[$k]}); M_HSHARE[$k]=$(med ${HSHARE[$k]}); }
  done
done
minus() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "n/a" || b == "n/a") print "n/a"; else printf "%.3f", a - b }'; }

echo
say "medians over $ROUNDS rounds (CPU budget: herd on CPU $HERD_CPU, load generator on CPU $LOAD_CPU, Redis $([ "$REDIS_CPU" = unpinned ] && echo unpinned || echo "on CPU $REDIS_CPU")); herd handler = herd's own mean time per request from herd_state_request_seconds (store call included, HTTP excluded), and how many handler times exceeded 5 ms (all rounds); answers and errors: all measured rounds (errors: also the warm-up)"
printf '| %-17s | %5s | %8s | %7s | %7s | %15s | %14s | %18s | %11s | %16s | %10s | %12s |\n' contender conns "ops/s" "p50 ms" "p99 ms" "herd handler ms" "handler > 5 ms" "herd us/op (% CPU)" "redis us/op" "flushes/op (ms)" "answers" "errors"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------------- ------: ---------: --------: --------: ----------------: ---------------: -------------------: ------------: -----------------: -----------: -------------:
for c in "${CONTENDERS[@]}"; do
  for conns in "${CONNS_LIST[@]}"; do
    k="$c/$conns"
    printf '| %-17s | %5s | %8s | %7s | %7s | %15s | %14s | %18s | %11s | %16s | %10s | %12s |\n' "${NAME[$c]}" "$conns" "${M_RPS[$k]}" "${M_P50[$k]}" "${M_P99[$k]}" \
      "${M_SRV[$k]}" "${SLOW[$k]:-n/a}" "$([[ $c == herd_* ]] && echo "${M_HCPU[$k]} (${M_HSHARE[$k]}%)" || echo -)" "${M_RCPU[$k]}" "${M_FLUSH[$k]} (${M_FLMS[$k]})" "${REQS[$k]:-n/a}" "${ERRS[$k]:-n/a}"
  done
done
echo
say "added by herd's Redis backend (herd-redis − redis, medians): p50 ms, and ops/s ratio herd-redis / redis"
for conns in "${CONNS_LIST[@]}"; do
  line="c$conns:"
  for op in get set; do
    line+=" $op +$(minus "${M_P50[herd_redis_$op/$conns]}" "${M_P50[redis_$op/$conns]}") ms p50, +$(minus "${M_P99[herd_redis_$op/$conns]}" "${M_P99[redis_$op/$conns]}") ms p99, ops ratio $(ratio "${M_RPS[herd_redis_$op/$conns]}" "${M_RPS[redis_$op/$conns]}");"
  done
  line+=" herd's HTTP floor (herd-healthz, no store) p50 ${M_P50[herd_healthz/$conns]} ms;"
  if [ "$SAME_OPS" = 1 ]; then
    line+=" vs herd's own commands: get +$(minus "${M_P50[herd_redis_get/$conns]}" "${M_P50[redis_hmget/$conns]}") ms p50 over HMGET, set +$(minus "${M_P50[herd_redis_set/$conns]}" "${M_P50[redis_evalsha/$conns]}") ms p50 over EVALSHA"
  fi
  say "$line"
done
echo

if [ -n "$OUTSIDE" ]; then
  read -ra o <<<"$OUTSIDE"; read -ra st <<<"$STEAL"
  say "noise: outside load (CPU busy with neither herd, Redis nor this script's processes, share of all $(nproc) CPUs) per measured run: median $(median_int "${o[@]}")%, range $(printf '%s\n' "${o[@]}" | sort -n | head -1)–$(printf '%s\n' "${o[@]}" | sort -n | tail -1)%; hypervisor steal median $(median_int "${st[@]}")%"
fi
echo
cpu="cpu=herd:$HERD_CPU,load:$LOAD_CPU,redis:$REDIS_CPU"
[ "$REDIS_PRIVATE" = 1 ] && cpu+=" redis=private"
for conns in "${CONNS_LIST[@]}"; do
  ag=$(minus "${M_P50[herd_redis_get/$conns]}" "${M_P50[redis_get/$conns]}")
  as=$(minus "${M_P50[herd_redis_set/$conns]}" "${M_P50[redis_set/$conns]}")
  verdict=met
  [ "$(meets "$ag" '<=' "$GOAL_ADDED_MS")" = met ] && [ "$(meets "$as" '<=' "$GOAL_ADDED_MS")" = met ] || verdict=missed
  result "P5 conns=$conns added_p50_ms=get:$ag,set:$as goal=$GOAL_ADDED_MS $verdict herd_redis_p50_ms=get:${M_P50[herd_redis_get/$conns]},set:${M_P50[herd_redis_set/$conns]} redis_p50_ms=get:${M_P50[redis_get/$conns]},set:${M_P50[redis_set/$conns]} herd_redis_ops=get:${M_RPS[herd_redis_get/$conns]},set:${M_RPS[herd_redis_set/$conns]} redis_ops=get:${M_RPS[redis_get/$conns]},set:${M_RPS[redis_set/$conns]} ops_ratio=get:$(ratio "${M_RPS[herd_redis_get/$conns]}" "${M_RPS[redis_get/$conns]}"),set:$(ratio "${M_RPS[herd_redis_set/$conns]}" "${M_RPS[redis_set/$conns]}") $cpu"
done
for conns in "${CONNS_LIST[@]}"; do
  result "P5-embedded conns=$conns get_ops=${M_RPS[herd_embedded_get/$conns]} get_p50_ms=${M_P50[herd_embedded_get/$conns]} get_p99_ms=${M_P99[herd_embedded_get/$conns]} set_ops=${M_RPS[herd_embedded_set/$conns]} set_p50_ms=${M_P50[herd_embedded_set/$conns]} set_p99_ms=${M_P99[herd_embedded_set/$conns]} flushes_per_set=${M_FLUSH[herd_embedded_set/$conns]} flush_ms=${M_FLMS[herd_embedded_set/$conns]} goal=reported $cpu"
done
lo=${CONNS_LIST[0]} hi=${CONNS_LIST[${#CONNS_LIST[@]} - 1]}
gc=""; for conns in "${CONNS_LIST[@]}"; do gc+="c$conns:${M_RPS[herd_embedded_set/$conns]},"; done
gratio=$(ratio "${M_RPS[herd_embedded_set/$hi]}" "${M_RPS[herd_embedded_set/$lo]}")
result "P5-group-commit set_ops=${gc%,} ratio_c${hi}_c$lo=$gratio flushes_per_set=c$lo:${M_FLUSH[herd_embedded_set/$lo]},c$hi:${M_FLUSH[herd_embedded_set/$hi]} flush_ms=c$lo:${M_FLMS[herd_embedded_set/$lo]},c$hi:${M_FLMS[herd_embedded_set/$hi]} goal=$GOAL_GROUP $(meets "$gratio" '>=' "$GOAL_GROUP") $cpu"
say "elapsed ${SECONDS}s"
exit "$status"
