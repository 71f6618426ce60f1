#!/usr/bin/env bash
# shellcheck disable=SC2317  # clean-up hooks are called indirectly
# bench/api-profile.sh — what one request through herd's sidecar API costs herd's CPU (P5, P2),
# counted in instructions and malloc calls by valgrind's callgrind, which stay stable on a busy
# machine where timings do not.
#
# herd (release build) runs under `valgrind --tool=callgrind` with `[api]`, a `state.embedded`
# and a `state.redis` component (keys under a prefix of this run) and one service, `echo`
# (`loadgen serve`). For each case, after a warm-up, the counters are zeroed
# (`callgrind_control -z`), `loadgen run` sends REQUESTS requests (RATE req/s over CONNS
# keep-alive connections) and the counters are dumped (`callgrind_control -d`); the dump's
# totals, less what herd spends idle over as long (measured first: the dashboard's sampler,
# timers), divided by the answered requests are the cost per request:
#   embedded-save  POST /v1.0/state/embedded        [{"key":"p5key","value":<~110 B JSON>}]
#   embedded-get   GET  /v1.0/state/embedded/p5key
#   redis-save     POST /v1.0/state/redis           the same body
#   redis-get      GET  /v1.0/state/redis/p5key
#   invoke         POST /v1.0/invoke/echo/method/echo  (1 KB of JSON) → the local app
# Printed per case: instructions and calls of malloc, calloc and realloc per request, and the
# functions with the most inclusive instructions (TOP of them, idle cost not taken out) per
# request.
#
# Usage: bash bench/api-profile.sh   (about 3–6 minutes; the dumps stay in $OUT_DIR)
#   env: HERD=<herd binary> (default: a release build of this tree), LOADGEN=<loadgen binary>
#        (default: built), REQUESTS=2000 RATE=400 CONNS=16 CASES="embedded-save ..." TOP=25
#        REDIS_HOST=127.0.0.1 REDIS_PORT=6379 OUT_DIR=/tmp/herd-api-profile HERD_REV
#        CARGO_TARGET_DIR HERD_BENCH_CACHE
set -euo pipefail

GIVEN_HERD=${HERD:-} GIVEN_LOADGEN=${LOADGEN:-}
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-2000}
RATE=${RATE:-400}
CONNS=${CONNS:-16}
CASES=${CASES:-"embedded-save embedded-get redis-save redis-get invoke"}
TOP=${TOP:-25}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
OUT_DIR=${OUT_DIR:-/tmp/herd-api-profile}

bench_init api-profile
need valgrind callgrind_annotate callgrind_control curl redis-cli
if [ -n "$GIVEN_HERD" ]; then
  HERD=$GIVEN_HERD
else
  build_herd herd || { cat "$WORK/cargo.log"; die "cargo build failed"; }
fi
[ -x "$HERD" ] || die "no herd binary at $HERD"
LOADGEN=$GIVEN_LOADGEN
if [ -z "$LOADGEN" ]; then
  build_loadgen || { cat "$WORK/loadgen-cargo.log"; die "cannot build bench/loadgen"; }
fi
[ -x "$LOADGEN" ] || die "no loadgen binary at $LOADGEN"
mkdir -p "$OUT_DIR"
OUT="$OUT_DIR/callgrind.out.$(date +%s)"

RUN_PREFIX="herd-api-profile-$(date +%s)-$$"
drop_keys() { redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern "$RUN_PREFIX*" |
  xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null 2>&1 || true; }
CLEANUP_HOOKS+=(drop_keys)

free_port API_PORT; free_port APP_PORT
DIR=$(mktemp -d "$WORK/herd.XXXX")
CFG="$DIR/herd.toml"
cat >"$CFG" <<EOF
data_dir = "$DIR/.herd"

[api]
listen = "127.0.0.1:$API_PORT"

[[component]]
name = "redis"
type = "state.redis"
metadata = { redisHost = "$REDIS_HOST:$REDIS_PORT", keyPrefix = "$RUN_PREFIX" }

[[component]]
name = "embedded"
type = "state.embedded"

[[service]]
name = "echo"
command = ["$LOADGEN", "serve"]
instances = 1
listen = "127.0.0.1:$APP_PORT"
EOF

HERD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$OUT" "$HERD" -c "$CFG" up >"$DIR/herd.out" 2>&1 &
VG_PID=$!; KILL_PIDS+=("$VG_PID")
stop_profiled() { pid_alive "$VG_PID" && { kill -TERM "$VG_PID" 2>/dev/null; wait_gone "$VG_PID" 60 || true; }; return 0; }
CLEANUP_HOOKS+=(stop_profiled)

code=
for ((i = 0; i < 600; i++)); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$API_PORT/v1.0/healthz/outbound" 2>/dev/null || true)
  [ "$code" = 204 ] && curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$APP_PORT/" && break
  sleep 0.2
done
[ "$code" = 204 ] || { cat "$DIR/herd.out"; die "herd did not start under valgrind"; }

VALUE='{"id":"p5","name":"herd state benchmark value","tags":["a","b","c"],"n":12345,"ok":true,"pad":"xxxxxxxxxxxx"}'
printf '[{"key":"p5key","value":%s}]' "$VALUE" >"$DIR/save.json"
API="http://127.0.0.1:$API_PORT"
SAVE=(--body-file "$DIR/save.json")
case_args() { # case: sets URL METHOD BODY (loadgen's body options) EXPECT
  case $1 in
    embedded-save) URL="$API/v1.0/state/embedded" METHOD=POST BODY=("${SAVE[@]}") EXPECT=204 ;;
    embedded-get) URL="$API/v1.0/state/embedded/p5key" METHOD=GET BODY=() EXPECT=200 ;;
    redis-save) URL="$API/v1.0/state/redis" METHOD=POST BODY=("${SAVE[@]}") EXPECT=204 ;;
    redis-get) URL="$API/v1.0/state/redis/p5key" METHOD=GET BODY=() EXPECT=200 ;;
    invoke) URL="$API/v1.0/invoke/echo/method/echo" METHOD=POST BODY=(--body-bytes 1024) EXPECT=200 ;;
    *) die "unknown case $1" ;;
  esac
}
load() { # requests rate out
  local duration
  duration=$(awk -v n="$1" -v r="$2" 'BEGIN{printf "%.2f", n / r}')
  "$LOADGEN" run --url "$URL" --method "$METHOD" "${BODY[@]}" --expect "$EXPECT" --rate "$2" \
    --conns "$CONNS" --duration "$duration" --warmup 0 --label "$c" >"$3" 2>&1
}

# calls_to dump regex: calls recorded in a callgrind dump to functions whose name matches regex
# (names may be compressed: "(id) name" defines an id, "(id)" alone refers to it).
calls_to() {
  awk -v want="$2" '
    /^c?fn=\(/ {
      id = $0; sub(/^c?fn=/, "", id); name = id; sub(/\).*/, ")", id); sub(/^\([0-9]+\) ?/, "", name)
      if (name != "") names[id] = name; else name = names[id]
      if ($0 ~ /^cfn=/) pending = (name ~ want)
      next
    }
    /^calls=/ { if (pending) { n = $0; sub(/^calls=/, "", n); split(n, a, " "); total += a[1] } pending = 0; next }
    END { print total + 0 }' "$1"
}
malloc_calls() { calls_to "$1" '^(malloc|calloc|realloc)$'; }
# inclusive_ir dump text: the inclusive instructions of the first function whose line holds text.
inclusive_ir() {
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    awk -v want="$2" 'index($0, want) && !found { c = $1; gsub(",", "", c); print c; found = 1 } END { if (!found) print 0 }'
}

dumps() { find "$OUT_DIR" -maxdepth 1 -name "${OUT##*/}.*" | wc -l; }
now() { date +%s.%N; }
# dump name: dumps the counters as name, waits for the file and prints its path.
dump() {
  local before i
  before=$(dumps)
  callgrind_control -d "$1" "$VG_PID" >/dev/null 2>&1
  for ((i = 0; i < 100; i++)); do [ "$(dumps)" -gt "$before" ] && break; sleep 0.1; done
  ls -t "$OUT".* | sed -n 1p
}
total_ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t + 0}'; }

say "herd: $HERD; $REQUESTS requests per case at $RATE req/s over $CONNS connections"
# What herd does without requests (the dashboard's sampler, timers), per second: taken out of
# every case in proportion to the case's length.
IDLE_S=$(awk -v n="$REQUESTS" -v r="$RATE" 'BEGIN{printf "%.2f", n / r}')
callgrind_control -z "$VG_PID" >/dev/null 2>&1
t0=$(now); sleep "$IDLE_S"; d=$(dump idle); t1=$(now)
IDLE_IR=$(awk -v t="$(total_ir "$d")" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" 'BEGIN{print t / s}')
IDLE_MALLOC=$(awk -v t="$(malloc_calls "$d")" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" 'BEGIN{print t / s}')
cp "$d" "$OUT_DIR/idle.callgrind"
say "idle: $(printf '%.0f' "$IDLE_IR") Ir/s, $(printf '%.1f' "$IDLE_MALLOC") malloc calls/s (subtracted below)"
printf '%-14s %10s %14s %12s %10s\n' case answered Ir/request malloc/req statuses
for c in $CASES; do
  case_args "$c"
  load $((RATE / 2)) "$RATE" "$DIR/warm.$c" || { cat "$DIR/warm.$c"; die "$c: warm-up failed"; }
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  t0=$(now)
  load "$REQUESTS" "$RATE" "$DIR/run.$c" || { cat "$DIR/run.$c"; die "$c: loadgen failed"; }
  d=$(dump "$c"); t1=$(now)
  parse_loadgen "$DIR/run.$c" || { cat "$DIR/run.$c"; die "$c: no LOADGEN line"; }
  [ "$L_OK" -gt 0 ] || die "$c: no good answer ($L_STATUSES)"
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')
  total=$(total_ir "$d")
  mallocs=$(malloc_calls "$d")
  cp "$d" "$OUT_DIR/$c.callgrind"
  printf '%-14s %10s %14.0f %12.1f %10s\n' "$c" "$L_OK" \
    "$(awk -v t="$total" -v i="$IDLE_IR" -v s="$secs" -v n="$L_OK" 'BEGIN{print (t - i * s) / n}')" \
    "$(awk -v t="$mallocs" -v i="$IDLE_MALLOC" -v s="$secs" -v n="$L_OK" 'BEGIN{print (t - i * s) / n}')" "$L_STATUSES"
  callgrind_annotate --inclusive=yes --threshold=99 "$d" 2>/dev/null >"$OUT_DIR/$c.inclusive" || true
  if [ "$c" = embedded-save ]; then
    # The writer thread's commits group concurrent saves, so their share depends on how the
    # requests happened to bunch: shown apart.
    commits=$(calls_to "$d" 'WriteTransaction::commit_with$')
    batch=$(inclusive_ir "$d" 'herd_state::embedded::commit::run_batch [')
    EMBEDDED_NOTE="embedded-save: $commits commits ($(awk -v c="$commits" -v n="$L_OK" 'BEGIN{printf "%.2f", n / (c ? c : 1)}') saves per commit), the writer's batches $(awk -v b="$batch" -v n="$L_OK" 'BEGIN{printf "%.0f", b / n}') Ir per save; the rest $(awk -v t="$total" -v b="$batch" -v i="$IDLE_IR" -v s="$secs" -v n="$L_OK" 'BEGIN{printf "%.0f", (t - b - i * s) / n}') Ir per save"
  fi
done
[ -z "${EMBEDDED_NOTE:-}" ] || say "$EMBEDDED_NOTE"
echo
for c in $CASES; do
  say "$c: the top $TOP functions by inclusive instructions (Ir, % of total, Ir per request)"
  case_args "$c"; parse_loadgen "$DIR/run.$c"
  awk -v n="$L_OK" -v top="$TOP" '/^ *[0-9,]+ \(/ && k++ < top { c = $1; gsub(",", "", c); printf "%14s %8s %10.0f  %s\n", $1, $2, c / n, substr($0, index($0, $3)) }' \
    "$OUT_DIR/$c.inclusive"
  echo
done
say "dumps: $OUT_DIR/<case>.callgrind"
"$HERD" -c "$CFG" down >/dev/null 2>&1 || kill -TERM "$VG_PID"
wait_gone "$VG_PID" 120 || true
forget_pid "$VG_PID"
