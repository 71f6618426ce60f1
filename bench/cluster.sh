#!/usr/bin/env bash
# shellcheck disable=SC2317  # the contenders' functions are called indirectly ("start_$c", ...)
# bench/cluster.sh — figures P3 and R1 of shared/design/BENCHMARKS.md.
#
# P3: the Node.js hello app (examples/node-hello/server.js) as 2 instances behind one port, run by
#     herd in both ways of serving `listen` (herd: the default, herd accepts and forwards to each
#     instance's private fd 3; herd-passthrough: `passthrough = true`, the shared socket as every
#     instance's fd 3), by Node's cluster module (bench/cluster-primary.js) and by PM2
#     (`pm2 start -i 2`). Figures: req/s with keep-alive, req/s with `Connection: close`, and the
#     RSS of the supervising process (herd / the cluster primary / PM2's God Daemon) after load.
# R1: 5 rolling reloads under sustained keep-alive load; failed requests (socket errors + HTTP
#     errors) for `herd reload` (both ways) and `pm2 reload`, with the unmodified app
#     (bench/plain-server.js: `server.close()` on SIGTERM, no `Connection: close` draining; R1_APP=hello
#     runs examples/node-hello instead, which drains). Node's cluster module has no reload command.
#
# The three contenders are started once and stay up side by side; only one is under load at a
# time. They alternate (herd, node-cluster, pm2, then node-cluster, pm2, herd, ...: the order
# rotates each round) over a warm-up round and ROUNDS measured rounds. Medians are reported with
# the ratio herd/best peer. R1 starts herd and PM2 afresh afterwards.
#
# Usage: bash bench/cluster.sh
#   env: ROUNDS=5 DURATION=4 WARMUP_DURATION=2 CONNS=64 R1_RELOADS=5 R1_DELAY_MS=5 R1_APP=plain PM2_VERSION
#        HERD_REV=<commit> CARGO_TARGET_DIR HERD_BENCH_CACHE=/tmp/herd-bench (see bench/lib.sh)
# Exit: 0 when every contender ran (goals met or not), 1 when a contender failed to run.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APP="$BENCH_ROOT/examples/node-hello/server.js"
PLAIN_APP="$BENCH_ROOT/bench/plain-server.js"
R1_APP=${R1_APP:-plain}             # plain: bench/plain-server.js; hello: examples/node-hello
PRIMARY_JS="$BENCH_ROOT/bench/cluster-primary.js"

ROUNDS=${ROUNDS:-5}                 # measured rounds, after one warm-up round
DURATION=${DURATION:-4}             # seconds per measured wrk run
WARMUP_DURATION=${WARMUP_DURATION:-2}
CONNS=${CONNS:-64}
R1_RELOADS=${R1_RELOADS:-5}
R1_DELAY_MS=${R1_DELAY_MS:-5}       # HELLO_DELAY_MS during R1
R1_LEAD=${R1_LEAD:-2}               # seconds of load before the first and after the last reload
R1_GAP=${R1_GAP:-1}                 # seconds between reloads
PM2_VERSION=${PM2_VERSION:-}        # empty: npm's latest; installed under $HERD_BENCH_CACHE/pm2

# CPU budget: the whole server side of each contender (supervisor/primary/daemon + 2 node
# instances) on SERVER_CPU; wrk (1 thread) and the CLI calls (herd reload, pm2 reload, ...) on
# LOAD_CPU.
if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=1; LOAD_CPU=0; else SERVER_CPU=0; LOAD_CPU=0; fi
CLI_CPU=$LOAD_CPU
BUDGET="server side (supervisor + 2 node instances) pinned to CPU $SERVER_CPU; wrk -t1 -c$CONNS and the CLI calls pinned to CPU $LOAD_CPU"

bench_init run

# PM2 homes whose daemon may still be up: `pm2 kill` on exit.
PM2_HOMES=()
stop_pm2_homes() {
  local home pid k kids
  for home in "${PM2_HOMES[@]}"; do
    pid=$(cat "$home/pm2.pid" 2>/dev/null || true)
    pid_alive "$pid" || continue
    kids=$(children_of "$pid")
    PM2_HOME="$home" "$PM2" kill >/dev/null 2>&1
    wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null
    for k in $kids; do kill -KILL "$k" 2>/dev/null; done
  done
}
CLEANUP_HOOKS+=(stop_pm2_homes)

# --- tools -----------------------------------------------------------------------------------
need node curl taskset
ensure_wrk

declare -A FAILED=()   # contender -> reason it failed to run

if ! build_herd herd || [ ! -x "$HERD" ]; then
  cat "$WORK/cargo.log"
  FAILED[herd]="cargo build failed"
fi

PM2="$CACHE/pm2/node_modules/.bin/pm2"
if [ ! -x "$PM2" ]; then
  say "installing pm2 with npm into $CACHE/pm2"
  mkdir -p "$CACHE/pm2"
  (cd "$CACHE/pm2" && { [ -f package.json ] || npm init -y >/dev/null; } &&
    npm i --no-audit --no-fund "pm2${PM2_VERSION:+@$PM2_VERSION}") >"$WORK/npm.log" 2>&1 || true
  [ -x "$PM2" ] || { cat "$WORK/npm.log"; FAILED[pm2]="npm i pm2 failed"; }
fi

tree_rss_kb() { # pid: its RSS plus its children's
  local total=0 p r
  for p in "$1" $(children_of "$1"); do r=$(vmrss_kb "$p"); total=$((total + ${r:-0})); done
  echo "$total"
}

affinity_ok() { # pid...: all pinned to SERVER_CPU exactly
  local p a
  for p in "$@"; do
    a=$(affinity_of "$p")
    [ "$a" = "$SERVER_CPU" ] || { echo "pid $p has affinity '$a'"; return 1; }
  done
}

# wrk's own counters only (no Lua response() callback): errors.status counts responses >= 400.
write_wrk_lua "$WORK/summary.lua" 0

# run_wrk port duration_s mode(keepalive|close) out_file; sets W_* from wrk's summary.
run_wrk() {
  local hdr=()
  [ "$3" = close ] && hdr=(-H 'Connection: close')
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$2"s "${hdr[@]}" -s "$WORK/summary.lua" \
    "http://127.0.0.1:$1/" >"$4" 2>&1 || return 1
  parse_wrk "$4"
}

# --- contenders: start_X delay_ms; sets PORT and SUP_PID (the supervising process) -------------
PORT='' SUP_PID='' HERD_CFG='' PM2_HOME_CUR=''

# The app of a run: examples/node-hello for P3 (APP_NOW=hello), R1_APP for R1.
APP_NOW=hello
app_path() { if [ "$APP_NOW" = plain ]; then echo "$PLAIN_APP"; else echo "$APP"; fi; }
app_body() { if [ "$APP_NOW" = plain ]; then echo '"worker"'; else echo "$HELLO_BODY"; fi; }

start_herd_mode() { # delay_ms passthrough(true|false)
  SUP_PID='' PORT=''
  local dir; dir=$(mktemp -d "$WORK/herd.XXXX")
  free_port PORT
  HERD_CFG="$dir/herd.toml"
  cat >"$HERD_CFG" <<EOF
data_dir = "$dir/.herd"
[[service]]
name = "hello"
command = ["node", "$(app_path)"]
instances = 2
listen = "127.0.0.1:$PORT"
passthrough = $2
env = { HELLO_DELAY_MS = "$1", PLAIN_DELAY_MS = "$1" }
EOF
  herd_up "$HERD_CFG" "$SERVER_CPU" || return 1
  SUP_PID=$HERD_PID
  herd_wait_ready "$HERD_CFG" 2 30 || { echo "herd: instances not ready"; return 1; }
  wait_http "$PORT" 10 "$(app_body)"
}
start_herd() { start_herd_mode "$1" false; }
start_herdpt() { start_herd_mode "$1" true; }
stop_herd() { stop_herd_cfg "$HERD_CFG"; }
stop_herdpt() { stop_herd_cfg "$HERD_CFG"; }
reload_herd() { taskset -c "$LOAD_CPU" "$HERD" -c "$HERD_CFG" reload hello; }
reload_herdpt() { reload_herd; }
instance_pids_herd() { children_of "$SUP_PID" | sort | tr '\n' ' '; }
instance_pids_herdpt() { instance_pids_herd; }

start_nodecluster() {
  SUP_PID='' PORT=''
  free_port PORT
  PORT=$PORT HELLO_DELAY_MS=$1 PLAIN_DELAY_MS=$1 WORKERS=2 taskset -c "$SERVER_CPU" node "$PRIMARY_JS" \
    >"$WORK/nodecluster.log" 2>&1 &
  SUP_PID=$!
  KILL_PIDS+=("$SUP_PID")
  wait_http "$PORT" 15 "$(app_body)" || return 1
  local kids; kids=$(children_of "$SUP_PID")
  # shellcheck disable=SC2206  # one pid per word
  KILL_PIDS+=($kids)
  [ "$(echo "$kids" | wc -w)" -eq 2 ] || { echo "node cluster: expected 2 workers"; return 1; }
}
stop_nodecluster() { stop_pid "$SUP_PID"; }

# PM2 gets the same graceful stop the app expects from herd: SIGTERM (PM2's default is SIGINT,
# which this app does not handle) and 5 s before SIGKILL (herd's default kill_timeout).
start_pm2() {
  SUP_PID='' PORT=''
  PM2_HOME_CUR=$(mktemp -d "$WORK/pm2home.XXXX")
  PM2_HOMES+=("$PM2_HOME_CUR")
  free_port PORT
  PM2_HOME=$PM2_HOME_CUR PM2_KILL_SIGNAL=SIGTERM PORT=$PORT HELLO_DELAY_MS=$1 PLAIN_DELAY_MS=$1 \
    taskset -c "$SERVER_CPU" "$PM2" start "$(app_path)" -i 2 --name hello --kill-timeout 5000 \
    >"$PM2_HOME_CUR/start.out" 2>&1 || { cat "$PM2_HOME_CUR/start.out"; return 1; }
  SUP_PID=$(cat "$PM2_HOME_CUR/pm2.pid" 2>/dev/null || true)
  pid_alive "$SUP_PID" || { echo "pm2: no daemon"; return 1; }
  grep -q 'God Daemon' "/proc/$SUP_PID/cmdline" 2>/dev/null || { echo "pm2: pid $SUP_PID is not the God Daemon"; return 1; }
  wait_http "$PORT" 15 "$(app_body)" || return 1
  local i n=0
  for ((i = 0; i < 100; i++)); do
    n=$(children_of "$SUP_PID" | wc -w)
    [ "$n" -ge 2 ] && break
    sleep 0.1
  done
  [ "$n" -eq 2 ] || { echo "pm2: expected 2 workers, saw $n"; return 1; }
}
stop_pm2() {
  local k kids
  kids=$(children_of "$SUP_PID")
  PM2_HOME=$PM2_HOME_CUR taskset -c "$LOAD_CPU" "$PM2" kill >/dev/null 2>&1 || true
  wait_gone "$SUP_PID" 15 || kill -KILL "$SUP_PID" 2>/dev/null || true
  for k in $kids; do if pid_alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi; done
  return 0
}
reload_pm2() { PM2_HOME=$PM2_HOME_CUR taskset -c "$LOAD_CPU" "$PM2" reload hello; }
instance_pids_pm2() { children_of "$SUP_PID" | sort | tr '\n' ' '; }

CONTENDERS=(herd herdpt nodecluster pm2)
declare -A NAME=([herd]=herd [herdpt]=herd-passthrough [nodecluster]=node-cluster [pm2]=pm2)
declare -A KA=() CL=() RSS=() TREE=() ERRS=()   # space-separated per-round values

say "herd P3/R1 benchmark — $(date -u)"
say "nproc=$(nproc); node $(node --version); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2 || true); pm2 $(node -p "require('$CACHE/pm2/node_modules/pm2/package.json').version" 2>/dev/null || echo n/a); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)"
say "CPU budget: $BUDGET"
say "load: wrk -t1 -c$CONNS -d${DURATION}s, keep-alive then -H 'Connection: close'; HELLO_DELAY_MS=0; 1 warm-up round (${WARMUP_DURATION}s runs) + $ROUNDS measured rounds; contenders alternate, order rotating per round"
say "node-cluster uses Node's default scheduling (round-robin via the primary); pm2 runs cluster mode (-i 2) with PM2_KILL_SIGNAL=SIGTERM --kill-timeout 5000"

# All three contenders are started once and stay up (idle, 0 req/s) while the others are measured;
# each round runs every contender in turn, the order rotating from round to round.
declare -A C_PORT=() C_SUP=()
declare -A P3_HERD_CFG=() ; P3_PM2_HOME=''
for c in "${CONTENDERS[@]}"; do
  [ -n "${FAILED[$c]:-}" ] && continue
  if ! "start_$c" 0 >"$WORK/$c.start" 2>&1; then
    FAILED[$c]="did not start: $(tail -3 "$WORK/$c.start" | tr '\n' ' ')"
    say "${NAME[$c]}: FAILED to start"; "stop_$c" >/dev/null 2>&1 || true; continue
  fi
  C_PORT[$c]=$PORT C_SUP[$c]=$SUP_PID
  case $c in herd | herdpt) P3_HERD_CFG[$c]=$HERD_CFG ;; pm2) P3_PM2_HOME=$PM2_HOME_CUR ;; esac
  # shellcheck disable=SC2046  # one pid per word
  aff=$(affinity_ok "$SUP_PID" $(children_of "$SUP_PID")) || say "WARNING ${NAME[$c]}: $aff"
  say "${NAME[$c]}: up on 127.0.0.1:$PORT, supervising pid $SUP_PID ($(tr '\0' ' ' <"/proc/$SUP_PID/cmdline" | cut -c1-60)), instances $(children_of "$SUP_PID" | tr '\n' ' ')"
done

for ((round = 0; round <= ROUNDS; round++)); do
  if [ "$round" -eq 0 ]; then d=$WARMUP_DURATION; tag="warm-up"
  else d=$DURATION; tag="round $round/$ROUNDS"; fi
  round_order "$round" "${CONTENDERS[@]}"
  for c in "${ORDER[@]}"; do
    [ -n "${FAILED[$c]:-}" ] && continue
    out="$WORK/$c.r$round" port=${C_PORT[$c]} sup=${C_SUP[$c]}
    ok=1
    run_wrk "$port" "$d" keepalive "$out.ka" || ok=0
    ka=$W_RPS ka_ok=$((W_REQ - W_STATUS)) ka_err="$W_SOCKERR/$W_STATUS" ka_p99=$W_P99
    run_wrk "$port" "$d" close "$out.cl" || ok=0
    cl=$W_RPS cl_ok=$((W_REQ - W_STATUS)) cl_err="$W_SOCKERR/$W_STATUS" cl_p99=$W_P99
    rss=$(vmrss_kb "$sup"); tree=$(tree_rss_kb "$sup")
    if [ "$ok" -ne 1 ] || [ "$ka_ok" -le 0 ] || [ "$cl_ok" -le 0 ] || ! pid_alive "$sup"; then
      FAILED[$c]="served nothing, wrk failed or the supervisor died (round $round)"
      say "$tag ${NAME[$c]}: FAILED (served nothing)"; continue
    fi
    say "$(printf '%-9s %-12s keep-alive %6s req/s (p99 %s ms, sockerr/http-err %s)  close %6s req/s (p99 %s ms, %s)  supervisor RSS %s kB, with instances %s kB' \
      "$tag" "${NAME[$c]}" "$ka" "$ka_p99" "$ka_err" "$cl" "$cl_p99" "$cl_err" "$rss" "$tree")"
    if [ "$round" -gt 0 ]; then
      KA[$c]+="$ka "; CL[$c]+="$cl "; RSS[$c]+="$rss "; TREE[$c]+="$tree "
      ERRS[$c]=$(( ${ERRS[$c]:-0} + ${ka_err%/*} + ${ka_err#*/} + ${cl_err%/*} + ${cl_err#*/} ))
    fi
  done
done
for c in "${CONTENDERS[@]}"; do
  [ -n "${C_SUP[$c]:-}" ] || continue
  SUP_PID=${C_SUP[$c]}
  case $c in herd | herdpt) HERD_CFG=${P3_HERD_CFG[$c]} ;; pm2) PM2_HOME_CUR=$P3_PM2_HOME ;; esac
  "stop_$c"
done

# --- R1: rolling reloads under load ----------------------------------------------------------
APP_NOW=$R1_APP
say "R1: $R1_RELOADS rolling reloads under load: wrk -t1 -c$CONNS keep-alive, app $(app_path) with a ${R1_DELAY_MS} ms delay per answer; load from ${R1_LEAD}s before the first reload to ${R1_LEAD}s after the last, ${R1_GAP}s between reloads"
say "R1: node-cluster skipped (Node's cluster module has no reload command)"
declare -A R1_FAILED=() R1_DETAIL=()
for c in herd herdpt pm2; do
  [ -n "${FAILED[$c]:-}" ] && { say "R1 ${NAME[$c]}: skipped (failed in P3)"; continue; }
  out="$WORK/$c.r1"
  if ! "start_$c" "$R1_DELAY_MS" >"$out.start" 2>&1; then
    FAILED[$c]="did not start for R1: $(tail -3 "$out.start" | tr '\n' ' ')"; "stop_$c" >/dev/null 2>&1 || true; continue
  fi
  before=$("instance_pids_$c")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d600s -s "$WORK/summary.lua" "http://127.0.0.1:$PORT/" >"$out.wrk" 2>&1 &
  wrk_pid=$!; KILL_PIDS+=("$wrk_pid")
  sleep "$R1_LEAD"
  reload_ok=0 times=""
  for ((i = 1; i <= R1_RELOADS; i++)); do
    t0=$(date +%s%N)
    if "reload_$c" >>"$out.reload" 2>&1; then reload_ok=$((reload_ok + 1)); fi
    times+="$(( ($(date +%s%N) - t0) / 1000000 ))ms "
    if [ "$i" -lt "$R1_RELOADS" ]; then sleep "$R1_GAP"; fi
  done
  sleep "$R1_LEAD"
  wrk_alive=yes; pid_alive "$wrk_pid" || wrk_alive=no
  kill -INT "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true; forget_pid "$wrk_pid"
  after=$("instance_pids_$c")
  "stop_$c"
  if ! parse_wrk "$out.wrk" || [ $((W_REQ - W_STATUS)) -le 0 ]; then
    FAILED[$c]="R1: served nothing"; say "R1 ${NAME[$c]}: FAILED (served nothing)"; continue
  fi
  replaced=yes
  for p in $before; do case " $after " in *" $p "*) replaced=no ;; esac; done
  R1_FAILED[$c]=$((W_SOCKERR + W_STATUS))
  R1_DETAIL[$c]="requests=$W_REQ sockerr=$W_SOCKERR http_err=$W_STATUS reloads_ok=$reload_ok/$R1_RELOADS instances_replaced=$replaced load_covered_reloads=$wrk_alive"
  say "R1 ${NAME[$c]}: failed requests ${R1_FAILED[$c]} (${R1_DETAIL[$c]}); reload times: $times"
  [ "$reload_ok" -eq "$R1_RELOADS" ] || { say "R1 ${NAME[$c]}: reload command failed:"; tail -5 "$out.reload" | sed 's/^/#   /'; }
  grep '^WRK' "$out.wrk" | sed 's/^/#   /' || true
done

# --- summary ---------------------------------------------------------------------------------
status=0
for c in "${!FAILED[@]}"; do say "FAILED ${NAME[$c]}: ${FAILED[$c]}"; status=1; done

declare -A MKA=() MCL=() MRSS=() MTREE=()
for c in "${CONTENDERS[@]}"; do
  if [ -n "${FAILED[$c]:-}" ] || [ -z "${KA[$c]:-}" ]; then MKA[$c]=n/a MCL[$c]=n/a MRSS[$c]=n/a MTREE[$c]=n/a; continue; fi
  # shellcheck disable=SC2086  # one value per word
  { MKA[$c]=$(median_int ${KA[$c]}); MCL[$c]=$(median_int ${CL[$c]})
    MRSS[$c]=$(median_int ${RSS[$c]}); MTREE[$c]=$(median_int ${TREE[$c]}); }
done

best_of() { # map-name -> "peer value" (the best of Node cluster and PM2)
  local -n m=$1; local best=n/a bv=0 p
  for p in nodecluster pm2; do
    [ "${m[$p]}" = n/a ] && continue
    if awk -v a="${m[$p]}" -v b="$bv" 'BEGIN{exit !(a+0 > b+0)}'; then best=${NAME[$p]}; bv=${m[$p]}; fi
  done
  echo "$best $bv"
}
read -r ka_peer ka_peer_rps < <(best_of MKA)
read -r cl_peer cl_peer_rps < <(best_of MCL)
ka_ratio=$(ratio "${MKA[herd]}" "$ka_peer_rps")
cl_ratio=$(ratio "${MCL[herd]}" "$cl_peer_rps")
ka_ratio_pt=$(ratio "${MKA[herdpt]}" "$ka_peer_rps")
cl_ratio_pt=$(ratio "${MCL[herdpt]}" "$cl_peer_rps")

echo
say "medians over $ROUNDS rounds (CPU budget: $BUDGET)"
printf '| %-16s | %16s | %16s | %18s | %22s | %s |\n' contender "keep-alive req/s" "close req/s" "supervisor RSS kB" "RSS with instances kB" "errors in P3 runs"
printf '|%s|%s|%s|%s|%s|%s|\n' ------------------ ------------------ ------------------ -------------------- ------------------------ -------------------
for c in "${CONTENDERS[@]}"; do
  printf '| %-16s | %16s | %16s | %18s | %22s | %s |\n' "${NAME[$c]}" "${MKA[$c]}" "${MCL[$c]}" "${MRSS[$c]}" "${MTREE[$c]}" "${ERRS[$c]:-n/a}"
done
printf '| %-16s | %16s | %16s | %18s | %22s | %s |\n' "herd/best" "$ka_ratio" "$cl_ratio" "" "" ""
printf '| %-16s | %16s | %16s | %18s | %22s | %s |\n' "passthrough/best" "$ka_ratio_pt" "$cl_ratio_pt" "" "" ""
echo

cpu="cpu=server:$SERVER_CPU,load:$LOAD_CPU"
result "P3-keepalive herd_rps=${MKA[herd]} best_peer=$ka_peer best_peer_rps=$ka_peer_rps ratio=$ka_ratio goal=1.0 $(meets "$ka_ratio" '>=' 1.0) node_cluster_rps=${MKA[nodecluster]} pm2_rps=${MKA[pm2]} $cpu"
result "P3-close herd_rps=${MCL[herd]} best_peer=$cl_peer best_peer_rps=$cl_peer_rps ratio=$cl_ratio goal=1.3 $(meets "$cl_ratio" '>=' 1.3) node_cluster_rps=${MCL[nodecluster]} pm2_rps=${MCL[pm2]} $cpu"
result "P3-keepalive-passthrough herd_rps=${MKA[herdpt]} best_peer=$ka_peer best_peer_rps=$ka_peer_rps ratio=$ka_ratio_pt goal=1.0 $(meets "$ka_ratio_pt" '>=' 1.0) proxied_over_passthrough=$(ratio "${MKA[herd]}" "${MKA[herdpt]}") $cpu"
result "P3-close-passthrough herd_rps=${MCL[herdpt]} best_peer=$cl_peer best_peer_rps=$cl_peer_rps ratio=$cl_ratio_pt goal=1.3 $(meets "$cl_ratio_pt" '>=' 1.3) proxied_over_passthrough=$(ratio "${MCL[herd]}" "${MCL[herdpt]}") $cpu"
result "P3-rss herd_kb=${MRSS[herd]} pm2_daemon_kb=${MRSS[pm2]} node_primary_kb=${MRSS[nodecluster]} ratio_vs_pm2=$(ratio "${MRSS[herd]}" "${MRSS[pm2]}") goal=10240 $(meets "${MRSS[herd]}" '<=' 10240)"
r1h=${R1_FAILED[herd]:-n/a}; r1pt=${R1_FAILED[herdpt]:-n/a}; r1p=${R1_FAILED[pm2]:-n/a}
result "R1 herd_failed=$r1h pm2_failed=$r1p node_cluster=skipped reloads=$R1_RELOADS app=$R1_APP goal=0 $(meets "$r1h" '<=' 0) (herd: listen proxied, the default)"
result "R1-passthrough herd_failed=$r1pt pm2_failed=$r1p reloads=$R1_RELOADS app=$R1_APP goal=0 $(meets "$r1pt" '<=' 0) (herd: passthrough = true)"
say "elapsed ${SECONDS}s"
exit "$status"
