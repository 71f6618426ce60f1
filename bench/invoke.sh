#!/usr/bin/env bash
# bench/invoke.sh — figure P2 of shared/design/BENCHMARKS.md.
#
# P2: the latency one hop through herd adds, app → herd → app, at a fixed 1000 req/s with 1 KB
#     JSON request bodies (POST; the callee answers with the same 1 KB), against the same call
#     made directly to the app. Contenders, all up side by side for the whole run:
#       direct    loadgen → the app's own port (no herd): the reference
#       invoke    loadgen → herd's sidecar API, POST /v1.0/invoke/echo/method/echo → the app
#       gateway   loadgen → herd's gateway listener, a route to the service → the app
#       mesh      loadgen → herd A's sidecar API /v1.0/invoke/echo/method/echo → herd B's mesh
#                 listener (plain HTTP, no TLS) → the app run by herd B: two herds in the path,
#                 as Dapr's figure has two sidecars (MESH=0 drops it)
#     The app (callee) is `loadgen serve` (bench/loadgen/src/serve.rs): one thread, reads the
#     whole body and answers 200 with it. It is run by herd as a cluster-mode service (the
#     shared socket on fd 3, 1 instance); `direct` goes to that same socket.
#
# Load generator: bench/loadgen (built by this script; its own Cargo project outside the
# workspace: hyper's HTTP/1 client, hdrhistogram). Why not wrk or oha: `wrk` is closed-loop (each
# connection sends its next request when the last answer arrives, so a slow answer hides the
# requests that should have been sent meanwhile: coordinated omission) and wrk2 is not packaged;
# `oha -q --latency-correction` would do, but is a large build (TUI and all) for a 2-core shared
# machine, and its scheduling under one thread is less clear to audit than ~200 lines here.
# loadgen is wrk2's model: every connection has a fixed schedule (connection i of C sends at
# start + (i + k·C) / rate); an answer that comes back after the connection's next request was
# due makes that request late, and its latency is counted from when it was due. When the
# connection was free, latency counts from the actual send, so the generator's own timer
# granularity (1 ms in tokio) is not charged to the path under test. It prints p50, p90, p99,
# p99.9, max and the count of sends that woke more than 2 ms late (a starved generator).
#
# Dapr (daprd) is not packaged on crates.io, PyPI, npm or Debian (it ships as a binary download),
# so it is not run here; the figures are compared with Dapr's published ones: +1.06 ms p50 and
# +2.90 ms p99 end to end (two sidecars, 1000 req/s, 1 KB; docs.dapr.io, "Service invocation
# performance", as shared/design/BENCHMARKS.md quotes them).
#
# One warm-up round, then ROUNDS rounds; in each round every contender gets one run of
# DURATION s at RATE req/s (loadgen's own 1 s lead-in discarded), the order rotating from round to
# round. Medians per contender of each round's percentiles; added = contender − direct (ms),
# ratio = contender / direct. herd's CPU time per request, and the time its threads were
# runnable but waiting for a CPU held by another process (schedstat), are read from /proc.
#
# CPU budget on 2 cores: herd (and the mesh contender's two herds) pinned to HERD_CPU (1 tokio
# worker); the app (started by herd through `taskset`) and loadgen (one thread) on LOAD_CPU. The
# direct path crosses no CPU boundary; the herd paths cross twice (to herd and back): that cost is
# part of what a sidecar on another core adds, and is in the figures.
#
# Usage: bash bench/invoke.sh
#   env: ROUNDS=5 DURATION=20 WARMUP_DURATION=5 RATE=1000 CONNS=16 BODY_BYTES=1024 MESH=1
#        GOAL_P50_MS=0.1 GOAL_P99_MS=0.5 HERD_CPU=1 LOAD_CPU=0 HERD_LOG=warn HERD_REV=<commit>
#        CARGO_TARGET_DIR HERD_BENCH_CACHE=/tmp/herd-bench (see build_herd in bench/lib.sh)
# Exit: 0 when every contender ran and answered every request 200 with its body, 1 otherwise
# (a missed goal is not a failure).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-20}            # seconds per measured run (RATE × DURATION requests)
WARMUP_DURATION=${WARMUP_DURATION:-5}
RATE=${RATE:-1000}                  # requests per second, fixed (open loop)
CONNS=${CONNS:-16}                  # keep-alive connections of the load generator
BODY_BYTES=${BODY_BYTES:-1024}      # request body: a JSON object of exactly this size
MESH=${MESH:-1}                     # 1: also the two-herd path through the mesh listener
GOAL_P50_MS=${GOAL_P50_MS:-0.1}
GOAL_P99_MS=${GOAL_P99_MS:-0.5}
export HERD_LOG=${HERD_LOG:-warn}   # herd's per-request log lines (info) off, as in P1

if [ "$(nproc)" -ge 2 ]; then HERD_CPU=${HERD_CPU:-1}; LOAD_CPU=${LOAD_CPU:-0}
else HERD_CPU=${HERD_CPU:-0}; LOAD_CPU=${LOAD_CPU:-0}; fi
CLI_CPU=$LOAD_CPU
BUDGET="herd (1 tokio worker) pinned to CPU $HERD_CPU; the app (loadgen serve, 1 thread) and loadgen run (1 thread) pinned to CPU $LOAD_CPU"

bench_init invoke
need curl taskset awk cmp

declare -A FAILED=()   # contender -> why it failed
if ! build_herd herd || [ ! -x "$HERD" ]; then cat "$WORK/cargo.log"; die "cannot build herd"; fi
if ! build_loadgen; then cat "$WORK/loadgen-cargo.log"; die "cannot build bench/loadgen"; fi

# --- herd configs ------------------------------------------------------------------------------
free_port APP_PORT; free_port API_PORT; free_port GW_PORT
mkdir -p "$WORK/local"
cat >"$WORK/local/herd.toml" <<EOF
data_dir = "$WORK/local/.herd"

[[service]]
name = "echo"
command = ["taskset", "-c", "$LOAD_CPU", "$LOADGEN", "serve"]
instances = 1
listen = "127.0.0.1:$APP_PORT"

[api]
listen = "127.0.0.1:$API_PORT"

[[gateway.listener]]
name = "public"
listen = "127.0.0.1:$GW_PORT"

[[route]]
service = "echo"
EOF

if [ "$MESH" = 1 ]; then
  free_port MESH_APP_PORT; free_port MESH_API_PORT; free_port MESH_B_API_PORT
  free_port MESH_A_PORT; free_port MESH_B_PORT
  mkdir -p "$WORK/mesh-a" "$WORK/mesh-b"
  # herd B runs the app and serves it to its peers; herd A runs no app and forwards to B.
  cat >"$WORK/mesh-b/herd.toml" <<EOF
data_dir = "$WORK/mesh-b/.herd"

[[service]]
name = "echo"
command = ["taskset", "-c", "$LOAD_CPU", "$LOADGEN", "serve"]
instances = 1
listen = "127.0.0.1:$MESH_APP_PORT"

[api]
listen = "127.0.0.1:$MESH_B_API_PORT"

[mesh]
listen = "127.0.0.1:$MESH_B_PORT"
peers = ["127.0.0.1:$MESH_A_PORT"]
EOF
  cat >"$WORK/mesh-a/herd.toml" <<EOF
data_dir = "$WORK/mesh-a/.herd"

[api]
listen = "127.0.0.1:$MESH_API_PORT"

[mesh]
listen = "127.0.0.1:$MESH_A_PORT"
peers = ["127.0.0.1:$MESH_B_PORT"]
refresh = "500ms"
EOF
fi

declare -A URL=() PIDS=()
URL[direct]="http://127.0.0.1:$APP_PORT/echo"
URL[invoke]="http://127.0.0.1:$API_PORT/v1.0/invoke/echo/method/echo"
URL[gateway]="http://127.0.0.1:$GW_PORT/echo"
CONTENDERS=(direct invoke gateway)

say "herd $(herd_rev_desc); rate $RATE req/s fixed, $CONNS connections, ${BODY_BYTES} B JSON bodies; $BUDGET"
if herd_up "$WORK/local/herd.toml" "$HERD_CPU"; then
  PIDS[invoke]=$HERD_PID PIDS[gateway]=$HERD_PID
  herd_wait_ready "$WORK/local/herd.toml" 1 20 || FAILED[invoke]="the app never became ready"
  say "herd pid $HERD_PID: $(threads_of "$HERD_PID") threads, affinity $(affinity_of "$HERD_PID")"
else
  FAILED[invoke]="herd did not start"
fi
if [ "$MESH" = 1 ]; then
  CONTENDERS+=(mesh)
  URL[mesh]="http://127.0.0.1:$MESH_API_PORT/v1.0/invoke/echo/method/echo"
  if herd_up "$WORK/mesh-b/herd.toml" "$HERD_CPU" && B_PID=$HERD_PID &&
    herd_wait_ready "$WORK/mesh-b/herd.toml" 1 20 && herd_up "$WORK/mesh-a/herd.toml" "$HERD_CPU"; then
    PIDS[mesh]="$B_PID $HERD_PID"
  else
    FAILED[mesh]="the two herds did not start"
  fi
fi

# serves name: a 1 KB POST answered 200 with the same bytes (polled up to 10 s: the mesh
# contender's herd A learns herd B's apps on its next refresh).
head -c "$BODY_BYTES" /dev/zero | tr '\0' x | awk -v n="$BODY_BYTES" '{printf "{\"pad\":\"%s\"}", substr($0, 1, n - 10)}' >"$WORK/body.json"
serves() {
  local i code
  for ((i = 0; i < 100; i++)); do
    code=$(curl -s -o "$WORK/answer" -w '%{http_code}' --max-time 2 -H 'Content-Type: application/json' \
      --data-binary "@$WORK/body.json" "${URL[$1]}" 2>/dev/null || true)
    if [ "$code" = 200 ] && cmp -s "$WORK/answer" "$WORK/body.json"; then return 0; fi
    sleep 0.1
  done
  echo "status ${code:-none}, body $(head -c 200 "$WORK/answer" 2>/dev/null)"
  return 1
}
for c in "${CONTENDERS[@]}"; do
  [ -z "${FAILED[$c]:-}" ] || continue
  why=$(serves "$c") || FAILED[$c]="does not echo a 1 KB POST before the load: $why"
done
[ -z "${FAILED[invoke]:-}" ] || FAILED[gateway]=${FAILED[gateway]:-"herd did not start"}
[ -z "${FAILED[invoke]:-}" ] || FAILED[direct]=${FAILED[direct]:-"the app is started by herd"}

# --- runs --------------------------------------------------------------------------------------
# runq_wait_us pids...: time the processes' threads spent runnable but waiting for a CPU (second
# field of /proc/<pid>/task/<tid>/schedstat, ns), in µs: on a shared machine, what other
# processes on herd's CPU cost herd's requests.
runq_wait_us() {
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done |
    awk '{ w += $2 } END { printf "%d\n", w / 1000 }'
}
declare -A P50=() P90=() P99=() P999=() MAXL=() CPU_US=() WAIT_US=() REQS=() ERRS=() LATE=()
run_one() { # contender seconds round_label
  local c=$1 secs=$2 label=$3 t0 t1 pids
  # shellcheck disable=SC2086  # PIDS holds one or two pids
  pids=${PIDS[$c]:-}
  # shellcheck disable=SC2086
  t0=$(cpu_ticks $pids) w0=$(runq_wait_us $pids)
  taskset -c "$LOAD_CPU" "$LOADGEN" run --url "${URL[$c]}" --method POST --body-bytes "$BODY_BYTES" \
    --rate "$RATE" --duration "$secs" --warmup 1 --conns "$CONNS" --expect 200 --label "$c" \
    >"$WORK/run.out" 2>&1 || true
  # shellcheck disable=SC2086
  t1=$(cpu_ticks $pids) w1=$(runq_wait_us $pids)
  if ! parse_loadgen "$WORK/run.out"; then
    FAILED[$c]="loadgen failed: $(tail -2 "$WORK/run.out")"; return 0
  fi
  local cpu=- wait=-
  [ -n "$pids" ] && cpu=$(awk -v t=$((t1 - t0)) -v us="$TICK_US" -v n="$L_OK" 'BEGIN{printf "%.1f", (n > 0 ? t * us / n : 0)}')
  [ -n "$pids" ] && wait=$(awk -v w=$((w1 - w0)) -v n="$L_OK" 'BEGIN{printf "%.1f", (n > 0 ? w / n : 0)}')
  printf '# %-9s %-8s p50 %7s  p90 %7s  p99 %7s  p99.9 %7s  max %8s ms  %5s req/s  ok %6s  bad %s  err %s  late %s  herd %s us CPU/req, %s us runnable-not-running/req\n' \
    "$label" "$c" "$L_P50" "$L_P90" "$L_P99" "$L_P999" "$L_MAX" "$L_RPS" "$L_OK" "$L_BAD" "$L_ERR" "$L_LATE" "$cpu" "$wait"
  if [ "$L_BAD" != 0 ] || [ "$L_ERR" != 0 ]; then
    FAILED[$c]="${L_BAD} non-200 answers (${L_STATUSES}), ${L_ERR} errors"
  fi
  if [ "$(meets "$L_RPS" '>=' "$(awk -v r="$RATE" 'BEGIN{print r * 0.95}')")" = missed ]; then
    FAILED[$c]="served $L_RPS req/s, below 95 % of $RATE"
  fi
  [ "$label" = warm-up ] && return 0
  P50[$c]+="$L_P50 " P90[$c]+="$L_P90 " P99[$c]+="$L_P99 " P999[$c]+="$L_P999 " MAXL[$c]+="$L_MAX "
  CPU_US[$c]+="$cpu " WAIT_US[$c]+="$wait " REQS[$c]=$((${REQS[$c]:-0} + L_OK)) ERRS[$c]=$((${ERRS[$c]:-0} + L_BAD + L_ERR))
  LATE[$c]=$((${LATE[$c]:-0} + L_LATE))
}

for ((round = 0; round <= ROUNDS; round++)); do
  round_order "$round" "${CONTENDERS[@]}"
  for c in "${ORDER[@]}"; do
    [ -z "${FAILED[$c]:-}" ] || continue
    if [ "$round" = 0 ]; then run_one "$c" "$WARMUP_DURATION" warm-up
    else run_one "$c" "$DURATION" "round $round/$ROUNDS"; fi
  done
done
for c in "${CONTENDERS[@]}"; do
  [ -z "${FAILED[$c]:-}" ] || continue
  why=$(serves "$c") || FAILED[$c]="does not echo a 1 KB POST after the load: $why"
done

# --- figures -----------------------------------------------------------------------------------
med() { read -ra v <<<"$1"; median "${v[@]}"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "n/a" || b == "n/a") print "n/a"; else printf "%.3f", a - b }'; }
echo
say "medians over $ROUNDS rounds of ${DURATION} s at $RATE req/s ($BUDGET)"
printf '| %-8s | %7s | %7s | %7s | %8s | %8s | %14s | %14s | %8s | %6s | %4s |\n' contender "p50 ms" "p90 ms" "p99 ms" "p99.9 ms" "max ms" "herd us CPU/req" "herd us runq/req" requests errors late
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ---------- --------: --------: --------: ---------: ---------: ---------------: ----------------: ---------: -------: -----:
declare -A M50=() M99=() M999=()
for c in "${CONTENDERS[@]}"; do
  if [ -n "${FAILED[$c]:-}" ] || [ -z "${P50[$c]:-}" ]; then M50[$c]=n/a M99[$c]=n/a M999[$c]=n/a; continue; fi
  M50[$c]=$(med "${P50[$c]}") M99[$c]=$(med "${P99[$c]}") M999[$c]=$(med "${P999[$c]}")
  printf '| %-8s | %7s | %7s | %7s | %8s | %8s | %15s | %16s | %8s | %6s | %4s |\n' "$c" "${M50[$c]}" "$(med "${P90[$c]}")" "${M99[$c]}" "${M999[$c]}" \
    "$(med "${MAXL[$c]}")" "$(med "${CPU_US[$c]}")" "$(med "${WAIT_US[$c]}")" "${REQS[$c]}" "${ERRS[$c]}" "${LATE[$c]}"
done
echo
status=0
for c in "${CONTENDERS[@]}"; do
  if [ -n "${FAILED[$c]:-}" ]; then say "FAILED $c: ${FAILED[$c]}"; status=1; fi
done
for c in "${CONTENDERS[@]}"; do
  [ "$c" = direct ] && continue
  a50=$(minus "${M50[$c]}" "${M50[direct]}") a99=$(minus "${M99[$c]}" "${M99[direct]}") a999=$(minus "${M999[$c]}" "${M999[direct]}")
  verdict=met
  [ "$(meets "$a50" '<=' "$GOAL_P50_MS")" = met ] && [ "$(meets "$a99" '<=' "$GOAL_P99_MS")" = met ] || verdict=missed
  hops=1; [ "$c" = mesh ] && hops=2
  result "P2 path=$c herds=$hops added_p50_ms=$a50 added_p99_ms=$a99 added_p999_ms=$a999 goal=p50:$GOAL_P50_MS,p99:$GOAL_P99_MS $verdict p50_ms=${M50[$c]} p99_ms=${M99[$c]} p999_ms=${M999[$c]} direct_p50_ms=${M50[direct]} direct_p99_ms=${M99[direct]} direct_p999_ms=${M999[direct]} ratio_p50=$(ratio "${M50[$c]}" "${M50[direct]}") ratio_p99=$(ratio "${M99[$c]}" "${M99[direct]}") dapr_published_added_ms=p50:1.06,p99:2.90 rate=$RATE conns=$CONNS body=$BODY_BYTES cpu=herd:$HERD_CPU,app+load:$LOAD_CPU"
done
say "elapsed ${SECONDS}s"
exit "$status"
