#!/usr/bin/env bash
# bench/grpc.sh — beside P5 (bench/state.sh): state get/set over Dapr's gRPC API against the HTTP
# API and against Redis used directly, same concurrency, ratios printed.
#
# One herd (`herd up -d`, no services, `[api]` with `grpc_listen`, one state.redis component whose
# keyPrefix is this run's prefix) pinned to HERD_CPU; the load generators on LOAD_CPU:
#   grpc-get   h2load (h2c, one stream per connection) → /dapr.proto.runtime.v1.Dapr/GetState
#   grpc-set   h2load → SaveState of one item (the same ~110 B value)
#   http-get   h2load --h1 → GET  /v1.0/state/redis/p5key
#   http-set   h2load --h1 → POST /v1.0/state/redis [{"key":"p5key","value":<value>}]
#   redis-get  redis-benchmark -P 1 → GET of a key holding the same value
#   redis-set  redis-benchmark -P 1 → SET of it
# h2load sees gRPC errors as HTTP 200 (the status is a trailer), so every herd run is checked
# against herd's own herd_state_requests_total (admin listener): the store calls that succeeded
# must equal the requests h2load counted, and none may fail.
#
# One warm-up round, then ROUNDS measured rounds; per concurrency every contender runs once per
# round, the order rotating. Medians: ops/s and mean latency per contender, ratios gRPC/HTTP and
# gRPC/Redis; the goal checked is gRPC ops/s ≥ GOAL_VS_HTTP × the HTTP API's (a second front end
# should cost no more than the first). The numbers are only comparable within one run.
#
# Usage: bash bench/grpc.sh
#   env: ROUNDS=3 DURATION=4 CONNS="1 16 64" GOAL_VS_HTTP=0.9 REDIS_HOST=127.0.0.1 REDIS_PORT=6379 HERD_CPU=1
#        LOAD_CPU=0 HERD_REV CARGO_TARGET_DIR HERD_BENCH_CACHE (see build_herd in bench/lib.sh)
#        HERD_BIN=<path>: measure that herd binary instead of building one
# Exit: 0 when every contender ran and answered correctly, 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
CONNS=${CONNS:-"1 16 64"}
GOAL_VS_HTTP=${GOAL_VS_HTTP:-0.9}   # gRPC ops/s at least this share of the HTTP API's
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
read -ra CONNS_LIST <<<"$CONNS"
if [ "$(nproc)" -ge 2 ]; then HERD_CPU=${HERD_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
else HERD_CPU=${HERD_CPU:-0}; LOAD_CPU=${LOAD_CPU:-0}; fi

bench_init grpc
RUN_PREFIX="herd-p5g-$(date +%s)-$$"

need curl taskset awk python3
command -v h2load >/dev/null || apt_install nghttp2-client || { tail -5 "$WORK/apt.log"; die "cannot install h2load (nghttp2-client)"; }
if ! command -v redis-benchmark >/dev/null || ! command -v redis-cli >/dev/null; then
  apt_install redis-tools || die "cannot install redis-tools"
fi
rcli() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"; }
rcli ping 2>/dev/null | grep -q PONG || die "no Redis answers at $REDIS_HOST:$REDIS_PORT"
if [ -n "${HERD_BIN:-}" ]; then
  HERD=$HERD_BIN   # a binary built elsewhere (e.g. a debug build when a release build is too slow)
else
  build_herd herd || { cat "$WORK/cargo.log"; die "cargo build failed"; }
fi

declare -A FAILED=()

# --- the requests ----------------------------------------------------------------------------
VALUE='{"user":"p5","n":123456,"tags":["alpha","beta","gamma"],"note":"state get/set benchmark value, about 110 B"}'
printf '[{"key":"p5key","value":%s}]' "$VALUE" >"$WORK/set.json"
# gRPC bodies: the 5-byte frame header (uncompressed, length) and the protobuf message.
python3 - "$WORK" "$VALUE" <<'EOF'
import struct, sys
work, value = sys.argv[1], sys.argv[2].encode()
def field(n, data):
    return bytes([n << 3 | 2]) + encode_len(len(data)) + data
def encode_len(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def frame(msg):
    return b"\0" + struct.pack(">I", len(msg)) + msg
get = field(1, b"redis") + field(2, b"p5key")                       # GetStateRequest
item = field(1, b"p5key") + field(2, value)                          # StateItem
save = field(1, b"redis") + field(2, item)                           # SaveStateRequest
open(f"{work}/get.grpc", "wb").write(frame(get))
open(f"{work}/set.grpc", "wb").write(frame(save))
EOF
KEY_DIRECT="$RUN_PREFIX:direct"
rcli set "$KEY_DIRECT" "$VALUE" >/dev/null
cleanup_keys() { rcli del "$KEY_DIRECT" "$RUN_PREFIX||p5key" >/dev/null 2>&1 || true; }
CLEANUP_HOOKS+=(cleanup_keys)

# --- herd --------------------------------------------------------------------------------------
free_port API_PORT; free_port GRPC_PORT; free_port ADMIN_PORT
HERD_DIR=$(mktemp -d "$WORK/herd.XXXX")
cat >"$HERD_DIR/herd.toml" <<EOF
data_dir = "$HERD_DIR/.herd"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[api]
listen = "127.0.0.1:$API_PORT"
grpc_listen = "127.0.0.1:$GRPC_PORT"

[[component]]
name = "redis"
type = "state.redis"
metadata = { redisHost = "$REDIS_HOST:$REDIS_PORT", keyPrefix = "$RUN_PREFIX" }
EOF
herd_up "$HERD_DIR/herd.toml" "$HERD_CPU" HERD_LOG=warn || die "herd did not start"
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/v1.0/healthz/outbound")" = 204 ] && break
  sleep 0.1
done
curl -sf -X POST -H 'content-type: application/json' --data-binary "@$WORK/set.json" \
  "http://127.0.0.1:$API_PORT/v1.0/state/redis" || die "herd: the first save failed"

# store calls of `op` that ended in `outcome`, per herd's metrics.
calls() { # op outcome
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v o="$1" -v r="$2" '
    /^herd_state_requests_total\{/ && index($0, "store=\"redis\"") && index($0, "op=\"" o "\"") &&
      index($0, "outcome=\"" r "\"") { n += $2 } END { printf "%d\n", n }'
}

# --- one run -----------------------------------------------------------------------------------
# run kind conns: prints "ops_per_s mean_ms" or records why it failed.
h2() { # conns url args...: h2load on LOAD_CPU, for DURATION s after a 1 s warm-up
  local c=$1 url=$2
  shift 2
  taskset -c "$LOAD_CPU" h2load -c "$c" -m 1 -t 1 --warm-up-time=1 -D "$DURATION" "$@" "$url" 2>&1
}
parse_h2() { # output file -> "rps succeeded bad mean_ms"
  awk '
    /^finished in/ { for (i = 1; i <= NF; i++) if ($i == "req/s,") rps = $(i - 1) }
    /^requests:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^succeeded/) ok = $(i - 1); if ($i ~ /^(failed|errored|timeout)/) bad += $(i - 1) } }
    /^time for request:/ { m = $(NF - 2); if (m ~ /us$/) { sub(/us$/, "", m); m /= 1000 } else if (m ~ /ms$/) { sub(/ms$/, "", m) } else { sub(/s$/, "", m); m *= 1000 } mean = m }
    END { printf "%s %d %d %.3f\n", rps, ok, bad, mean }' "$1"
}
run() { # kind conns
  local kind=$1 c=$2 out="$WORK/run.out" op before after errors_before errors_after rps ok bad mean
  case $kind in
    redis-*)
      local cmd=(GET "$KEY_DIRECT")
      [ "$kind" = redis-set ] && cmd=(SET "$KEY_DIRECT" "$VALUE")
      taskset -c "$LOAD_CPU" redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" -c "$c" -P 1 \
        -n $((c < 16 ? 40000 : 200000)) --csv "${cmd[@]}" >"$out" 2>&1 || { FAILED[$kind]="redis-benchmark failed"; return 0; }
      # CSV "test","rps","avg_latency_ms",...: counted from the end, as the test name (the
      # command) may itself hold "," in the JSON value.
      awk -F'","' 'NR == 2 { print $(NF - 6), $(NF - 5) }' "$out"
      return 0 ;;
  esac
  op=get; [[ $kind == *-set ]] && op=save
  before=$(calls "$op" ok); errors_before=$(calls "$op" error)
  case $kind in
    grpc-get) h2 "$c" "http://127.0.0.1:$GRPC_PORT/dapr.proto.runtime.v1.Dapr/GetState" \
                -H 'content-type: application/grpc' -H 'te: trailers' -d "$WORK/get.grpc" >"$out" ;;
    grpc-set) h2 "$c" "http://127.0.0.1:$GRPC_PORT/dapr.proto.runtime.v1.Dapr/SaveState" \
                -H 'content-type: application/grpc' -H 'te: trailers' -d "$WORK/set.grpc" >"$out" ;;
    http-get) h2 "$c" "http://127.0.0.1:$API_PORT/v1.0/state/redis/p5key" --h1 >"$out" ;;
    http-set) h2 "$c" "http://127.0.0.1:$API_PORT/v1.0/state/redis" --h1 \
                -H 'content-type: application/json' -d "$WORK/set.json" >"$out" ;;
  esac
  after=$(calls "$op" ok); errors_after=$(calls "$op" error)
  read -r rps ok bad mean < <(parse_h2 "$out")
  # h2load counts the warm-up's requests out; herd's counter has them all: at least as many.
  if [ "$bad" -gt 0 ] || [ "$ok" -eq 0 ] || [ $((after - before)) -lt "$ok" ] || [ "$errors_after" -ne "$errors_before" ]; then
    FAILED[$kind]="c=$c: h2load ok=$ok bad=$bad, herd ok calls +$((after - before)), errors +$((errors_after - errors_before))"
    tail -5 "$out" >&2
  fi
  echo "$rps $mean"
}

say "herd $(herd_rev_desc): pid $HERD_PID pinned to CPU $HERD_CPU; h2load / redis-benchmark on CPU $LOAD_CPU; nproc $(nproc)"
say "Redis $REDIS_HOST:$REDIS_PORT (shared, not pinned); value ${#VALUE} B; $ROUNDS rounds of ${DURATION} s after a warm-up"
KINDS=(grpc-get http-get redis-get grpc-set http-set redis-set)
declare -A OPS=() MEAN=()
for ((round = 0; round <= ROUNDS; round++)); do
  round_order "$round" "${KINDS[@]}"
  for c in "${CONNS_LIST[@]}"; do
    for kind in "${ORDER[@]}"; do
      run "$kind" "$c" >"$WORK/line"   # not in a subshell: FAILED must survive
      read -r ops mean < <(tail -1 "$WORK/line")
      [ "$round" -eq 0 ] && continue
      OPS[$kind.$c]+="$ops "; MEAN[$kind.$c]+="$mean "
      say "round $round c=$c $kind: $ops ops/s, mean $mean ms"
    done
  done
done

# --- figures -----------------------------------------------------------------------------------
printf '\n%-10s %6s %12s %10s\n' contender conns "ops/s" "mean ms"
for c in "${CONNS_LIST[@]}"; do
  for kind in "${KINDS[@]}"; do
    # shellcheck disable=SC2086
    printf '%-10s %6s %12s %10s\n' "$kind" "$c" "$(median_int ${OPS[$kind.$c]})" "$(median ${MEAN[$kind.$c]})"
  done
done
echo
for c in "${CONNS_LIST[@]}"; do
  for op in get set; do
    # shellcheck disable=SC2086
    g=$(median_int ${OPS[grpc-$op.$c]}); h=$(median_int ${OPS[http-$op.$c]}); r=$(median_int ${OPS[redis-$op.$c]})
    gh=$(ratio "$g" "$h")
    verdict=$(meets "$gh" ">=" "$GOAL_VS_HTTP"); [ -z "${FAILED[grpc-$op]:-}" ] || verdict=missed
    result "grpc-$op c=$c ops_s=$g http_ops_s=$h redis_ops_s=$r grpc/http=$gh grpc/redis=$(ratio "$g" "$r") goal=grpc/http>=$GOAL_VS_HTTP $verdict"
  done
done
status=0
for k in "${!FAILED[@]}"; do echo "FAILED $k: ${FAILED[$k]}"; status=1; done
exit "$status"
