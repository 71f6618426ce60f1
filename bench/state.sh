#!/usr/bin/env bash
# shellcheck disable=SC2317  # the contenders' functions are called indirectly ("run_$kind")
# bench/state.sh — figure P5 of shared/design/BENCHMARKS.md.
#
# P5: state get/set through the sidecar API (Dapr's HTTP API v1.0), against Redis used directly;
#     the embedded store against redb used directly, the PostgreSQL backend against pgbench.
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
#     the embedded store against redb used directly (REDB=1):
#       redb-get / redb-set     bench/loadgen's `redb-direct` (redb, the version of herd's Cargo.lock):
#                               <conns> threads on one redb file in a directory beside herd's data dir
#                               (same file system), for DURATION seconds: set = one write transaction
#                               per operation with Durability::Immediate (the key herd stores,
#                               herd||p5key, and a record of the same size), get = one read
#                               transaction per operation.
#                               It is the server here, so it is pinned to HERD_CPU like herd. No HTTP
#                               on its path: herd-healthz shows how much of herd's time is HTTP.
#     and the PostgreSQL backend against pgbench (PG=1), both at PG_URL (default the shared server):
#       herd-postgres-get       GET  /v1.0/state/postgres/p5key  state.postgresql, maxConns = <conns>
#       herd-postgres-set       POST /v1.0/state/postgres        the same body
#                               (its own herd, pinned to HERD_CPU, started for each run and stopped
#                               after it so that its pooled connections never count against the
#                               server's max_connections while pgbench runs; a PG_PRIME-second burst
#                               at the same concurrency fills its pool first, unmeasured)
#       pgbench-get / pgbench-set  pgbench -n -M PG_MODE (simple) -c <conns> -j 1 -T DURATION -f <script>
#                               running the statements herd runs (crates/herd-state/src/postgres.rs):
#                               get = its SELECT of one live row; set = what a plain save of an
#                               existing key sends: BEGIN, SELECT ... FOR UPDATE, UPDATE, COMMIT.
#                               herd sends them over the extended protocol (parameters; the get's
#                               statement prepared once per connection, the save's prepared anew
#                               on each use), pgbench as text.
#     Both use one table this run creates with herd's layout (<table>, <table>_fences, the sequence
#     <table>_version), named herd_p5_<time>_<pid> and dropped on exit; herd's row is herd||p5key
#     (keyPrefix appid, app id herd), pgbench's pgbench||p5key.
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
# the benchmark (the machine is shared). Embedded vs redb (REDB=1): ops/s ratio herd-embedded /
# redb per op and concurrency (goal ≥ GOAL_REDB = 0.8), each set run's flushes per write. PostgreSQL
# (PG=1): ops/s and latency of herd-postgres and pgbench per op and concurrency, and their ratio
# (reported; no goal). For these runs the "redis us/op" column is the PostgreSQL server's CPU time
# per operation (every postgres process, exited backends included: the postmaster's children's
# time; a shared server's other clients count too), and redb-direct's own CPU per operation stands
# in the herd column.
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
#        REDB=1 (0: no redb-get / redb-set) GOAL_REDB=0.8 REDB_WARMUP=0 (seconds redb-direct
#        runs unmeasured after opening the file)
#        PG=1 (0: no herd-postgres / pgbench) PG_URL=postgres://postgres@127.0.0.1:5432/test
#        PG_MODE=simple (pgbench -M) PG_PRIME=1 (whole seconds of unmeasured load before each
#        herd-postgres run; 0: none)
#        HERD_CPU=1 LOAD_CPU=0 HERD_REV=<commit> CARGO_TARGET_DIR HERD_BIN=<path: that herd binary, no build>
#        HERD_BENCH_CACHE=/tmp/herd-bench (HERD_REV, CARGO_TARGET_DIR: see build_herd in bench/lib.sh;
#        redb-direct is built with build_loadgen into $HERD_BENCH_CACHE/loadgen-target)
#   RESULT lines: P5, P5-embedded, P5-group-commit, and with REDB=1
#        P5-embedded-vs-redb op=get|set conns=<n> herd_ops= redb_ops= ratio= goal=0.8 met|missed
#        with PG=1  P5-postgres op=get|set conns=<n> herd_ops= pgbench_ops= ratio= (reported)
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
REDB=${REDB:-1}                     # 1: redb-get / redb-set (redb used directly) beside the embedded store
GOAL_REDB=${GOAL_REDB:-0.8}         # P5 goal: herd-embedded ops/s ≥ this × redb's, per op and concurrency
REDB_WARMUP=${REDB_WARMUP:-0}       # seconds redb-direct runs unmeasured after opening the file
PG=${PG:-1}                         # 1: herd-postgres-* / pgbench-* at PG_URL
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_MODE=${PG_MODE:-simple}          # pgbench -M: simple, extended or prepared
PG_PRIME=${PG_PRIME:-1}             # whole seconds of unmeasured load that fill a fresh herd's pool
read -ra CONNS_LIST <<<"$CONNS"

# CPU budget: herd alone on HERD_CPU (its tokio runtime sizes itself from the affinity: 1 worker;
# the embedded store's writer thread and the blocking pool that runs its reads inherit the same
# affinity); the load generators (wrk -t1, redis-benchmark, single-threaded) on LOAD_CPU.
# The shared redis-server is a system service used by others and is not pinned; a private one
# (REDIS_PRIVATE=1) runs on HERD_CPU beside herd, so both paths cross between the CPUs alike.
# redb-direct, the server side of redb-get / redb-set, runs on HERD_CPU as herd does; pgbench
# (-j 1, one thread) on LOAD_CPU; the PostgreSQL server is a shared system service, not pinned.
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

if [ -n "${HERD_BIN:-}" ]; then
  HERD=$HERD_BIN SRC=$BENCH_ROOT   # a binary built elsewhere (e.g. a debug build for a quick check)
  [ -x "$HERD" ] || FAILED[herd]="HERD_BIN=$HERD_BIN is not an executable"
elif ! build_herd herd || [ ! -x "$HERD" ]; then
  cat "$WORK/cargo.log"
  FAILED[herd]="cargo build failed"
fi
REDB_DIRECT=""
if [ "$REDB" = 1 ]; then
  if build_loadgen && [ -x "$(dirname "$LOADGEN")/redb-direct" ]; then
    REDB_DIRECT="$(dirname "$LOADGEN")/redb-direct"
  else
    tail -20 "$WORK/loadgen-cargo.log"
    FAILED[redb]="cargo build of bench/loadgen (redb-direct) failed"
  fi
fi
PGBENCH=""
if [ "$PG" = 1 ]; then
  # Debian: psql is in postgresql-client-<v>; pgbench in postgresql-<v> (postgresql-contrib) up to
  # 15, in postgresql-client-<v> from 16. /usr/bin/pgbench is postgresql-common's wrapper.
  find_pgbench() {
    local f
    PGBENCH=$(command -v pgbench || true)
    if [ -z "$PGBENCH" ]; then for f in /usr/lib/postgresql/*/bin/pgbench; do if [ -x "$f" ]; then PGBENCH=$f; fi; done; fi
    command -v psql >/dev/null && [ -n "$PGBENCH" ]
  }
  if ! find_pgbench; then
    apt_install postgresql-client postgresql-contrib || tail -5 "$WORK/apt.log"
    find_pgbench || FAILED[pg]="cannot install psql and pgbench (postgresql-client, postgresql-contrib)"
  fi
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
KEY_STORED="herd||p5key"                 # ... its embedded and PostgreSQL ones (keyPrefix appid, app id herd)
KEY_PG_DIRECT="pgbench||p5key"           # pgbench's row, beside herd's in the same table
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

# --- PostgreSQL ----------------------------------------------------------------------------------
PG_TABLE=${RUN_PREFIX//-/_}   # herd_p5_<time>_<pid>: herd's state table and pgbench's, this run's own
PG_CREATED=0 PG_PM_PID=""
VALUE_HEX=$(printf %s "$VALUE" | od -An -tx1 | tr -d ' \n')
pq() { on_cpu "$LOAD_CPU" psql "$PG_URL" -XAtq -v ON_ERROR_STOP=1 "$@"; }
pg_value() { pq -c "SELECT convert_from(value, 'UTF8') FROM $PG_TABLE WHERE key = '$1'" 2>/dev/null || true; }
pg_version() { pq -c "SELECT version FROM $PG_TABLE WHERE key = '$1'" 2>/dev/null || true; }
pg_drawn() { pq -c "SELECT last_value FROM ${PG_TABLE}_version" 2>/dev/null || true; }   # the sequence's last number

# CPU ticks of the PostgreSQL server when it runs on this machine: the postmaster's own and those
# of its children, live (each backend) and exited (the postmaster's cutime + cstime), so the
# backends of connections closed during a run count too.
pg_ticks() {
  [ -n "$PG_PM_PID" ] || { echo 0; return 0; }
  local t k
  t=$(cut -d')' -f2- "/proc/$PG_PM_PID/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }')
  for k in $(children_of "$PG_PM_PID"); do t=$(( ${t:-0} + $(cpu_ticks "$k") )); done
  echo "${t:-0}"
}

# The tables herd's PostgreSQL backend creates (crates/herd-state/src/postgres.rs, `connect`: herd
# finds them and creates nothing), and pgbench's row.
create_pg_table() {
  PG_CREATED=1
  pq <<EOF
CREATE TABLE $PG_TABLE (key text PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL, expires_at timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ${PG_TABLE}_expires ON $PG_TABLE (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE ${PG_TABLE}_fences (key text PRIMARY KEY, token bigint NOT NULL);
CREATE SEQUENCE ${PG_TABLE}_version;
INSERT INTO $PG_TABLE (key, value, version) VALUES ('$KEY_PG_DIRECT', '\\x$VALUE_HEX', nextval('${PG_TABLE}_version'));
EOF
}
drop_pg_table() {
  [ "$PG_CREATED" = 1 ] || return 0
  stop_pg_herd
  if pq -c "SET lock_timeout = '10s'" -c "DROP TABLE IF EXISTS $PG_TABLE, ${PG_TABLE}_fences" \
    -c "DROP SEQUENCE IF EXISTS ${PG_TABLE}_version" >/dev/null 2>&1; then
    say "dropped PostgreSQL tables $PG_TABLE, ${PG_TABLE}_fences and sequence ${PG_TABLE}_version"
  else
    say "WARNING: could not drop PostgreSQL tables $PG_TABLE, ${PG_TABLE}_fences, sequence ${PG_TABLE}_version"
  fi
}

# pgbench's scripts: the statements of herd's Sql::new for a get (`get`) and for a plain save of a
# key that exists (`transact`: BEGIN, `lock_row`, `update` with no TTL, COMMIT), as literals.
write_pg_scripts() {
  local live="(expires_at IS NULL OR expires_at > now())"
  printf '%s\n' "SELECT value, version, expires_at FROM $PG_TABLE WHERE key = '$KEY_PG_DIRECT' AND $live;" >"$WORK/pg-get.sql"
  printf '%s\n' "BEGIN;" \
    "SELECT version, $live FROM $PG_TABLE WHERE key = '$KEY_PG_DIRECT' FOR UPDATE;" \
    "UPDATE $PG_TABLE SET value = '\\x$VALUE_HEX', version = nextval('${PG_TABLE}_version'), expires_at = CASE WHEN 0::bigint > 0 THEN now() + 0::bigint * interval '1 millisecond' END, updated_at = now() WHERE key = '$KEY_PG_DIRECT';" \
    "COMMIT;" >"$WORK/pg-set.sql"
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
  wait_outbound "$API_PORT" "$HERD_DIR"
}

wait_outbound() { # api_port herd_dir: polls until /v1.0/healthz/outbound answers 204 (components connected)
  local i code
  for ((i = 0; i < 100; i++)); do
    code=$(http_code "http://127.0.0.1:$1/v1.0/healthz/outbound")
    [ "$code" = 204 ] && return 0
    sleep 0.1
  done
  echo "herd: components not connected (healthz/outbound answers ${code:-nothing})"; cat "$WORK/body" 2>/dev/null; echo
  tail -5 "$2/.herd/herd.log" 2>/dev/null
  return 1
}

# start_pg_herd pool: herd with the one component postgres (state.postgresql, maxConns = pool) in
# its own data dir, pinned to HERD_CPU; sets PG_HERD_PID. Stopped with stop_pg_herd after each run,
# so its pooled connections are closed before pgbench opens its own.
PG_API_PORT="" PG_ADMIN_PORT="" PG_HERD_DIR="" PG_HERD_PID="" PG_LOG_MARK=0
start_pg_herd() {
  local HERD_PID   # herd_up sets it: the main herd's stays as it is
  if [ -z "$PG_HERD_DIR" ]; then
    PG_HERD_DIR=$(mktemp -d "$WORK/herd-pg.XXXX"); free_port PG_API_PORT; free_port PG_ADMIN_PORT
  fi
  cat >"$PG_HERD_DIR/herd.toml" <<EOF
data_dir = "$PG_HERD_DIR/.herd"

[admin]
listen = "127.0.0.1:$PG_ADMIN_PORT"

[api]
listen = "127.0.0.1:$PG_API_PORT"

[[component]]
name = "postgres"
type = "state.postgresql"
metadata = { connectionString = "$PG_URL", tableName = "$PG_TABLE", maxConns = "$1" }
EOF
  PG_LOG_MARK=$(stat -c %s "$PG_HERD_DIR/.herd/herd.log" 2>/dev/null || echo 0)
  herd_up "$PG_HERD_DIR/herd.toml" "$HERD_CPU" || return 1
  PG_HERD_PID=$HERD_PID
  wait_outbound "$PG_API_PORT" "$PG_HERD_DIR"
}
stop_pg_herd() { # its WARN/ERROR lines of this start go to herd-warnings.txt
  [ -n "$PG_HERD_DIR" ] && pid_alive "$PG_HERD_PID" || return 0
  stop_herd_cfg "$PG_HERD_DIR/herd.toml"
  tail -c +$((PG_LOG_MARK + 1)) "$PG_HERD_DIR/.herd/herd.log" 2>/dev/null | grep -E ' (WARN|ERROR) ' | head -3 >>"$WORK/herd-warnings.txt" || true
  PG_HERD_PID=""
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
  if [ "$1" = postgres ] && [ "$(pg_value "$KEY_STORED")" != "$VALUE" ]; then
    echo "the value is not in PostgreSQL's $PG_TABLE under $KEY_STORED (the table this run drops)"; return 1
  fi
  echo "etag $etag"
}
pg_herd_serves() { # herd_serves postgres, on a herd of its own started for it
  local rc=0
  if start_pg_herd 1; then local API_PORT=$PG_API_PORT; herd_serves postgres || rc=1; else rc=1; fi
  stop_pg_herd
  return "$rc"
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

# The server whose CPU time the "redis us/op" figures count: redis (the default), or pg (the
# PostgreSQL runs set it for their duration).
SERVER=redis
server_ticks() {
  case $SERVER in
    pg) pg_ticks ;;
    *) if [ -n "$REDIS_PID" ]; then cpu_ticks "$REDIS_PID"; else echo 0; fi ;;
  esac
}
server_seen() { if [ "$SERVER" = pg ]; then [ -n "$PG_PM_PID" ]; else [ -n "$REDIS_PID" ]; fi; }

# R_OUT: the share of the machine's CPU (all CPUs) busy with work other than herd, Redis and this
# script's own processes during the run (the shared machine's outside load); R_STEAL: stolen by the
# hypervisor.
measure_begin() {
  M_T0=$EPOCHREALTIME
  M_CPU0=$(cpu_snap); M_FL0=$(disk_flushes); M_SYS0=$(sys_snap); M_CH0=$(children_ticks)
  M_H0=$(cpu_ticks "$HERD_PID"); M_R0=$(server_ticks)
  return 0
}
measure_end() { # ops
  local cpu1 n=$1 h r
  cpu1=$(cpu_snap)
  R_CPU="cpu$HERD_CPU $(cpu_busy "$M_CPU0" "$cpu1" "$HERD_CPU")% cpu$LOAD_CPU $(cpu_busy "$M_CPU0" "$cpu1" "$LOAD_CPU")%"
  read -r R_FLUSH R_FLMS < <(awk -v a="$M_FL0" -v b="$(disk_flushes)" -v n="$n" 'BEGIN{
    split(a, x, " "); split(b, y, " "); f = y[1] - x[1]
    printf "%s %s\n", (n > 0 ? sprintf("%.3f", f / n) : "n/a"), (f > 0 ? sprintf("%.1f", (y[2] - x[2]) / f) : "n/a") }')
  h=$(( $(cpu_ticks "$HERD_PID") - M_H0 )); r=$(( $(server_ticks) - M_R0 ))
  R_HCPU=$(per_op "$h" "$n" "$TICK_US")
  R_HSHARE=$(awk -v t0="$M_T0" -v t1="$EPOCHREALTIME" -v h="$h" -v u="$TICK_US" 'BEGIN{ d = (t1 - t0) * 1e6; printf "%.0f", (d > 0 ? 100 * h * u / d : 0) }')
  R_RCPU=n/a; server_seen && R_RCPU=$(per_op "$r" "$n" "$TICK_US")
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
  # PostgreSQL: herd's and pgbench's rows draw from one sequence, so p5key's ETag may lag behind
  # numbers pgbench drew since; count from the sequence's position (herd alone draws during the run).
  [ "$op" = set ] && [ "$store" = postgres ] && e0=$(pg_drawn)
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
    # the number of 204s, and (embedded, postgres: herd is the only writer while it runs) by at
    # most that plus the saves still in flight when wrk stopped (one per connection).
    e1=$(etag_of "$store")
    if [[ $e0 =~ ^[0-9]+$ && $e1 =~ ^[0-9]+$ ]]; then
      local moved=$((e1 - e0))
      R_NOTE="etag +$moved"; [ "$store" = redis ] && R_NOTE+=" (shared counter: at least the saves)"
      [ "$store" = postgres ] && R_NOTE+=" (past the sequence's last number before the run)"
      if [ "$moved" -lt "$W_OK" ] || { [ "$store" != redis ] && [ "$moved" -gt $((W_OK + conns)) ]; }; then
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

field_of() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }   # line key

# redb-direct (bench/loadgen): <conns> threads on REDB_FILE, pinned to HERD_CPU like herd; its own
# CPU time per operation stands in R_HCPU / R_HSHARE.
REDB_FILE=""
run_redb() { # op conns dur out
  local op=$1 conns=$2 dur=$3 out=$4 rc=0 pid line ops dus ticks
  measure_begin
  taskset -c "$HERD_CPU" "$REDB_DIRECT" --path "$REDB_FILE" --key "$KEY_STORED" --op "$op" --value "$VALUE" --workers "$conns" \
    --duration "$dur" --warmup "$REDB_WARMUP" >"$out" 2>&1 &
  pid=$!; KILL_PIDS+=("$pid")
  wait "$pid" || rc=$?; forget_pid "$pid"
  line=$(grep '^REDB ' "$out" | tail -1 || true)
  if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
    R_REQ=0 R_ERR=1; echo "redb-direct exit $rc: $(grep -v '^REDB ' "$out" | head -2 | tr '\n' ' ')" >>"$out.why"; return 1
  fi
  ops=$(field_of "$line" ops) dus=$(field_of "$line" duration_us) ticks=$(field_of "$line" cpu_ticks)
  measure_end "$ops"
  R_RPS=$(awk -v n="$ops" -v d="$dus" 'BEGIN{ printf "%.0f", (d > 0 ? n / (d / 1e6) : 0) }')
  R_P50=$(us_to_ms "$(field_of "$line" p50_us)") R_P99=$(us_to_ms "$(field_of "$line" p99_us)")
  R_HCPU=$(per_op "$ticks" "$ops" "$TICK_US")
  R_HSHARE=$(awk -v t="$ticks" -v u="$TICK_US" -v d="$dus" 'BEGIN{ printf "%.0f", (d > 0 ? 100 * t * u / d : 0) }')
  R_REQ=$ops R_ERR=$(field_of "$line" errors) R_SRV=n/a R_SLOW=n/a R_SRVN=n/a R_NOTE=""
  [ "$ops" -gt 0 ]
}
run_redb_get() { run_redb get "$@"; }
run_redb_set() { run_redb set "$@"; }

# herd-postgres: a herd of its own with maxConns = conns, started for the run (its pool filled by
# PG_PRIME seconds of the same load, unmeasured) and stopped after it.
run_herd_postgres() { # op conns dur out
  local op=$1 conns=$2 dur=$3 out=$4 rc=0 url lua
  if ! start_pg_herd "$conns" >"$out.start" 2>&1; then
    cp "$out.start" "$out.why"; stop_pg_herd; return 1
  fi
  local API_PORT=$PG_API_PORT ADMIN_PORT=$PG_ADMIN_PORT HERD_PID=$PG_HERD_PID SERVER=pg
  url="http://127.0.0.1:$API_PORT/v1.0/state/postgres"; lua="$WORK/set.lua"
  [ "$op" = get ] && { url+="/p5key"; lua="$WORK/get.lua"; }
  if [ "$PG_PRIME" != 0 ]; then
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${PG_PRIME}s" -s "$lua" "$url" >"$out.prime" 2>&1 || true
  fi
  run_wrk_state postgres "$op" "$conns" "$dur" "$out" || rc=1
  pid_alive "$PG_HERD_PID" || { echo "herd (postgres) is gone after the run" >>"$out.why"; rc=1; }
  stop_pg_herd
  return "$rc"
}
run_herd_postgres_get() { run_herd_postgres get "$@"; }
run_herd_postgres_set() { run_herd_postgres set "$@"; }

# pgbench -n -M PG_MODE -c <conns> -j 1 -T <dur> on LOAD_CPU, latencies from its per-transaction
# log (-l). A client that fails aborts the run (pgbench exits non-zero). After a set run the row's
# version (every UPDATE draws it from the sequence; they queue on the row's lock, so the last
# commit holds the highest number) must be past the sequence's position before the run by at least
# the transactions pgbench counted and at most that plus one in flight per client (pgbench alone
# draws during its run), and the row holds the value.
run_pgbench() { # op conns dur out
  local op=$1 conns=$2 dur=$3 out=$4 rc=0 pid n failed v0="" v1 SERVER=pg
  [ "$op" = set ] && v0=$(pg_drawn)
  measure_begin
  taskset -c "$LOAD_CPU" "$PGBENCH" -n -M "$PG_MODE" -c "$conns" -j 1 -T "$dur" -f "$WORK/pg-$op.sql" \
    -l --log-prefix="$out.log" "$PG_URL" >"$out" 2>&1 &
  pid=$!; KILL_PIDS+=("$pid")
  wait "$pid" || rc=$?; forget_pid "$pid"
  n=$(awk -F': *' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$out")
  failed=$(awk -F': *' '/^number of failed transactions/ { print $2 + 0 }' "$out")
  if [ "$rc" -ne 0 ] || [ -z "$n" ] || grep -qiE 'abort|error' "$out"; then
    R_REQ=0 R_ERR=1; rm -f "$out.log".*
    echo "pgbench exit $rc: $(grep -iE 'abort|error' "$out" | head -2 | tr '\n' ' ')" >>"$out.why"; return 1
  fi
  measure_end "$n"
  R_RPS=$(awk '/^tps = / { printf "%.0f", $3 }' "$out")
  read -r R_P50 R_P99 < <(awk '{ print $3 }' "$out.log".* | sort -n | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print "n/a n/a"; exit }
    i = int(NR * 0.5 + 0.5); j = int(NR * 0.99 + 0.5); if (i < 1) i = 1; if (j < 1) j = 1
    printf "%.3f %.3f\n", a[i] / 1000, a[j] / 1000 }')
  rm -f "$out.log".*
  R_REQ=$n R_ERR=${failed:-0} R_SRV=n/a R_SLOW=n/a R_SRVN=n/a R_NOTE=""
  if [ "$op" = set ]; then
    v1=$(pg_version "$KEY_PG_DIRECT")
    if [[ $v0 =~ ^[0-9]+$ && $v1 =~ ^[0-9]+$ ]]; then
      R_NOTE="version +$((v1 - v0)) (past the sequence's last number before the run)"
      if [ $((v1 - v0)) -lt "$n" ] || [ $((v1 - v0)) -gt $((n + conns)) ]; then
        R_NOTE+=" MISMATCH: $n transactions counted"; R_ERR=$((R_ERR + 1))
      fi
    else
      R_NOTE="version not numeric ('$v0' -> '$v1')"; R_ERR=$((R_ERR + 1))
    fi
    [ "$(pg_value "$KEY_PG_DIRECT")" = "$VALUE" ] || { R_NOTE+="; value not found after the run"; R_ERR=$((R_ERR + 1)); }
  fi
  [ "$n" -gt 0 ]
}
run_pgbench_get() { run_pgbench get "$@"; }
run_pgbench_set() { run_pgbench set "$@"; }

# --- start ---------------------------------------------------------------------------------------
CONTENDERS=(herd_redis_get herd_redis_set herd_embedded_get herd_embedded_set redis_get redis_set herd_healthz)
declare -A NAME=([herd_healthz]=herd-healthz [herd_redis_get]=herd-redis-get [herd_redis_set]=herd-redis-set
  [herd_embedded_get]=herd-embedded-get [herd_embedded_set]=herd-embedded-set
  [redis_get]=redis-get [redis_set]=redis-set [redis_hmget]=redis-hmget [redis_evalsha]=redis-evalsha
  [redb_get]=redb-get [redb_set]=redb-set [herd_postgres_get]=herd-postgres-get [herd_postgres_set]=herd-postgres-set
  [pgbench_get]=pgbench-get [pgbench_set]=pgbench-set)
own_cpu() { [[ $1 == herd_* || $1 == redb_* ]]; }   # contender: its server's CPU is in R_HCPU

say "herd P5 state benchmark — $(date -u)"
say "nproc=$(nproc); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2 || true); redis-benchmark $(redis-benchmark --version 2>/dev/null | awk '{print $2}' || true); Redis $REDIS_VERSION ($REDIS_PERSIST); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)${HERD_BIN:+ (HERD_BIN=$HERD_BIN)}"
say "CPU budget: herd (1 tokio worker; the embedded store's writer thread and blocking-pool readers inherit the affinity) pinned to CPU $HERD_CPU; the load generator (wrk -t1 / redis-benchmark, single-threaded) pinned to CPU $LOAD_CPU; Redis: $REDIS_DESC"
[ "$REDB" = 1 ] && say "CPU budget: redb-direct (the server side of redb-get / redb-set, all its threads) pinned to CPU $HERD_CPU like herd"
[ "$PG" = 1 ] && say "CPU budget: herd-postgres (its own herd per run) pinned to CPU $HERD_CPU; pgbench -j 1 pinned to CPU $LOAD_CPU; the PostgreSQL server at $PG_URL not pinned (a shared system service)"
say "load: per concurrency in {$CONNS}: wrk -t1 -c<n> -d${DURATION}s --latency, keep-alive / redis-benchmark -c<n> -P 1 -n <≈${DURATION}s of ops> --csv$([ "$REDB" = 1 ] && echo " / redb-direct --workers <n> --duration ${DURATION}")$([ "$PG" = 1 ] && echo " / pgbench -n -M $PG_MODE -c <n> -j 1 -T ${DURATION} (herd-postgres: maxConns <n>, ${PG_PRIME}s of unmeasured load first)"); 1 warm-up round (${WARMUP_DURATION}s) + $ROUNDS measured rounds; order rotating per round"
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
  for c in herd_healthz herd_redis_get herd_redis_set herd_embedded_get herd_embedded_set herd_postgres_get herd_postgres_set; do FAILED[$c]=${FAILED[herd]}; done
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
if [ "$REDB" = 1 ]; then
  CONTENDERS+=(redb_get redb_set)
  if [ -n "${FAILED[redb]:-}" ]; then
    FAILED[redb_get]=${FAILED[redb]} FAILED[redb_set]=${FAILED[redb]}
  else
    REDB_FILE="${HERD_DIR:-$WORK}/redb-direct/state.redb"; mkdir -p "$(dirname "$REDB_FILE")"
    say "redb-direct: redb $(awk '/^name = "redb"$/ { getline; gsub(/[^0-9.]/, ""); print }' "$BENCH_ROOT/bench/loadgen/Cargo.lock"), file $REDB_FILE ($(df -T "$(dirname "$REDB_FILE")" | awk 'NR == 2 {print $2 " on " $1}')), a thread per connection, one write transaction per set (Durability::Immediate), one read transaction per get"
    for op in set get; do
      if taskset -c "$HERD_CPU" "$REDB_DIRECT" --path "$REDB_FILE" --key "$KEY_STORED" --op "$op" --value "$VALUE" --workers 1 --duration 0.2 >"$WORK/redb-check.$op" 2>&1; then
        say "redb-direct $op: $(grep '^REDB ' "$WORK/redb-check.$op" | awk '{ print $4, $5 }') in 0.2 s, every value as written"
      else
        FAILED[redb_$op]="does not serve before load: $(tr '\n' ' ' <"$WORK/redb-check.$op" | head -c 300)"
      fi
    done
  fi
fi
if [ "$PG" = 1 ]; then
  CONTENDERS+=(herd_postgres_get herd_postgres_set pgbench_get pgbench_set)
  CLEANUP_HOOKS+=(drop_pg_table)
  if [ -n "${FAILED[pg]:-}" ]; then :
  elif ! pq -c 'SELECT 1' >/dev/null 2>"$WORK/pg.err"; then
    FAILED[pg]="no PostgreSQL answers at $PG_URL: $(head -2 "$WORK/pg.err" | tr '\n' ' ')"
  elif ! create_pg_table >/dev/null 2>"$WORK/pg.err"; then
    FAILED[pg]="cannot create the table $PG_TABLE: $(head -2 "$WORK/pg.err" | tr '\n' ' ')"
  else
    write_pg_scripts
    pm=$(head -1 "$(pq -c 'SHOW data_directory' 2>/dev/null || true)/postmaster.pid" 2>/dev/null || true)
    if [[ $pm =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pm/comm" 2>/dev/null)" = postgres ]; then PG_PM_PID=$pm; fi
    say "PostgreSQL: $(pq -c 'SELECT version()' | cut -d, -f1) at $PG_URL ($(pq -c "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name IN ('max_connections', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay')")); postmaster ${PG_PM_PID:-not on this machine (no server CPU figures)}; $($PGBENCH --version); table $PG_TABLE (herd: key $KEY_STORED, pgbench: key $KEY_PG_DIRECT)"
    for op in get set; do
      if ! on_cpu "$LOAD_CPU" "$PGBENCH" -n -M "$PG_MODE" -c 1 -j 1 -t 1 -f "$WORK/pg-$op.sql" "$PG_URL" >"$WORK/pg-check.$op" 2>&1 ||
         grep -qiE 'abort|error' "$WORK/pg-check.$op"; then
        FAILED[pgbench_$op]="does not run before load: $(grep -iE 'abort|error' "$WORK/pg-check.$op" | head -2 | tr '\n' ' ')"
      fi
    done
    if [ "$(pg_value "$KEY_PG_DIRECT")" != "$VALUE" ] || [ -z "$(pq -f "$WORK/pg-get.sql" 2>/dev/null)" ]; then
      FAILED[pgbench_get]="its SELECT does not find the value under $KEY_PG_DIRECT"; FAILED[pgbench_set]=${FAILED[pgbench_get]}
    else
      say "pgbench: one transaction of each script ran; its SELECT finds the value under $KEY_PG_DIRECT (version $(pg_version "$KEY_PG_DIRECT"))"
    fi
    if [ -z "${FAILED[herd]:-}" ]; then
      if seen=$(pg_herd_serves 2>&1); then say "herd postgres store (its own herd): save 204, get 200 with the value, $seen"
      else
        say "herd postgres store: FAILED before load: $seen"
        FAILED[herd_postgres_get]="does not serve before load: $seen"; FAILED[herd_postgres_set]=${FAILED[herd_postgres_get]}
      fi
    fi
  fi
  if [ -n "${FAILED[pg]:-}" ]; then
    for c in herd_postgres_get herd_postgres_set pgbench_get pgbench_set; do FAILED[$c]=${FAILED[pg]}; done
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
      say "$(printf '%-9s %-17s c%-3s %7s ops/s  p50 %7s ms  p99 %7s ms  answers %8s  errors %s  %s %5s us CPU/op (%s%% of a CPU)  %s %5s us CPU/op  flushes/op %5s (%s ms each)  herd handler mean %5s ms, %s of %s over 5 ms  (%s; outside load %s%%, steal %s%%)%s' \
        "$tag" "${NAME[$c]}" "$conns" "$R_RPS" "$R_P50" "$R_P99" "$R_REQ" "$R_ERR" "$([[ $c == redb_* ]] && echo redb || echo herd)" \
        "$(own_cpu "$c" && echo "$R_HCPU" || echo -)" "$(own_cpu "$c" && echo "$R_HSHARE" || echo -)" \
        "$([[ $c == *postgres* || $c == pgbench_* ]] && echo postgres || echo redis)" "$R_RCPU" "$R_FLUSH" "$R_FLMS" "$R_SRV" "$R_SLOW" "$R_SRVN" "$R_CPU" "$R_OUT" "$R_STEAL" "${R_NOTE:+; $R_NOTE}")"
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
if [ "$PG" = 1 ] && [ -z "${FAILED[herd_postgres_get]:-}" ]; then
  seen=$(pg_herd_serves 2>&1) || { FAILED[herd_postgres_get]="does not serve after the load: $seen"; FAILED[herd_postgres_set]=${FAILED[herd_postgres_get]}; }
fi
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
say "medians over $ROUNDS rounds (CPU budget: herd on CPU $HERD_CPU, load generator on CPU $LOAD_CPU, Redis $([ "$REDIS_CPU" = unpinned ] && echo unpinned || echo "on CPU $REDIS_CPU")); herd handler = herd's own mean time per request from herd_state_request_seconds (store call included, HTTP excluded), and how many handler times exceeded 5 ms (all rounds); answers and errors: all measured rounds (errors: also the warm-up); redb-* rows: redb-direct's own CPU in the herd column; herd-postgres-* and pgbench-* rows: the PostgreSQL server's CPU in the redis column"
printf '| %-17s | %5s | %8s | %7s | %7s | %15s | %14s | %18s | %11s | %16s | %10s | %12s |\n' contender conns "ops/s" "p50 ms" "p99 ms" "herd handler ms" "handler > 5 ms" "herd us/op (% CPU)" "redis us/op" "flushes/op (ms)" "answers" "errors"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------------- ------: ---------: --------: --------: ----------------: ---------------: -------------------: ------------: -----------------: -----------: -------------:
for c in "${CONTENDERS[@]}"; do
  for conns in "${CONNS_LIST[@]}"; do
    k="$c/$conns"
    printf '| %-17s | %5s | %8s | %7s | %7s | %15s | %14s | %18s | %11s | %16s | %10s | %12s |\n' "${NAME[$c]}" "$conns" "${M_RPS[$k]}" "${M_P50[$k]}" "${M_P99[$k]}" \
      "${M_SRV[$k]}" "${SLOW[$k]:-n/a}" "$(own_cpu "$c" && echo "${M_HCPU[$k]} (${M_HSHARE[$k]}%)" || echo -)" "${M_RCPU[$k]}" "${M_FLUSH[$k]} (${M_FLMS[$k]})" "${REQS[$k]:-n/a}" "${ERRS[$k]:-n/a}"
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

if [ "$REDB" = 1 ]; then
  say "herd's embedded store against redb used directly (medians): ops/s ratio herd-embedded / redb-direct (goal ≥ $GOAL_REDB), p50 ms, flushes per write"
  for conns in "${CONNS_LIST[@]}"; do
    say "c$conns: get ${M_RPS[herd_embedded_get/$conns]} / ${M_RPS[redb_get/$conns]} ops/s = $(ratio "${M_RPS[herd_embedded_get/$conns]}" "${M_RPS[redb_get/$conns]}"), p50 ${M_P50[herd_embedded_get/$conns]} / ${M_P50[redb_get/$conns]} ms; set ${M_RPS[herd_embedded_set/$conns]} / ${M_RPS[redb_set/$conns]} ops/s = $(ratio "${M_RPS[herd_embedded_set/$conns]}" "${M_RPS[redb_set/$conns]}"), p50 ${M_P50[herd_embedded_set/$conns]} / ${M_P50[redb_set/$conns]} ms, flushes per write ${M_FLUSH[herd_embedded_set/$conns]} / ${M_FLUSH[redb_set/$conns]}"
  done
  echo
fi
if [ "$PG" = 1 ]; then
  say "herd's PostgreSQL backend against pgbench -M $PG_MODE (medians): ops/s, p50 / p99 ms, ratio herd-postgres / pgbench"
  for conns in "${CONNS_LIST[@]}"; do
    line="c$conns:"
    for op in get set; do
      line+=" $op ${M_RPS[herd_postgres_$op/$conns]} / ${M_RPS[pgbench_$op/$conns]} ops/s = $(ratio "${M_RPS[herd_postgres_$op/$conns]}" "${M_RPS[pgbench_$op/$conns]}"), p50 ${M_P50[herd_postgres_$op/$conns]} / ${M_P50[pgbench_$op/$conns]} ms, p99 ${M_P99[herd_postgres_$op/$conns]} / ${M_P99[pgbench_$op/$conns]} ms;"
    done
    say "${line%;}"
  done
  echo
fi

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
if [ "$REDB" = 1 ]; then
  for op in get set; do
    for conns in "${CONNS_LIST[@]}"; do
      r=$(ratio "${M_RPS[herd_embedded_$op/$conns]}" "${M_RPS[redb_$op/$conns]}")
      extra=""; [ "$op" = set ] && extra=" flushes_per_set=herd:${M_FLUSH[herd_embedded_set/$conns]},redb:${M_FLUSH[redb_set/$conns]}"
      result "P5-embedded-vs-redb op=$op conns=$conns herd_ops=${M_RPS[herd_embedded_$op/$conns]} redb_ops=${M_RPS[redb_$op/$conns]} ratio=$r goal=$GOAL_REDB $(meets "$r" '>=' "$GOAL_REDB") herd_p50_ms=${M_P50[herd_embedded_$op/$conns]} redb_p50_ms=${M_P50[redb_$op/$conns]}$extra cpu=herd:$HERD_CPU,redb:$HERD_CPU,load:$LOAD_CPU"
    done
  done
fi
if [ "$PG" = 1 ]; then
  for op in get set; do
    for conns in "${CONNS_LIST[@]}"; do
      result "P5-postgres op=$op conns=$conns herd_ops=${M_RPS[herd_postgres_$op/$conns]} pgbench_ops=${M_RPS[pgbench_$op/$conns]} ratio=$(ratio "${M_RPS[herd_postgres_$op/$conns]}" "${M_RPS[pgbench_$op/$conns]}") goal=reported herd_p50_ms=${M_P50[herd_postgres_$op/$conns]} pgbench_p50_ms=${M_P50[pgbench_$op/$conns]} herd_p99_ms=${M_P99[herd_postgres_$op/$conns]} pgbench_p99_ms=${M_P99[pgbench_$op/$conns]} pgbench_mode=$PG_MODE herd_pool=$conns cpu=herd:$HERD_CPU,load:$LOAD_CPU,postgres:unpinned"
    done
  done
fi
say "elapsed ${SECONDS}s"
exit "$status"
