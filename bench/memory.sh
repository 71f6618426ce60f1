#!/usr/bin/env bash
# bench/memory.sh — figure P6 of shared/design/BENCHMARKS.md.
#
# P6: herd's own memory (the herd process, not its instances): resident set (VmRSS) and its peak
#     (VmHWM) from /proc/<pid>/status, sampled every SAMPLE_MS, and a breakdown from
#     /proc/<pid>/status (RssAnon, RssFile) and /proc/<pid>/smaps (resident memory per mapping:
#     the herd binary's code, read-only data and data, shared libraries, heap, anonymous mappings).
#   idle     the hello demo's examples/hello/herd.toml as it is in the repository (two
#            `examples/hello` instances, HELLO_DELAY_MS=100, on one shared socket; `[api]` with
#            the default embedded `statestore` and `pubsub`), ports changed to free ones and the data dir
#            moved to a temporary one; one state save and read, then IDLE_SECONDS of samples.
#   loaded   the same plus what the load needs: a gateway listener with a route to `hello`, and a
#            subscriber service (`loadgen serve`, answering 200 to every delivery) with a
#            declarative subscription to `pubsub`/`orders`. Samples while idle (IDLE_SECONDS),
#            during LOAD_SECONDS at RATE req/s in total (fixed rate, open loop, bench/loadgen),
#            and IDLE_SECONDS after:
#              1/3  GET  /  through the gateway to hello (100 ms of simulated work per request)
#              1/6  POST /v1.0/state/statestore   save of a 1 KB JSON value (fsynced)
#              1/6  GET  /v1.0/state/statestore/k read of it
#              1/3  POST /v1.0/publish/pubsub/orders   1 KB JSON, fsynced, delivered to the
#                   subscriber (deliveries counted from herd's metrics on the admin listener)
#            Every answer must be the expected status (200, 204, 200, 204). Connections: GW_CONNS
#            to the gateway, API_CONNS for each of the three sidecar API generators (herd keeps a
#            read buffer and a task per connection, so the count shows in its memory).
#   Each phase runs once per value of ARENAS: `default` (glibc's own limit: 8 malloc arenas per
#   core) and each number given, as MALLOC_ARENA_MAX=<n> in herd's environment, to show what the
#   per-thread arenas cost.
#
# Figures: idle = median of the idle samples; loaded steady = median of the second half of the
# load samples; loaded peak = VmHWM at the end of the load; after = median of the samples after.
# Goals (shared/design/BENCHMARKS.md): idle ≤ 12 MB, loaded ≤ 30 MB (peak). 1 MB = 1024 kB here, as /proc counts.
# Dapr's published sidecar figures are 23–51 MB per 1000 req/s (docs.dapr.io, "Service invocation
# performance", as shared/design/BENCHMARKS.md quotes them); PM2's daemon is measured by
# bench/cluster.sh (P3).
#
# CPU: herd is not pinned (as the hello demo runs it: tokio sizes its worker pool to the cores),
# unless HERD_CPU is set; the load generators likewise (LOAD_CPU).
#
# Usage: bash bench/memory.sh
#   env: IDLE_SECONDS=10 LOAD_SECONDS=60 RATE=1000 BODY_BYTES=1024 SAMPLE_MS=500 ARENAS="default 2"
#        GW_CONNS=64 API_CONNS=16
#        HERD_CPU= LOAD_CPU= HERD_LOG=warn GOAL_IDLE_MB=12 GOAL_LOADED_MB=30 HERD_REV=<commit>
#        CARGO_TARGET_DIR HERD_BENCH_CACHE=/tmp/herd-bench (see build_herd in bench/lib.sh)
# Exit: 0 when herd ran and every request was answered as expected, 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IDLE_SECONDS=${IDLE_SECONDS:-10}
LOAD_SECONDS=${LOAD_SECONDS:-60}
RATE=${RATE:-1000}
BODY_BYTES=${BODY_BYTES:-1024}
SAMPLE_MS=${SAMPLE_MS:-500}
GW_CONNS=${GW_CONNS:-64}            # connections to the gateway (hello takes 100 ms: ~34 in flight)
API_CONNS=${API_CONNS:-16}          # connections of each sidecar API generator (3 of them)
ARENAS=${ARENAS:-"default 2"}
HERD_CPU=${HERD_CPU:-}
LOAD_CPU=${LOAD_CPU:-}
GOAL_IDLE_MB=${GOAL_IDLE_MB:-12}
GOAL_LOADED_MB=${GOAL_LOADED_MB:-30}
export HERD_LOG=${HERD_LOG:-warn}   # no per-request access log lines (they go to herd's log file)
CLI_CPU=$LOAD_CPU

bench_init memory
need curl taskset awk
if ! build_herd herd hello || [ ! -x "$HERD" ] || [ ! -x "$HELLO" ]; then cat "$WORK/cargo.log"; die "cannot build herd and hello"; fi
if ! build_loadgen; then cat "$WORK/loadgen-cargo.log"; die "cannot build bench/loadgen"; fi
HELLO_DEMO="$SRC/examples/hello/herd.toml"
[ -f "$HELLO_DEMO" ] || die "no examples/hello/herd.toml in $SRC"
status=0

# hello_config dir: the hello demo's herd.toml with free ports (its [admin] listener too, when
# it has one), the built hello by absolute path and the data dir inside dir; sets HELLO_PORT
# API_PORT ADMIN_PORT.
hello_config() {
  local dir=$1
  free_port HELLO_PORT; free_port API_PORT; free_port ADMIN_PORT
  mkdir -p "$dir"
  {
    echo "data_dir = \"$dir/.herd\""
    sed -e "s#\"../../target/release/hello\"#\"$HELLO\"#" -e "s#127.0.0.1:8000#127.0.0.1:$HELLO_PORT#" \
      -e "s#127.0.0.1:3500#127.0.0.1:$API_PORT#" -e "s#127.0.0.1:9901#127.0.0.1:$ADMIN_PORT#" "$HELLO_DEMO"
  } >"$dir/herd.toml"
  grep -q "127.0.0.1:$HELLO_PORT" "$dir/herd.toml" && grep -q "127.0.0.1:$API_PORT" "$dir/herd.toml" ||
    die "examples/hello/herd.toml no longer has listen 127.0.0.1:8000 and [api] 127.0.0.1:3500"
}

# loaded_config dir: hello_config plus a gateway listener routed to hello, an admin listener
# unless the hello demo has one (deliveries are counted from its metrics) and a subscriber
# service; sets GW_PORT too.
loaded_config() {
  local dir=$1
  hello_config "$dir"
  free_port GW_PORT
  grep -q '^\[admin\]' "$dir/herd.toml" || printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$ADMIN_PORT" >>"$dir/herd.toml"
  grep -q "^listen = \"127.0.0.1:$ADMIN_PORT\"" "$dir/herd.toml" ||
    die "examples/hello/herd.toml's [admin] listener is not on 127.0.0.1:9901"
  cat >>"$dir/herd.toml" <<EOF

[[gateway.listener]]
name = "public"
listen = "127.0.0.1:$GW_PORT"

[[route]]
service = "hello"

[[service]]
name = "sub"
command = ["$LOADGEN", "serve"]
instances = 1
port = "auto"

[[subscription]]
service = "sub"
pubsub = "pubsub"
topic = "orders"
route = "/orders"
EOF
}

# --- sampling ----------------------------------------------------------------------------------
# sample pid seconds file: appends "t_ms rss_kb hwm_kb" every SAMPLE_MS for that long.
sample() {
  local pid=$1 n i
  n=$(awk -v s="$2" -v ms="$SAMPLE_MS" 'BEGIN{printf "%d", s * 1000 / ms}')
  for ((i = 0; i < n; i++)); do
    echo "$(date +%s%3N) $(vmrss_kb "$pid") $(vmhwm_kb "$pid")" >>"$3"
    sleep "$(awk -v ms="$SAMPLE_MS" 'BEGIN{print ms / 1000}')"
  done
}
col_median() { # file column [from_fraction]: median of that column (from that share of the rows on)
  local vals
  vals=$(awk -v c="$2" -v f="${3:-0}" '{ v[NR] = $c } END { s = int(NR * f) + 1; for (i = s; i <= NR; i++) print v[i] }' "$1")
  # shellcheck disable=SC2086
  median $vals
}
col_max() { awk -v c="$2" 'BEGIN{m = 0} $c > m {m = $c} END{print m}' "$1"; }
mb() { awk -v k="$1" 'BEGIN{ if (k == "n/a" || k == "") print "n/a"; else printf "%.1f", k / 1024 }'; }

breakdown() { # pid: RssAnon/RssFile from status, then resident kB per kind of mapping (smaps)
  local p=$1 exe
  exe=$(readlink "/proc/$p/exe" 2>/dev/null || true)
  # minflt (field 10 of stat): page faults served without I/O. Fewer faults than resident pages
  # means each fault mapped several pages (the kernel maps the page cache around a fault).
  say "  $(awk '/^(RssAnon|RssFile|RssShmem):/ { printf "%s %.1f MB  ", $1, $2 / 1024 }' "/proc/$p/status")$(threads_of "$p") threads, $(cut -d')' -f2- "/proc/$p/stat" | awk '{print $8}') minor page faults so far"
  awk -v exe="$exe" '
    /^[0-9a-f]+-[0-9a-f]+ / { k = ($6 == exe) ? "herd binary " $2 : ($6 ~ /\.so/ ? "shared libraries" : ($6 == "" ? "anonymous mappings (malloc arenas, thread stacks)" : $6)); next }
    /^Rss:/ { r[k] += $2 }
    /^Anonymous:/ { a[k] += $2 }
    END { for (k in r) if (r[k] > 0) printf "%8.1f MB  %-50s (of it anonymous/dirty %.1f MB)\n", r[k] / 1024, k, a[k] / 1024 }' "/proc/$p/smaps" 2>/dev/null |
    sort -rn | sed 's/^/#     /'
}

# --- the load ----------------------------------------------------------------------------------
LOADGEN_PIDS=()
start_load() { # seconds: four fixed-rate generators in the background, outputs in $WORK/load-*.out
  local secs=$1 r3 r6
  r3=$(awk -v r="$RATE" 'BEGIN{printf "%.2f", r / 3}') r6=$(awk -v r="$RATE" 'BEGIN{printf "%.2f", r / 6}')
  LOADGEN_PIDS=()
  lg() { # name rate args...
    local name=$1 rate=$2; shift 2
    on_cpu "$LOAD_CPU" "$LOADGEN" run --rate "$rate" --duration "$secs" --label "$name" "$@" \
      >"$WORK/load-$name.out" 2>&1 &
    LOADGEN_PIDS+=($!); KILL_PIDS+=($!)
  }
  lg gateway "$r3" --conns "$GW_CONNS" --url "http://127.0.0.1:$GW_PORT/" --expect 200
  lg state-save "$r6" --conns "$API_CONNS" --url "http://127.0.0.1:$API_PORT/v1.0/state/statestore" --method POST \
    --body-file "$WORK/state-body.json" --expect 204
  lg state-get "$r6" --conns "$API_CONNS" --url "http://127.0.0.1:$API_PORT/v1.0/state/statestore/k" --expect 200
  lg publish "$r3" --conns "$API_CONNS" --url "http://127.0.0.1:$API_PORT/v1.0/publish/pubsub/orders" --method POST \
    --body-bytes "$BODY_BYTES" --expect 204
}
wait_load() { # -> 0 when every generator answered as expected; prints one line each
  local p ok=0 name
  for p in "${LOADGEN_PIDS[@]}"; do wait "$p" || true; forget_pid "$p"; done
  for name in gateway state-save state-get publish; do
    if ! parse_loadgen "$WORK/load-$name.out"; then say "  $name: loadgen failed: $(tail -2 "$WORK/load-$name.out")"; ok=1; continue; fi
    say "  $name: $L_RPS req/s, ok $L_OK, bad $L_BAD ($L_STATUSES), errors $L_ERR, p50 $L_P50 ms, p99 $L_P99 ms, late sends $L_LATE"
    if [ "$L_BAD" != 0 ] || [ "$L_ERR" != 0 ]; then ok=1; fi
  done
  return "$ok"
}
deliveries() { # successful deliveries to the subscriber, from herd's metrics
  curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null |
    awk '/^herd_pubsub_deliveries_total\{/ && /topic="orders"/ && /outcome="(success|ack|delivered)"/ { n += $2 } END { printf "%d\n", n }'
}

# --- runs --------------------------------------------------------------------------------------
value=$(awk -v n="$BODY_BYTES" 'BEGIN{ s = ""; while (length(s) < n - 10) s = s "x"; printf "{\"pad\":\"%s\"}", s }')
printf '[{"key":"k","value":%s}]' "$value" >"$WORK/state-body.json"

declare -A R_IDLE=() R_IDLE_HWM=() R_LIDLE=() R_PEAK=() R_STEADY=() R_AFTER=()
say "herd $(herd_rev_desc); herd $([ -n "$HERD_CPU" ] && echo "pinned to CPU $HERD_CPU" || echo "not pinned ($(nproc) CPUs)"); samples every $SAMPLE_MS ms"
for arena in $ARENAS; do
  envs=(); [ "$arena" = default ] || envs=("MALLOC_ARENA_MAX=$arena")
  tag="arena=$arena"

  # idle: the hello demo
  dir="$WORK/idle-$arena"; hello_config "$dir"
  herd_up "$dir/herd.toml" "$HERD_CPU" "${envs[@]}" || { status=1; say "FAILED $tag idle: herd did not start"; continue; }
  pid=$HERD_PID
  herd_wait_ready "$dir/herd.toml" 2 20 || { status=1; say "FAILED $tag idle: hello not ready"; }
  c1=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '[{"key":"k","value":{"n":1}}]' "http://127.0.0.1:$API_PORT/v1.0/state/statestore" || true)
  c2=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/v1.0/state/statestore/k" || true)
  [ "$c1" = 204 ] && [ "$c2" = 200 ] || { status=1; say "FAILED $tag idle: state save/read answered $c1/$c2"; }
  sample "$pid" "$IDLE_SECONDS" "$dir/idle.samples"
  R_IDLE[$arena]=$(col_median "$dir/idle.samples" 2) R_IDLE_HWM[$arena]=$(vmhwm_kb "$pid")
  say "$tag idle (hello demo, ${IDLE_SECONDS} s): VmRSS $(mb "${R_IDLE[$arena]}") MB, VmHWM $(mb "${R_IDLE_HWM[$arena]}") MB"
  breakdown "$pid"
  stop_herd_cfg "$dir/herd.toml"

  # loaded
  dir="$WORK/loaded-$arena"; loaded_config "$dir"
  herd_up "$dir/herd.toml" "$HERD_CPU" "${envs[@]}" || { status=1; say "FAILED $tag loaded: herd did not start"; continue; }
  pid=$HERD_PID
  herd_wait_ready "$dir/herd.toml" 3 20 || { status=1; say "FAILED $tag loaded: instances not ready"; }
  c1=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data-binary "@$WORK/state-body.json" "http://127.0.0.1:$API_PORT/v1.0/state/statestore" || true)
  [ "$c1" = 204 ] || { status=1; say "FAILED $tag loaded: state save answered $c1"; }
  sample "$pid" "$IDLE_SECONDS" "$dir/before.samples"
  R_LIDLE[$arena]=$(col_median "$dir/before.samples" 2)
  say "$tag loaded config, idle before the load: VmRSS $(mb "${R_LIDLE[$arena]}") MB"
  d0=$(deliveries)
  start_load "$LOAD_SECONDS"
  sample "$pid" "$LOAD_SECONDS" "$dir/load.samples"
  wait_load || { status=1; say "FAILED $tag loaded: requests not answered as expected"; }
  R_PEAK[$arena]=$(vmhwm_kb "$pid") R_STEADY[$arena]=$(col_median "$dir/load.samples" 2 0.5)
  say "$tag under load ($RATE req/s for ${LOAD_SECONDS} s): VmRSS steady $(mb "${R_STEADY[$arena]}") MB (median of the second half), highest sample $(mb "$(col_max "$dir/load.samples" 2)") MB, VmHWM $(mb "${R_PEAK[$arena]}") MB"
  breakdown "$pid"
  say "  RSS over the load (MB, every ${SAMPLE_MS} ms, 10 evenly spaced): $(awk '{ v[NR] = $2 } END { for (i = 1; i <= 10; i++) { j = int((i - 1) * (NR - 1) / 9) + 1; printf "%.1f ", v[j] / 1024 } }' "$dir/load.samples")"
  sample "$pid" "$IDLE_SECONDS" "$dir/after.samples"
  R_AFTER[$arena]=$(col_median "$dir/after.samples" 2)
  say "  deliveries to the subscriber during the run: $(( $(deliveries) - d0 )) (publishes ok: $(grep -o 'ok=[0-9]*' "$WORK/load-publish.out" | cut -d= -f2))"
  say "$tag ${IDLE_SECONDS} s after the load: VmRSS $(mb "${R_AFTER[$arena]}") MB"
  stop_herd_cfg "$dir/herd.toml"
done

echo
for arena in $ARENAS; do
  [ -n "${R_IDLE[$arena]:-}" ] || continue
  result "P6 arena=$arena idle_rss_mb=$(mb "${R_IDLE[$arena]}") idle_hwm_mb=$(mb "${R_IDLE_HWM[$arena]}") goal=$GOAL_IDLE_MB $(meets "$(mb "${R_IDLE[$arena]}")" '<=' "$GOAL_IDLE_MB") config=hello-demo"
  [ -n "${R_PEAK[$arena]:-}" ] || continue
  result "P6-loaded arena=$arena rate=$RATE peak_rss_mb=$(mb "${R_PEAK[$arena]}") steady_rss_mb=$(mb "${R_STEADY[$arena]}") idle_before_mb=$(mb "${R_LIDLE[$arena]}") after_mb=$(mb "${R_AFTER[$arena]}") goal=$GOAL_LOADED_MB $(meets "$(mb "${R_PEAK[$arena]}")" '<=' "$GOAL_LOADED_MB") mix=gateway:1/3,state:1/3,publish:1/3 conns=gateway:$GW_CONNS,api:3x$API_CONNS dapr_published_mb=23-51"
done
# The release binary itself (BENCHMARKS.md: ≤ 15 MB; 1 MB = 1024 × 1024 bytes).
bin_bytes=$(stat -c %s "$HERD")
result "P6-binary bytes=$bin_bytes mb=$(awk -v b="$bin_bytes" 'BEGIN{printf "%.1f", b / 1048576}') goal=15 $(meets "$(awk -v b="$bin_bytes" 'BEGIN{printf "%.1f", b / 1048576}')" '<=' 15)"
say "elapsed ${SECONDS}s"
exit "$status"
