#!/usr/bin/env bash
# shellcheck disable=SC2317  # the contenders' functions are called indirectly ("r3_start_$c", ...)
# bench/robustness.sh — figures R2 and R3 of shared/design/BENCHMARKS.md.
#
# R2: kill -9 a random instance every R2_EVERY (2) s for R2_SECONDS (30) s under load, herd only
#     (no peer restarts instances behind a shared socket or a gateway the same way):
#       proxied  a cluster-mode service (R2_INSTANCES instances of examples/hello) on `listen`,
#                served the default way: herd accepts there and forwards to each instance's
#                private fd 3; wrk straight at the listen address
#       shared   the same with `passthrough = true`: one shared socket as every instance's fd 3,
#                herd out of the path; wrk straight at the socket
#       node-proxied, node-passthrough  the same two with the unmodified Node app
#                (bench/plain-server.js: fd 3, `server.close()` on SIGTERM, nothing else)
#       gateway  a `port = "auto"` service (each instance on its own port) behind herd's gateway,
#                route with retries; wrk at the gateway
#       gateway-shared  the passthrough service behind herd's gateway (the gateway's pool then
#                holds one address, the shared socket), route with retries; wrk at the gateway
#     Figures: failed requests (wrk socket errors + non-2xx; goal 0, every request is a GET), and
#     each killed instance's time back to ready (goal <= 1 s), seen from outside by polling
#     `herd ls --json` every R2_POLL_MS until the slot runs a new pid in state "ready" (herd's own
#     log timestamps of the same events are printed beside it). In shared mode each connection
#     the killed process held loses the request in flight on it (no proxy can retry it for the
#     client), so the script also counts those connections at each kill.
# R3: the gateway over an upstream of 3 standalone examples/hello servers under load: backend 1
#     is killed (-9) at R3_KILL_AT s, backend 2 stalled (SIGSTOP) at R3_STOP_AT s and resumed
#     (SIGCONT) at R3_CONT_AT s, in a R3_SECONDS s run. Contenders, alternating for R3_ROUNDS
#     rounds, the same settings in each one's terms: herd's gateway (route timeout, per-try
#     timeout, retries, per-endpoint breaker `consecutiveFailures >= 5`, active health checks)
#     and HAProxy (timeout server = per-try timeout, retries + redispatch + retry-on, health
#     checks, `observe layer7 error-limit 5 on-error mark-down` as its breaker).
#     Figures: success rate (2xx / all requests, goal >= 99.99 %), time from the kill / the stall
#     until the endpoint is taken out (herd: herd_gateway_breaker_state = 1 on /metrics of the
#     admin listener; HAProxy: server status DOWN on its stats page; both scraped every
#     R3_SCRAPE_MS; goal <= 1 s), and p99 latency (goal <= the route timeout).
#
# Load: wrk -t1 -c$CONNS keep-alive, GET /, every status code counted by a Lua response()
# callback; wrk's own --timeout is 5 s, above every configured timeout, so a proxy's own 504 is
# counted as a non-2xx answer.
#
# Usage: bash bench/robustness.sh
#   env: R2_SECONDS=30 R2_EVERY=2 R2_INSTANCES=4 R2_DELAY_MS=5 R2_LEAD=2 R2_POLL_MS=20
#        R2_MODES="proxied shared node-proxied node-passthrough gateway gateway-shared" (empty: no R2)
#        R3_SECONDS=30 R3_KILL_AT=8 R3_STOP_AT=16 R3_CONT_AT=24 R3_ROUNDS=2 R3_DELAY_MS=5
#        R3_TIMEOUT_MS=1000 R3_PER_TRY_MS=200 R3_SCRAPE_MS=50 R3_PEER=1 (0: herd only)
#        CONNS=64 HERD_REV=<commit> CARGO_TARGET_DIR HERD_BENCH_CACHE (see bench/lib.sh)
# Exit: 0 when every contender ran (goals met or not), 1 when a contender failed to run.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-64}
R2_SECONDS=${R2_SECONDS:-30}        # kills happen over this long ...
R2_EVERY=${R2_EVERY:-2}             # ... one every this many seconds
R2_INSTANCES=${R2_INSTANCES:-4}
R2_DELAY_MS=${R2_DELAY_MS:-5}       # HELLO_DELAY_MS of the instances
R2_LEAD=${R2_LEAD:-2}               # seconds of load before the first kill and after the last recovery
R2_POLL_MS=${R2_POLL_MS:-20}        # `herd ls --json` poll interval while an instance is down
R2_GIVE_UP=${R2_GIVE_UP:-10}        # seconds after the last kill to wait for recoveries
R2_MODES=${R2_MODES-proxied shared node-proxied node-passthrough gateway gateway-shared}   # empty: no R2 run
PLAIN_APP="$BENCH_ROOT/bench/plain-server.js"
R3_SECONDS=${R3_SECONDS:-30}
R3_KILL_AT=${R3_KILL_AT:-8}
R3_STOP_AT=${R3_STOP_AT:-16}
R3_CONT_AT=${R3_CONT_AT-24}       # empty: backend 2 stays stalled to the end of the run
R3_ROUNDS=${R3_ROUNDS:-2}
R3_DELAY_MS=${R3_DELAY_MS:-5}
R3_TIMEOUT_MS=${R3_TIMEOUT_MS:-1000}   # route timeout (whole request)
R3_PER_TRY_MS=${R3_PER_TRY_MS:-200}    # per-try timeout (HAProxy: timeout server)
R3_SCRAPE_MS=${R3_SCRAPE_MS:-50}
R3_PEER=${R3_PEER:-1}

# CPU budget: herd with its instances (R2) / the proxy under test (R3) on SERVER_CPU; wrk, the R3
# backends and the CLI calls (`herd ls`, curl scrapes) on LOAD_CPU.
if [ "$(nproc)" -ge 2 ]; then SERVER_CPU=1; LOAD_CPU=0; else SERVER_CPU=0; LOAD_CPU=0; fi
CLI_CPU=$LOAD_CPU
BUDGET="R2: herd + its instances pinned to CPU $SERVER_CPU; R3: the proxy pinned to CPU $SERVER_CPU, the 3 backends on CPU $LOAD_CPU; wrk -t1 -c$CONNS and the polls/scrapes on CPU $LOAD_CPU"

bench_init rob

# Backends stopped with SIGSTOP must be resumed before they can be stopped.
STALLED=()
resume_stalled() { local p; for p in "${STALLED[@]}"; do kill -CONT "$p" 2>/dev/null; done; }
CLEANUP_HOOKS+=(resume_stalled)

# --- tools -----------------------------------------------------------------------------------
need curl taskset ss
ensure_wrk
declare -A FAILED=()   # contender -> reason it failed to run

HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
if [ "$R3_PEER" = 1 ]; then
  [ -x "$HAPROXY" ] || apt_install haproxy || true
  [ -x "$HAPROXY" ] || { tail -5 "$WORK/apt.log"; FAILED[haproxy]="cannot install haproxy"; }
fi

if ! build_herd hello herd || [ ! -x "$HERD" ] || [ ! -x "$HELLO" ]; then
  cat "$WORK/cargo.log"
  [ -x "$HELLO" ] || die "cannot build the hello app"
  FAILED[herd]="cargo build failed"
fi

write_wrk_lua "$WORK/count.lua" 1

# now_ms VAR: wall-clock milliseconds, without a fork.
now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; printf -v "$1" '%s' "$((t / 1000))"; }
sleep_ms() { sleep "$(awk -v m="$1" 'BEGIN{printf "%.3f", (m > 0 ? m : 0) / 1000}')"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.4f", 100 * a / b; else print "n/a" }'; }
max_of() { # numbers... (others ignored): the largest, n/a when there is none
  local m
  m=$(printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | tail -1 || true)
  echo "${m:-n/a}"
}

# start_load port seconds out: wrk in the background (WRK_PID), load side CPU.
WRK_PID=''
start_load() {
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$2"s --timeout 5s -s "$WORK/count.lua" \
    "http://127.0.0.1:$1/" >"$3" 2>&1 &
  WRK_PID=$!; KILL_PIDS+=("$WRK_PID")
}
# stop_load: ends wrk (SIGINT makes it print its summary) and waits for it.
stop_load() {
  kill -INT "$WRK_PID" 2>/dev/null || true
  wait "$WRK_PID" 2>/dev/null || true
  forget_pid "$WRK_PID"
}

# ============================================ R2 ==============================================
# herd_instances config: "id pid state" per instance, from `herd ls --json` (pid "null" when none).
herd_instances() {
  herd_ls_json "$1" | awk '
    /"id":/    { v = $2; gsub(/[^0-9]/, "", v); id = v }
    /"pid":/   { v = $2; gsub(/[^0-9a-z]/, "", v); pid = v }
    /"state":/ { v = $2; gsub(/[^a-z]/, "", v); print id, pid, v }' || true
}

# One R2 run. Kill k (k = 0, 1, ...) at start + k * R2_EVERY s: a random instance in state
# "ready" gets SIGKILL; then `herd ls --json` is polled until its slot runs a new pid that is
# ready. Fills the R2_* arrays for the summary.
declare -A R2_FAIL=() R2_HELD=() R2_REQ=() R2_DETAIL=() R2_READY_MAX=() R2_READY_MED=() R2_LOG_MAX=() R2_KILLS=()
r2_run() { # mode: proxied | shared | node-proxied | node-passthrough | gateway | gateway-shared
  local mode=$1 dir cfg port admin='' out sock command
  command="[\"$HELLO\"]"
  case $mode in node-*) command="[\"node\", \"$PLAIN_APP\"]" ;; esac
  dir=$(mktemp -d "$WORK/r2-$mode.XXXX"); cfg="$dir/herd.toml"; out="$dir/wrk.out"
  free_port port   # where wrk sends its load: the shared socket, or the gateway listener
  sock=$port
  {
    echo "data_dir = \"$dir/.herd\""
    if [ "${mode#gateway}" != "$mode" ]; then
      free_port admin
      cat <<EOF
[admin]
listen = "127.0.0.1:$admin"

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:$port"

[[route]]
service = "hello"
retries = { policy = "constant", duration = "10ms", maxRetries = 2 }
EOF
    fi
    cat <<EOF

[[service]]
name = "hello"
command = $command
instances = $R2_INSTANCES
env = { HELLO_DELAY_MS = "$R2_DELAY_MS", PLAIN_DELAY_MS = "$R2_DELAY_MS" }
EOF
    case $mode in
      gateway) echo 'port = "auto"' ;;
      gateway-shared) free_port sock; printf 'listen = "127.0.0.1:%s"\npassthrough = true\n' "$sock" ;;
      shared | node-passthrough) printf 'listen = "127.0.0.1:%s"\npassthrough = true\n' "$sock" ;;
      *) echo "listen = \"127.0.0.1:$sock\"" ;;
    esac
    cat <<EOF

[service.restart]
max_restarts = $((R2_SECONDS / R2_EVERY + 10))   # the crash-loop guard is not what is measured
EOF
  } >"$cfg"
  herd_up "$cfg" "$SERVER_CPU" HERD_LOG=warn >"$dir/start.out" 2>&1 || { cat "$dir/start.out"; return 1; }
  herd_wait_ready "$cfg" "$R2_INSTANCES" 30 || { echo "herd: $R2_INSTANCES instances not ready"; return 1; }
  local seen
  case $mode in
    node-*) wait_http "$port" 10 '"worker"' || { echo "the Node app does not serve"; return 1; } ;;
    *) seen=$(hello_serves "$port" 4) || { echo "does not serve: $seen"; return 1; } ;;
  esac
  local how="listen = 127.0.0.1:$port (shared socket, passthrough = true), wrk straight at it"
  case $mode in
    proxied) how="listen = 127.0.0.1:$port (herd forwards to each instance's private socket), wrk straight at it" ;;
    node-proxied) how="bench/plain-server.js, listen = 127.0.0.1:$port (herd forwards to each instance's private socket), wrk straight at it" ;;
    node-passthrough) how="bench/plain-server.js, listen = 127.0.0.1:$port (shared socket, passthrough = true), wrk straight at it" ;;
    gateway) how="port = \"auto\", gateway listener 127.0.0.1:$port, route retries = { constant 10ms, maxRetries 2 }, service breaker default (consecutiveFailures >= 5, timeout 5s), wrk at the gateway" ;;
    gateway-shared) how="listen = 127.0.0.1:$sock (shared socket) behind gateway listener 127.0.0.1:$port, route retries = { constant 10ms, maxRetries 2 }, service breaker default (consecutiveFailures >= 5, timeout 5s), wrk at the gateway" ;;
  esac
  say "R2 $mode: herd pid $HERD_PID, $R2_INSTANCES instances ready and serving; $how"

  start_load "$port" 600 "$out"
  sleep "$R2_LEAD"
  local kills=$((R2_SECONDS / R2_EVERY)) next=0 start now i s p n
  local -a k_slot=() k_pid=() k_t=() k_ready=() k_conns=()
  local -A cur_pid=() cur_state=()
  r2_poll() { # (uses r2_run's locals) refreshes cur_*; resolves pending kills
    cur_pid=() cur_state=()
    while read -r s p n; do cur_pid[$s]=$p cur_state[$s]=$n; done < <(herd_instances "$cfg")
    now_ms now
    for i in "${!k_slot[@]}"; do
      [ -n "${k_ready[$i]}" ] && continue
      s=${k_slot[$i]}
      if [ "${cur_state[$s]:-}" = ready ] && [ "${cur_pid[$s]:-null}" != null ] && [ "${cur_pid[$s]}" != "${k_pid[$i]}" ]; then
        k_ready[i]=$((now - k_t[i]))
      fi
    done
  }
  r2_pending() { local c=0 j; for j in "${!k_slot[@]}"; do [ -n "${k_ready[$j]}" ] || c=$((c + 1)); done; echo "$c"; }
  now_ms start
  while :; do
    now_ms now
    if [ "$next" -lt "$kills" ] && [ "$now" -ge $((start + next * R2_EVERY * 1000)) ]; then
      r2_poll
      local -a ready=()
      for s in "${!cur_state[@]}"; do [ "${cur_state[$s]}" = ready ] && ready+=("$s"); done
      if [ "${#ready[@]}" -eq 0 ]; then
        say "R2 $mode: kill $((next + 1)): no instance ready, skipped"; next=$((next + 1)); continue
      fi
      s=${ready[RANDOM % ${#ready[@]}]}; p=${cur_pid[$s]}
      # Connections the instance holds (wrk's in shared mode, the gateway's pooled ones behind it).
      n=$(ss -Htnp state established 2>/dev/null | grep -c "pid=$p," || true)
      now_ms now
      kill -KILL "$p" 2>/dev/null || { say "R2 $mode: pid $p was already gone"; }
      k_slot+=("$s") k_pid+=("$p") k_t+=("$now") k_ready+=("") k_conns+=("$n")
      next=$((next + 1))
      continue
    fi
    if [ "$(r2_pending)" -gt 0 ]; then
      if [ "$next" -ge "$kills" ] && [ "$now" -gt $((k_t[${#k_t[@]} - 1] + R2_GIVE_UP * 1000)) ]; then break; fi
      sleep_ms "$R2_POLL_MS"; r2_poll
    else
      [ "$next" -ge "$kills" ] && break
      # Nothing down: wait for the next kill (at most 100 ms at a time).
      n=$((start + next * R2_EVERY * 1000 - now)); [ "$n" -gt 100 ] && n=100
      sleep_ms "$n"
    fi
  done
  sleep "$R2_LEAD"
  stop_load
  local all_back; all_back=$(herd_ready_count "$cfg")
  local metrics=''
  if [ -n "$admin" ]; then
    # What the gateway counted: answers by class and retries it made.
    metrics=$(curl -s --max-time 2 "http://127.0.0.1:$admin/metrics" 2>/dev/null | awk '
      /^herd_gateway_requests_total\{route="route\[0\]"/ && $NF > 0 { match($0, /class="[0-9]xx"/); printf "answers_%s=%s ", substr($0, RSTART + 7, 3), $NF }
      /^herd_gateway_retries_total\{route="route\[0\]"/ { printf "retries=%s ", $NF }' || true)
  fi
  "$HERD" -c "$cfg" logs hello -n 100000 >"$dir/hello.log" 2>/dev/null || true
  stop_herd_cfg "$cfg"

  parse_wrk "$out" || { echo "wrk printed no summary: $(tail -3 "$out" | tr '\n' ' ')"; return 1; }
  [ "$W_OK" -gt 0 ] || { echo "served nothing"; return 1; }

  # herd's own view: the first "pid N ready" of the slot, N != the killed pid, after the kill.
  local -a log_ready=() polled=()
  local ts t
  for i in "${!k_slot[@]}"; do
    log_ready[i]=n/a
    while read -r ts p; do
      t=$(date -d "$ts" +%s%3N 2>/dev/null) || continue
      if [ "$p" != "${k_pid[$i]}" ] && [ "$t" -ge "${k_t[$i]}" ]; then log_ready[i]=$((t - k_t[i])); break; fi
    done < <(awk -v s="hello:${k_slot[$i]}" '$2 == s && $3 == "*" && $4 == "pid" && $6 == "ready" {print $1, $5}' "$dir/hello.log")
    polled[i]=${k_ready[$i]:-n/a}
    [ -n "${k_ready[$i]}" ] || polled[i]=">$((R2_GIVE_UP * 1000))"
    say "$(printf 'R2 %-7s kill %2d: instance %s pid %-7s (%2s connections)  back to ready: %5s ms polled, %5s ms in herd'"'"'s log' \
      "$mode" $((i + 1)) "${k_slot[$i]}" "${k_pid[$i]}" "${k_conns[$i]}" "${polled[$i]}" "${log_ready[$i]}")"
  done
  local conns=0; for n in "${k_conns[@]}"; do conns=$((conns + n)); done
  local numeric=() missing=0
  for t in "${k_ready[@]}"; do if [ -n "$t" ]; then numeric+=("$t"); else missing=$((missing + 1)); fi; done
  R2_KILLS[$mode]=${#k_slot[@]}
  R2_FAIL[$mode]=$((W_NON2XX + W_SOCKERR)); R2_REQ[$mode]=$W_REQ
  if [ "$missing" -gt 0 ] || [ "${#numeric[@]}" -eq 0 ]; then R2_READY_MAX[$mode]=n/a
  else R2_READY_MAX[$mode]=$(max_of "${numeric[@]}"); fi
  R2_READY_MED[$mode]=n/a
  if [ "${#numeric[@]}" -gt 0 ]; then R2_READY_MED[$mode]=$(median "${numeric[@]}"); fi
  R2_LOG_MAX[$mode]=$(max_of "${log_ready[@]}")
  R2_HELD[$mode]=$conns
  R2_DETAIL[$mode]="requests=$W_REQ 2xx=$W_OK non2xx=$W_NON2XX sockerr=$W_SOCKERR p99_ms=$W_P99 max_ms=$W_MAX connections_held_by_killed=$conns not_back=$missing ready_at_end=$all_back/$R2_INSTANCES${metrics:+ gateway: $metrics}"
  say "R2 $mode: failed requests ${R2_FAIL[$mode]} (${R2_DETAIL[$mode]})"
  grep '^WRK' "$out" | sed 's/^/#   /' || true
}

# ============================================ R3 ==============================================
declare -A BPORT=() BPID=()
r3_backends_start() {
  local i
  for i in 1 2 3; do
    free_port "BPORT[$i]"
    # HERD_INSTANCE only sets the "worker" field of the answer, to see which backend answered.
    PORT=${BPORT[$i]} HELLO_DELAY_MS=$R3_DELAY_MS HERD_INSTANCE=$i taskset -c "$LOAD_CPU" "$HELLO" \
      >"$WORK/backend$i.log" 2>&1 &
    BPID[$i]=$!; KILL_PIDS+=("${BPID[$i]}")
  done
  for i in 1 2 3; do
    wait_http "${BPORT[$i]}" 10 || { cat "$WORK/backend$i.log"; die "backend $i (hello on 127.0.0.1:${BPORT[$i]}) did not answer"; }
  done
}
r3_backends_stop() {
  local i
  for i in 1 2 3; do
    kill -CONT "${BPID[$i]}" 2>/dev/null || true
    stop_pid "${BPID[$i]}"
  done
}

# Contenders: r3_start_X sets PORT and MAIN_PID; r3_out_X prints "open1 open2": 1 when backend
# 1 / 2 is taken out of rotation at that moment (breaker open / server DOWN), else 0.
PORT='' MAIN_PID='' R3_ADMIN='' R3_STATS='' R3_HERD_CFG=''
r3_start_herd() {
  local dir cfg
  dir=$(mktemp -d "$WORK/r3-herd.XXXX"); cfg="$dir/herd.toml"
  free_port PORT; free_port R3_ADMIN
  cat >"$cfg" <<EOF
data_dir = "$dir/.herd"

[admin]
listen = "127.0.0.1:$R3_ADMIN"

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:$PORT"

[[route]]
upstream = "three"
timeout = "${R3_TIMEOUT_MS}ms"
per_try_timeout = "${R3_PER_TRY_MS}ms"
retries = { policy = "constant", duration = "10ms", maxRetries = 2 }

[[upstream]]
name = "three"
endpoints = ["127.0.0.1:${BPORT[1]}", "127.0.0.1:${BPORT[2]}", "127.0.0.1:${BPORT[3]}"]
balance = "round_robin"
breaker = { trip = "consecutiveFailures >= 5", timeout = "5s", maxRequests = 1 }
health = { path = "/healthz", interval = "1s", timeout = "1s", healthy = 2, unhealthy = 3 }
EOF
  R3_HERD_CFG=$cfg
  herd_up "$cfg" "$SERVER_CPU" HERD_LOG=warn || return 1
  MAIN_PID=$HERD_PID
  wait_http "$PORT" 10 "$HELLO_BODY" || { echo "herd: gateway does not answer"; return 1; }
}
r3_stop_herd() { stop_herd_cfg "$R3_HERD_CFG"; }
r3_out_herd() {
  curl -s --max-time 1 "http://127.0.0.1:$R3_ADMIN/metrics" 2>/dev/null | awk -v e1="127.0.0.1:${BPORT[1]}" -v e2="127.0.0.1:${BPORT[2]}" '
    /^herd_gateway_breaker_state\{/ { if (index($0, "\"" e1 "\"")) o1 = ($NF == 1); if (index($0, "\"" e2 "\"")) o2 = ($NF == 1) }
    END { print o1 + 0, o2 + 0 }' || echo "0 0"
}
r3_desc_herd() {
  echo "route timeout ${R3_TIMEOUT_MS}ms, per_try_timeout ${R3_PER_TRY_MS}ms, retries constant 10ms maxRetries 2; upstream round_robin, breaker consecutiveFailures >= 5 (timeout 5s, maxRequests 1), health /healthz every 1s (timeout 1s, unhealthy 3, healthy 2); HERD_LOG=warn; out of rotation = herd_gateway_breaker_state 1"
}

r3_start_haproxy() {
  local dir
  dir=$(mktemp -d "$WORK/r3-haproxy.XXXX")
  free_port PORT; free_port R3_STATS
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect ${R3_PER_TRY_MS}ms
  timeout client 30s
  timeout server ${R3_PER_TRY_MS}ms
  timeout check 1s
  retries 2
  option redispatch 1
  retry-on conn-failure empty-response response-timeout 502 503 504
  http-reuse always

frontend fe
  bind 127.0.0.1:$PORT
  default_backend three

backend three
  balance roundrobin
  option httpchk GET /healthz
  default-server check inter 1s fall 3 rise 2 observe layer7 error-limit 5 on-error mark-down
  server b1 127.0.0.1:${BPORT[1]}
  server b2 127.0.0.1:${BPORT[2]}
  server b3 127.0.0.1:${BPORT[3]}

listen stats
  bind 127.0.0.1:$R3_STATS
  stats enable
  stats uri /stats
EOF
  # -db: stay in the foreground (no daemon, no master process); no `log` line: no logging.
  taskset -c "$SERVER_CPU" "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/out.log" 2>&1 &
  MAIN_PID=$!; KILL_PIDS+=("$MAIN_PID")
  wait_http "$PORT" 10 "$HELLO_BODY" || { echo "haproxy: does not answer"; tail -5 "$dir/out.log"; return 1; }
}
r3_stop_haproxy() { stop_pid "$MAIN_PID"; }
r3_out_haproxy() {
  curl -s --max-time 1 "http://127.0.0.1:$R3_STATS/stats;csv" 2>/dev/null | awk -F, '
    $1 == "three" && $2 == "b1" { o1 = ($18 ~ /^DOWN/) } $1 == "three" && $2 == "b2" { o2 = ($18 ~ /^DOWN/) }
    END { print o1 + 0, o2 + 0 }' || echo "0 0"
}
r3_desc_haproxy() {
  echo "timeout server ${R3_PER_TRY_MS}ms (= per-try timeout; no whole-request timeout, 3 tries bound it), timeout connect ${R3_PER_TRY_MS}ms, retries 2, option redispatch 1, retry-on conn-failure empty-response response-timeout 502 503 504; balance roundrobin, check /healthz inter 1s fall 3 rise 2 (timeout check 1s), observe layer7 error-limit 5 on-error mark-down; nbthread 1, http-reuse always; out of rotation = stats status DOWN"
}

declare -A R3_OK=() R3_ALL=() R3_FAILN=() R3_P99=() R3_MAX=() R3_OPEN_KILL=() R3_OPEN_STALL=() R3_RUNS=()
r3_run() { # contender round
  local c=$1 round=$2 out="$WORK/r3-$1.r$2.wrk" seen
  r3_backends_start
  if ! "r3_start_$c" >"$WORK/r3-$c.r$round.start" 2>&1; then
    FAILED[$c]="R3: did not start: $(tail -3 "$WORK/r3-$c.r$round.start" | tr '\n' ' ')"
    "r3_stop_$c" >/dev/null 2>&1 || true; r3_backends_stop; return 1
  fi
  if ! seen=$(hello_serves "$PORT" 6); then
    FAILED[$c]="R3: does not serve before load: $seen"; "r3_stop_$c"; r3_backends_stop; return 1
  fi
  [ "$seen" = "1 2 3" ] || say "WARNING R3 $c: 6 requests were answered by backend(s) '$seen', expected '1 2 3'"

  local start now t_kill='' t_stop='' t_cont='' open_kill=n/a open_stall=n/a o1 o2 stalled_end=''
  start_load "$PORT" "$R3_SECONDS" "$out"
  now_ms start
  while pid_alive "$WRK_PID"; do
    now_ms now
    if [ -z "$t_kill" ] && [ "$now" -ge $((start + R3_KILL_AT * 1000)) ]; then
      kill -KILL "${BPID[1]}"; now_ms t_kill
      wait "${BPID[1]}" 2>/dev/null || true   # reaped here, so the shell reports nothing
    fi
    if [ -z "$t_stop" ] && [ "$now" -ge $((start + R3_STOP_AT * 1000)) ]; then
      kill -STOP "${BPID[2]}"; STALLED+=("${BPID[2]}"); now_ms t_stop
    fi
    if [ -n "$R3_CONT_AT" ] && [ -z "$t_cont" ] && [ "$now" -ge $((start + R3_CONT_AT * 1000)) ]; then
      kill -CONT "${BPID[2]}"; now_ms t_cont
    fi
    read -r o1 o2 < <("r3_out_$c")
    now_ms now
    if [ -n "$t_kill" ] && [ "$open_kill" = n/a ] && [ "$o1" = 1 ]; then open_kill=$((now - t_kill)); fi
    if [ -n "$t_stop" ] && [ -z "$t_cont" ] && [ "$open_stall" = n/a ] && [ "$o2" = 1 ]; then open_stall=$((now - t_stop)); fi
    sleep_ms "$R3_SCRAPE_MS"
  done
  wait "$WRK_PID" 2>/dev/null || true
  read -r o1 o2 < <("r3_out_$c")
  stalled_end="backend1_out_at_end=$o1 backend2_out_at_end=$o2"
  "r3_stop_$c"
  r3_backends_stop
  if ! parse_wrk "$out" || [ "$W_OK" -le 0 ]; then
    FAILED[$c]="R3: served nothing: $(tail -3 "$out" | tr '\n' ' ')"; return 1
  fi
  local total=$((W_REQ + W_SOCKERR))
  R3_OK[$c]=$(( ${R3_OK[$c]:-0} + W_OK )); R3_ALL[$c]=$(( ${R3_ALL[$c]:-0} + total ))
  R3_FAILN[$c]=$(( ${R3_FAILN[$c]:-0} + W_NON2XX + W_SOCKERR ))
  R3_P99[$c]+="$W_P99 "; R3_MAX[$c]+="$W_MAX "
  R3_OPEN_KILL[$c]+="$open_kill "; R3_OPEN_STALL[$c]+="$open_stall "
  R3_RUNS[$c]=$(( ${R3_RUNS[$c]:-0} + 1 ))
  say "$(printf 'R3 round %s %-7s requests %6s  2xx %6s  non-2xx %s  sockerr %s  success %s %%  p50 %s ms  p99 %s ms  max %s ms  out of rotation after: kill %s ms, stall %s ms  (%s)' \
    "$round" "$c" "$total" "$W_OK" "$W_NON2XX" "$W_SOCKERR" "$(pct "$W_OK" "$total")" "$W_P50" "$W_P99" "$W_MAX" "$open_kill" "$open_stall" "$stalled_end")"
  grep '^WRK' "$out" | sed 's/^/#   /' || true
}

# ========================================== main ==============================================
say "herd R2/R3 robustness benchmark — $(date -u)"
say "nproc=$(nproc); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2 || true); HAProxy $("$HAPROXY" -v 2>/dev/null | head -1 | awk '{print $3}' || true); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)"
say "CPU budget: $BUDGET"
say "load: wrk -t1 -c$CONNS --timeout 5s, keep-alive, GET / (idempotent), every status code counted"
say "R2: kill -9 a random ready instance every ${R2_EVERY}s for ${R2_SECONDS}s ($((R2_SECONDS / R2_EVERY)) kills), $R2_INSTANCES instances of $HELLO (HELLO_DELAY_MS=$R2_DELAY_MS), restart defaults (initial_backoff 100ms, min_uptime 1s) but max_restarts $((R2_SECONDS / R2_EVERY + 10)); load from ${R2_LEAD}s before the first kill to ${R2_LEAD}s after the last recovery; modes: $R2_MODES"
say "R3: 3 x $HELLO (HELLO_DELAY_MS=$R3_DELAY_MS); ${R3_SECONDS}s of load; backend 1 kill -9 at ${R3_KILL_AT}s, backend 2 SIGSTOP at ${R3_STOP_AT}s${R3_CONT_AT:+, SIGCONT at ${R3_CONT_AT}s}; $R3_ROUNDS rounds, contenders alternating; scrape every ${R3_SCRAPE_MS}ms"

# --- R2 --------------------------------------------------------------------------------------
if [ -z "${FAILED[herd]:-}" ]; then
  for mode in $R2_MODES; do
    if ! r2_run "$mode" >"$WORK/r2-$mode.log" 2>&1; then
      cat "$WORK/r2-$mode.log"
      FAILED[herd]="R2 $mode: $(tail -1 "$WORK/r2-$mode.log")"; say "R2 $mode: FAILED"
      continue
    fi
    cat "$WORK/r2-$mode.log"
  done
fi

# --- R3 --------------------------------------------------------------------------------------
R3_CONTENDERS=(herd)
[ "$R3_PEER" = 1 ] && R3_CONTENDERS+=(haproxy)
for c in "${R3_CONTENDERS[@]}"; do
  [ -n "${FAILED[$c]:-}" ] || say "R3 $c: $("r3_desc_$c")"
done
for ((round = 1; round <= R3_ROUNDS; round++)); do
  round_order "$round" "${R3_CONTENDERS[@]}"
  for c in "${ORDER[@]}"; do
    [ -n "${FAILED[$c]:-}" ] && continue
    r3_run "$c" "$round" || say "R3 round $round $c: FAILED: ${FAILED[$c]:-}"
  done
done

# --- summary ---------------------------------------------------------------------------------
status=0
for c in "${!FAILED[@]}"; do say "FAILED $c: ${FAILED[$c]}"; status=1; done
echo

r2_goal_ms=1000
for mode in proxied shared node-proxied node-passthrough gateway gateway-shared; do
  case " $R2_MODES " in *" $mode "*) ;; *) continue ;; esac
  f=${R2_FAIL[$mode]:-n/a}
  case $mode in
    proxied) desc="cluster mode, listen proxied to private sockets (default), wrk straight at it" ;;
    shared) desc="cluster mode, shared socket (passthrough = true), wrk straight at it" ;;
    node-proxied) desc="unmodified Node app, listen proxied to private sockets (default), wrk straight at it" ;;
    node-passthrough) desc="unmodified Node app, shared socket (passthrough = true), wrk straight at it" ;;
    gateway) desc="port=auto behind herd's gateway, retries on" ;;
    *) desc="cluster mode, shared socket, behind herd's gateway, retries on" ;;
  esac
  result "R2-$mode herd_failed=$f requests=${R2_REQ[$mode]:-n/a} kills=${R2_KILLS[$mode]:-n/a} instances=$R2_INSTANCES goal=0 $(meets "$f" '<=' 0) conns_held_by_killed=${R2_HELD[$mode]:-n/a} ($desc)"
  result "R2-$mode-ready herd_ready_max_ms=${R2_READY_MAX[$mode]:-n/a} median_ms=${R2_READY_MED[$mode]:-n/a} herd_log_max_ms=${R2_LOG_MAX[$mode]:-n/a} kills=${R2_KILLS[$mode]:-n/a} goal=$r2_goal_ms $(meets "${R2_READY_MAX[$mode]:-n/a}" '<=' "$r2_goal_ms")"
done

declare -A S_RATE=() S_P99=() S_OPEN=() S_MAX=() S_OK_KILL=() S_OK_STALL=()
for c in herd haproxy; do
  if [ -z "${R3_RUNS[$c]:-}" ]; then S_RATE[$c]=n/a S_P99[$c]=n/a S_OPEN[$c]=n/a S_MAX[$c]=n/a S_OK_KILL[$c]=n/a S_OK_STALL[$c]=n/a; continue; fi
  S_RATE[$c]=$(pct "${R3_OK[$c]}" "${R3_ALL[$c]}")
  # Worst case over the rounds: the highest p99 and max, the slowest time out of rotation
  # (n/a when an endpoint was never taken out in some round).
  read -ra v <<<"${R3_P99[$c]}"; S_P99[$c]=$(max_of "${v[@]}")
  read -ra v <<<"${R3_MAX[$c]}"; S_MAX[$c]=$(max_of "${v[@]}")
  read -ra v <<<"${R3_OPEN_KILL[$c]}"
  case " ${v[*]} " in *" n/a "*) S_OK_KILL[$c]=n/a ;; *) S_OK_KILL[$c]=$(max_of "${v[@]}") ;; esac
  read -ra v <<<"${R3_OPEN_STALL[$c]}"
  case " ${v[*]} " in *" n/a "*) S_OK_STALL[$c]=n/a ;; *) S_OK_STALL[$c]=$(max_of "${v[@]}") ;; esac
  if [ "${S_OK_KILL[$c]}" = n/a ] || [ "${S_OK_STALL[$c]}" = n/a ]; then S_OPEN[$c]=n/a
  else S_OPEN[$c]=$(max_of "${S_OK_KILL[$c]}" "${S_OK_STALL[$c]}"); fi
done
hp=haproxy
if [ "$R3_ROUNDS" -gt 0 ]; then
  result "R3 herd_success_pct=${S_RATE[herd]} herd_failed=${R3_FAILN[herd]:-n/a} herd_requests=${R3_ALL[herd]:-n/a} goal=99.99 $(meets "${S_RATE[herd]}" '>=' 99.99) haproxy_success_pct=${S_RATE[$hp]} haproxy_failed=${R3_FAILN[$hp]:-n/a} rounds=$R3_ROUNDS"
  result "R3-breaker herd_open_ms=${S_OPEN[herd]} kill_ms=${S_OK_KILL[herd]} stall_ms=${S_OK_STALL[herd]} goal=1000 $(meets "${S_OPEN[herd]}" '<=' 1000) haproxy_down_ms=${S_OPEN[$hp]} haproxy_kill_ms=${S_OK_KILL[$hp]} haproxy_stall_ms=${S_OK_STALL[$hp]} scrape_ms=$R3_SCRAPE_MS"
  result "R3-p99 herd_p99_ms=${S_P99[herd]} herd_max_ms=${S_MAX[herd]} timeout_ms=$R3_TIMEOUT_MS goal=<=timeout $(meets "${S_P99[herd]}" '<=' "$R3_TIMEOUT_MS") haproxy_p99_ms=${S_P99[$hp]} haproxy_max_ms=${S_MAX[$hp]} per_try_ms=$R3_PER_TRY_MS"
fi
say "elapsed ${SECONDS}s"
exit "$status"
