#!/usr/bin/env bash
# shellcheck disable=SC2317  # the contenders' functions are called indirectly ("start_$c")
# bench/gateway.sh — figure P1 of shared/design/BENCHMARKS.md.
#
# P1: gateway throughput (req/s) and p99 latency, HTTP/1.1 keep-alive, 64 connections,
#     round-robin over 2 backends. The backends are two standalone instances of the repo's Rust
#     hello example (examples/hello, HELLO_DELAY_MS=0), shared by every contender.
#     Contenders, each with 1 worker thread / process pinned to the same CPU:
#       herd       herd's gateway (`herd up -d`, HERD_LOG=warn so the per-request access log at
#                  info level is not written), `taskset -c $PROXY_CPU`, so its tokio multi-thread
#                  runtime sizes itself to 1 worker (available_parallelism follows the affinity)
#       herd-info  the same with herd's default HERD_LOG=info (access log on; secondary figure)
#       nginx      worker_processes 1, upstream keepalive 64, proxy_http_version 1.1, access_log off
#       haproxy    nbthread 1, http-reuse always, balance roundrobin, mode http, no logging
#       pingora    bench/pingora: Cloudflare's pingora crates in their load-balancer shape (round
#                  robin, 1 worker thread, pingora's upstream keep-alive pool), built here with
#                  fat LTO into $HERD_BENCH_CACHE/pingora-target (PINGORA=0 leaves it out)
#       direct     wrk straight at backend 1 (no proxy): the reference limit
#
# All contenders are started once and stay up side by side (idle while another one is loaded).
# One warm-up round, then ROUNDS measured rounds; in each round every contender gets the same wrk
# run, the order rotating from round to round (A B C, B C A, ...). Medians per contender; the
# ratio is herd / the best of nginx, HAProxy and pingora (the direct run is the reference limit, not a
# peer).
#
# Usage: bash bench/gateway.sh
#   env: ROUNDS=5 DURATION=5 WARMUP_DURATION=3 CONNS=64 HERD_INFO=1 COUNT_STATUS=1 NGINX_KEEPALIVE=64
#        PINGORA=1
#        PROXY_CPU=1 SIDE_CPU=0 HERD_REV=<commit> CARGO_TARGET_DIR HERD_BENCH_CACHE=/tmp/herd-bench
#        (HERD_REV, CARGO_TARGET_DIR: what is built and where, see build_herd in bench/lib.sh)
# Exit: 0 when every contender ran (goals met or not), 1 when a contender failed to run.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}                 # measured rounds, after one warm-up round
DURATION=${DURATION:-5}             # seconds per measured wrk run
WARMUP_DURATION=${WARMUP_DURATION:-3}
CONNS=${CONNS:-64}
HERD_INFO=${HERD_INFO:-1}           # 1: also measure herd with HERD_LOG=info (access log on)
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-64}   # nginx's upstream `keepalive` (idle connections cached)
PINGORA=${PINGORA:-1}               # 1: also race the pingora load balancer (bench/pingora)
COUNT_STATUS=${COUNT_STATUS:-1}     # 1: wrk counts every status code in a Lua response() callback
                                    # 0: only wrk's built-in count of responses >= 400 (cheaper)

# CPU budget: the proxy under test alone on PROXY_CPU; the two backends and wrk (1 thread) on
# SIDE_CPU. Every proxy gets 1 worker (thread or process) on that one CPU.
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=${PROXY_CPU:-1}; SIDE_CPU=${SIDE_CPU:-0}
else PROXY_CPU=${PROXY_CPU:-0}; SIDE_CPU=${SIDE_CPU:-0}; fi
CLI_CPU=$SIDE_CPU
BUDGET="proxy (1 worker thread/process) pinned to CPU $PROXY_CPU; both backends (hello, 1 thread each) and wrk -t1 -c$CONNS pinned to CPU $SIDE_CPU"

bench_init gw
chmod 755 "$WORK"   # nginx's worker may run as an unprivileged user

# --- tools -----------------------------------------------------------------------------------
need curl taskset
ensure_wrk

declare -A FAILED=()   # contender -> reason it failed to run

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || apt_install nginx-light || apt_install nginx || true
[ -x "$NGINX" ] || { tail -5 "$WORK/apt.log"; FAILED[nginx]="cannot install nginx-light/nginx"; }
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || apt_install haproxy || true
[ -x "$HAPROXY" ] || { tail -5 "$WORK/apt.log"; FAILED[haproxy]="cannot install haproxy"; }

PINGORA_BIN="$CACHE/pingora-target/release/pingora-lb"
if [ "$PINGORA" = 1 ]; then
  say "building bench/pingora (release, its own target dir; the first build takes minutes)"
  mkdir -p "$CACHE"
  command -v cmake >/dev/null || apt_install cmake || true   # pingora's zlib-ng builds with cmake
  CARGO_TARGET_DIR="$CACHE/pingora-target" cargo build --release --quiet \
    --manifest-path "$BENCH_ROOT/bench/pingora/Cargo.toml" >"$WORK/pingora-build.log" 2>&1 ||
    { tail -5 "$WORK/pingora-build.log"; FAILED[pingora]="cannot build bench/pingora"; }
fi

if ! build_herd hello herd || [ ! -x "$HERD" ] || [ ! -x "$HELLO" ]; then
  cat "$WORK/cargo.log"
  [ -x "$HELLO" ] || die "cannot build the hello backend"
  FAILED[herd]="cargo build failed"; [ "$HERD_INFO" = 1 ] && FAILED[herd_info]="cargo build failed"
fi

# Busy share of each CPU between two /proc/stat snapshots.
cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }
cpu_busy() { # before after cpu -> percent
  awk -v c="cpu$3" -v a="$1" -v b="$2" 'BEGIN{
    n = split(a, A, "\n"); for (i = 1; i <= n; i++) { split(A[i], f, " "); if (f[1] == c) { t0 = 0; for (j = 2; j <= 11; j++) t0 += f[j]; i0 = f[5] + f[6] } }
    n = split(b, B, "\n"); for (i = 1; i <= n; i++) { split(B[i], f, " "); if (f[1] == c) { t1 = 0; for (j = 2; j <= 11; j++) t1 += f[j]; i1 = f[5] + f[6] } }
    d = t1 - t0; printf "%.0f", (d > 0 ? 100 * (d - (i1 - i0)) / d : 0) }'
}

# wrk's summary plus every status code counted through the response() callback (per thread
# counters, collected in done()). errors.status is wrk's own count of responses >= 400.
# The callback costs wrk CPU (it shares SIDE_CPU with the backends); COUNT_STATUS=0 drops it and
# counts 2xx as requests - errors.status (responses < 200 and 3xx are then not seen).
if [ "$COUNT_STATUS" = 1 ]; then
  COUNT_DESC="every status code counted by a wrk Lua response() callback"
else
  COUNT_DESC="COUNT_STATUS=0: only wrk's own count of responses >= 400 (no Lua response callback)"
fi
write_wrk_lua "$WORK/summary.lua" "$COUNT_STATUS"

# run_wrk port duration_s out_file [proxy pids]: sets W_* from wrk's summary, the CPU busy
# shares and W_UP. Whether a proxy reuses its upstream connections: halfway through, the connections the
# proxy's own processes hold open to the backends; over the whole run, the TCP connects made on
# the machine (Tcp ActiveOpens in /proc/net/snmp; wrk's own $CONNS are part of it).
W_CPU="" W_UP="" W_PBUSY=0
active_opens() { awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ActiveOpens") c = i; h = 1 } else print $c }' /proc/net/snmp; }
backend_conns_of() { # pids...: established connections to a backend owned by these processes
  local re; re=$(printf 'pid=%s,|' "$@"); re=${re%|}
  ss -Htnp state established "( dport = :$B1 or dport = :$B2 )" 2>/dev/null | grep -cE "$re" || true
}
run_wrk() { # port duration_s out_file pids-of-the-proxy...
  local before after wrk_pid opens0 port=$1 dur=$2 out=$3 held=-
  shift 3
  opens0=$(active_opens)
  before=$(cpu_snap)
  taskset -c "$SIDE_CPU" wrk -t1 -c"$CONNS" -d"$dur"s --latency -s "$WORK/summary.lua" \
    "http://127.0.0.1:$port/" >"$out" 2>&1 &
  wrk_pid=$!; KILL_PIDS+=("$wrk_pid")
  sleep "$(awk -v d="$dur" 'BEGIN{print d / 2}')"
  if [ $# -gt 0 ]; then held=$(backend_conns_of "$@"); fi
  wait "$wrk_pid" || true; forget_pid "$wrk_pid"
  after=$(cpu_snap)
  W_UP="upstream conns held $held, tcp connects in run $(( $(active_opens) - opens0 ))"
  W_PBUSY=$(cpu_busy "$before" "$after" "$PROXY_CPU")
  W_CPU="cpu$PROXY_CPU $W_PBUSY% cpu$SIDE_CPU $(cpu_busy "$before" "$after" "$SIDE_CPU")%"
  parse_wrk "$out"
}

# --- backends --------------------------------------------------------------------------------
free_port B1; free_port B2
declare -A BPID=()
for i in 1 2; do
  if [ "$i" = 1 ]; then port=$B1; else port=$B2; fi
  # HERD_INSTANCE only sets the "worker" field of the answer, to see which backend answered.
  PORT=$port HELLO_DELAY_MS=0 HERD_INSTANCE=$i taskset -c "$SIDE_CPU" "$HELLO" >"$WORK/backend$i.log" 2>&1 &
  BPID[$i]=$!; KILL_PIDS+=("${BPID[$i]}")
  wait_http "$port" 10 || { cat "$WORK/backend$i.log"; die "backend $i (hello on 127.0.0.1:$port) did not answer"; }
done

# --- contenders: start_X sets PORT and MAIN_PID (the process to watch) ------------------------
PORT='' MAIN_PID=''
declare -A HERD_LOGFILE=()

start_herd_with() { # key log_level
  local key=$1 level=$2 dir
  dir=$(mktemp -d "$WORK/$key.XXXX")
  free_port PORT
  local cfg="$dir/herd.toml"
  cat >"$cfg" <<EOF
data_dir = "$dir/.herd"

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:$PORT"

[[route]]
upstream = "backends"

[[upstream]]
name = "backends"
endpoints = ["127.0.0.1:$B1", "127.0.0.1:$B2"]
balance = "round_robin"
EOF
  HERD_CFGS+=("$cfg")
  HERD_LOG=$level taskset -c "$PROXY_CPU" "$HERD" -c "$cfg" up -d >"$dir/up.out" 2>&1 || { cat "$dir/up.out"; return 1; }
  MAIN_PID=$(cat "$dir/.herd/herd.pid" 2>/dev/null)
  HERD_LOGFILE[$key]="$dir/.herd/herd.log"
  pid_alive "$MAIN_PID" || { echo "herd: no process"; cat "$dir/up.out"; return 1; }
  wait_http "$PORT" 10 || { echo "herd: gateway does not answer"; tail -5 "${HERD_LOGFILE[$key]}"; return 1; }
}
start_herd() { start_herd_with herd warn; }
start_herd_info() { start_herd_with herd_info info; }

start_nginx() {
  local dir; dir=$(mktemp -d "$WORK/nginx.XXXX"); chmod 755 "$dir"
  free_port PORT
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  upstream backends {
    server 127.0.0.1:$B1;
    server 127.0.0.1:$B2;
    keepalive $NGINX_KEEPALIVE;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  taskset -c "$PROXY_CPU" "$NGINX" -e "$dir/error.log" -c "$dir/nginx.conf" -p "$dir" >"$dir/out.log" 2>&1 &
  MAIN_PID=$!; KILL_PIDS+=("$MAIN_PID")
  wait_http "$PORT" 10 || { echo "nginx: does not answer"; cat "$dir/out.log" "$dir/error.log" 2>/dev/null | tail -5; return 1; }
}

start_haproxy() {
  local dir; dir=$(mktemp -d "$WORK/haproxy.XXXX")
  free_port PORT
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  pidfile $dir/haproxy.pid

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always

frontend fe
  bind 127.0.0.1:$PORT
  default_backend backends

backend backends
  balance roundrobin
  server b1 127.0.0.1:$B1
  server b2 127.0.0.1:$B2
EOF
  # -db: stay in the foreground (no daemon, no master process); no `log` line: no logging.
  taskset -c "$PROXY_CPU" "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/out.log" 2>&1 &
  MAIN_PID=$!; KILL_PIDS+=("$MAIN_PID")
  wait_http "$PORT" 10 || { echo "haproxy: does not answer"; tail -5 "$dir/out.log"; return 1; }
}

start_pingora() {
  free_port PORT
  PINGORA_LISTEN="127.0.0.1:$PORT" PINGORA_BACKENDS="127.0.0.1:$B1,127.0.0.1:$B2" PINGORA_THREADS=1 \
    taskset -c "$PROXY_CPU" "$PINGORA_BIN" >"$WORK/pingora.out" 2>&1 &
  MAIN_PID=$!; KILL_PIDS+=("$MAIN_PID")
  wait_http "$PORT" 10 || { echo "pingora: does not answer"; tail -5 "$WORK/pingora.out"; return 1; }
}

start_direct() { PORT=$B1; MAIN_PID=${BPID[1]}; }

CONTENDERS=(herd)
if [ "$HERD_INFO" = 1 ]; then CONTENDERS+=(herd_info); fi
CONTENDERS+=(nginx haproxy)
PEERS=(nginx haproxy)
if [ "$PINGORA" = 1 ]; then CONTENDERS+=(pingora); PEERS+=(pingora); fi
CONTENDERS+=(direct)
declare -A NAME=([herd]=herd [herd_info]=herd-info [nginx]=nginx [haproxy]=haproxy [pingora]=pingora [direct]=direct)
declare -A RPS=() P99=() P50=() USREQ=() ERRS=() REQS=()   # space-separated per-round values / totals
OUTSIDE=""                                         # CPU PROXY_CPU busy % during the direct runs

say "herd P1 gateway benchmark — $(date -u)"
say "nproc=$(nproc); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2 || true); nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///' || true); HAProxy $("$HAPROXY" -v 2>/dev/null | head -1 | awk '{print $3}' || true); herd $("$HERD" --version 2>/dev/null | awk '{print $2}' || true) at commit $(herd_rev_desc)"
say "CPU budget: $BUDGET"
say "load: wrk -t1 -c$CONNS -d${DURATION}s --latency, keep-alive, GET /; 1 warm-up round (${WARMUP_DURATION}s runs) + $ROUNDS measured rounds; contenders alternate, order rotating per round; $COUNT_DESC"
say "backends: 2 x $HELLO (HELLO_DELAY_MS=0) on 127.0.0.1:$B1 and 127.0.0.1:$B2, pids ${BPID[1]} ${BPID[2]}, shared by all contenders; 'direct' = wrk straight at backend 1 (127.0.0.1:$B1), no proxy: the reference 'limit' (1 backend sharing CPU $SIDE_CPU with wrk)"
say "herd: HERD_LOG=warn (no per-request access log); herd-info: HERD_LOG=info (herd's default, access log written to its data_dir/herd.log)"
say "nginx: worker_processes 1, upstream keepalive $NGINX_KEEPALIVE (keepalive_requests 1000000 both sides), proxy_http_version 1.1, Connection \"\", access_log off; haproxy: nbthread 1, http-reuse always, balance roundrobin, mode http, no log"
[ "$PINGORA" = 1 ] && say "pingora: bench/pingora (pingora-proxy $(grep -m1 -A1 'name = "pingora-proxy"' "$BENCH_ROOT/bench/pingora/Cargo.lock" 2>/dev/null | sed -n 's/version = "\(.*\)"/\1/p' || true)), 1 worker thread, round robin, upstream keep-alive pool"

declare -A C_PORT=() C_PID=()
for c in "${CONTENDERS[@]}"; do
  [ -n "${FAILED[$c]:-}" ] && continue
  if ! "start_$c" >"$WORK/$c.start" 2>&1; then
    FAILED[$c]="did not start: $(tail -3 "$WORK/$c.start" | tr '\n' ' ')"
    say "${NAME[$c]}: FAILED to start: ${FAILED[$c]}"; continue
  fi
  C_PORT[$c]=$PORT C_PID[$c]=$MAIN_PID
  # Before any load: 4 answers, all 200 with the hello body, from both backends (round-robin).
  if ! seen=$(hello_serves "$PORT" 4); then
    FAILED[$c]="does not serve before load: $seen"; say "${NAME[$c]}: FAILED: ${FAILED[$c]}"; continue
  fi
  want="1 2"; if [ "$c" = direct ]; then want=1; fi
  [ "$seen" = "$want" ] || say "WARNING ${NAME[$c]}: 4 requests were answered by backend(s) '$seen', expected '$want'"
  pids="$MAIN_PID $(children_of "$MAIN_PID" | tr '\n' ' ')"
  aff=""; for p in $pids; do aff+="$p:cpu$(affinity_of "$p")/$(threads_of "$p")thr "; done
  extra=""
  if [[ $c == herd* ]]; then
    extra="; threads: $(cat /proc/"$MAIN_PID"/task/*/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}' || true)"
  fi
  say "${NAME[$c]}: up on 127.0.0.1:$PORT; answers 200 from backends '$seen'; pid:affinity/threads $aff$extra"
done

herd_log_mark() { stat -c %s "${HERD_LOGFILE[$1]}" 2>/dev/null || echo 0; }

for ((round = 0; round <= ROUNDS; round++)); do
  if [ "$round" -eq 0 ]; then d=$WARMUP_DURATION; tag="warm-up"
  else d=$DURATION; tag="round $round/$ROUNDS"; fi
  round_order "$round" "${CONTENDERS[@]}"
  for c in "${ORDER[@]}"; do
    [ -n "${FAILED[$c]:-}" ] && continue
    out="$WORK/$c.r$round" port=${C_PORT[$c]} pid=${C_PID[$c]}
    mark=0; if [[ $c == herd* ]]; then mark=$(herd_log_mark "$c"); fi
    proxy_pids=(); [ "$c" != direct ] && read -ra proxy_pids <<<"$pid $(children_of "$pid" | tr '\n' ' ')"
    read -ra cpu_pids <<<"$pid $(children_of "$pid" | tr '\n' ' ')"; t0=$(cpu_ticks "${cpu_pids[@]}")
    ok=1; run_wrk "$port" "$d" "$out" "${proxy_pids[@]}" || ok=0
    # CPU the proxy (for 'direct': backend 1) used per request answered, in microseconds.
    us_req=$(awk -v t="$(( $(cpu_ticks "${cpu_pids[@]}") - t0 ))" -v u="$TICK_US" -v n="$W_REQ" 'BEGIN{printf "%.1f", (n > 0 ? t * u / n : 0)}')
    logs=""
    if [[ $c == herd* ]]; then
      # What herd logged during the run: warnings/errors, and (herd-info) access-log lines.
      tail -c +$((mark + 1)) "${HERD_LOGFILE[$c]}" >"$out.herdlog" 2>/dev/null || true
      nwarn=$(grep -Ec ' (WARN|ERROR) |"level":"(WARN|ERROR)"' "$out.herdlog" || true)
      logs="  herd log: $(wc -l <"$out.herdlog") lines, $nwarn WARN/ERROR"
      if [ "$nwarn" -gt 0 ]; then grep -E ' (WARN|ERROR) |"level":"(WARN|ERROR)"' "$out.herdlog" | head -3 >>"$WORK/herd-warnings.txt" || true; fi
      # Keep the disk use of the info-level access log bounded.
      [ "$c" = herd_info ] && : >"${HERD_LOGFILE[$c]}"
    fi
    if [ "$ok" -ne 1 ] || [ "$W_OK" -le 0 ] || ! pid_alive "$pid"; then
      FAILED[$c]="served nothing, wrk failed or the process died ($tag): $(tail -2 "$out" | tr '\n' ' ')"
      say "$tag ${NAME[$c]}: FAILED (served nothing)"; continue
    fi
    say "$(printf '%-9s %-9s %6s req/s  p50 %5s ms  p99 %6s ms  max %7s ms  2xx %7s  non-2xx %s  sockerr %s  %5s us CPU/req  (%s)%s' \
      "$tag" "${NAME[$c]}" "$W_RPS" "$W_P50" "$W_P99" "$W_MAX" "$W_OK" "$W_NON2XX" "$W_SOCKERR" "$us_req" "$W_CPU; $W_UP" "$logs")"
    if [ "$round" -gt 0 ]; then
      RPS[$c]+="$W_RPS "; P99[$c]+="$W_P99 "; P50[$c]+="$W_P50 "; USREQ[$c]+="$us_req "
      ERRS[$c]=$(( ${ERRS[$c]:-0} + W_NON2XX + W_SOCKERR ))
      REQS[$c]=$(( ${REQS[$c]:-0} + W_REQ ))
      # No proxy runs during 'direct': whatever keeps CPU PROXY_CPU busy then is outside load.
      [ "$c" = direct ] && OUTSIDE+="$W_PBUSY "
    fi
  done
done

# Still serving after the load, and still on the budget?
for c in "${CONTENDERS[@]}"; do
  [ -n "${FAILED[$c]:-}" ] && continue
  seen=$(hello_serves "${C_PORT[$c]}" 2) || { FAILED[$c]="stopped serving after the load: $seen"; continue; }
  for p in "${C_PID[$c]}" $(children_of "${C_PID[$c]}"); do
    a=$(affinity_of "$p")
    want=$PROXY_CPU; [ "$c" = direct ] && want=$SIDE_CPU
    [ "$a" = "$want" ] || say "WARNING ${NAME[$c]}: pid $p has affinity '$a', expected '$want'"
  done
done
if [ -s "$WORK/herd-warnings.txt" ]; then
  say "herd WARN/ERROR lines during load (first ones):"; sed 's/^/#   /' "$WORK/herd-warnings.txt" | head -10 || true
fi

# --- summary ---------------------------------------------------------------------------------
status=0
for c in "${!FAILED[@]}"; do say "FAILED ${NAME[$c]}: ${FAILED[$c]}"; status=1; done

declare -A MRPS=() MP99=() MP50=() MUS=()
for c in "${CONTENDERS[@]}"; do
  if [ -n "${FAILED[$c]:-}" ] || [ -z "${RPS[$c]:-}" ]; then MRPS[$c]=n/a MP99[$c]=n/a MP50[$c]=n/a MUS[$c]=n/a; continue; fi
  # shellcheck disable=SC2086  # one value per word
  { MRPS[$c]=$(median ${RPS[$c]}); MP99[$c]=$(median ${P99[$c]}); MP50[$c]=$(median ${P50[$c]}); MUS[$c]=$(median ${USREQ[$c]}); }
done
for c in herd herd_info nginx haproxy pingora direct; do : "${MRPS[$c]:=n/a}" "${MP99[$c]:=n/a}" "${MP50[$c]:=n/a}" "${MUS[$c]:=n/a}"; done

best_of() { # map-name higher|lower -> "peer value"
  local -n m=$1; local best=n/a bv=n/a p
  for p in "${PEERS[@]}"; do
    [ "${m[$p]}" = n/a ] && continue
    if [ "$bv" = n/a ] || awk -v a="${m[$p]}" -v b="$bv" -v w="$2" 'BEGIN{exit !(w == "higher" ? a+0 > b+0 : a+0 < b+0)}'; then
      best=${NAME[$p]}; bv=${m[$p]}
    fi
  done
  echo "$best $bv"
}
read -r rps_peer rps_peer_v < <(best_of MRPS higher)
read -r p99_peer p99_peer_v < <(best_of MP99 lower)
rps_ratio=$(ratio "${MRPS[herd]}" "$rps_peer_v")
p99_ratio=$(ratio "${MP99[herd]}" "$p99_peer_v")
read -r cpu_peer cpu_peer_v < <(best_of MUS lower)
cpu_ratio_haproxy=$(ratio "${MUS[herd]}" "${MUS[haproxy]}")
cpu_ratio_best=$(ratio "${MUS[herd]}" "$cpu_peer_v")

echo
say "medians over $ROUNDS rounds (CPU budget: $BUDGET); CPU us/req = user+system CPU time of the proxy's processes (direct: backend 1) per request"
printf '| %-10s | %8s | %10s | %10s | %15s | %14s | %21s | %15s |\n' contender "req/s" "p50 ms" "p99 ms" "herd/this req/s" "CPU us/req" "requests (all rounds)" "non-2xx+sockerr"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------ ---------- ------------ ------------ ----------------- ---------------- ----------------------- -----------------
for c in "${CONTENDERS[@]}"; do
  printf '| %-10s | %8s | %10s | %10s | %15s | %14s | %21s | %15s |\n' "${NAME[$c]}" "${MRPS[$c]}" "${MP50[$c]}" "${MP99[$c]}" \
    "$(ratio "${MRPS[herd]}" "${MRPS[$c]}")" "${MUS[$c]}" "${REQS[$c]:-n/a}" "${ERRS[$c]:-n/a}"
done
echo

if [ -n "$OUTSIDE" ]; then
  read -ra outside <<<"$OUTSIDE"
  busy=$(printf '%s%%, ' "${outside[@]}"); busy=${busy%, }
  say "noise: CPU $PROXY_CPU (the proxies' CPU) was busy $busy during the 'direct' runs, when no proxy was loaded: load from outside this benchmark (median $(median "${outside[@]}")%)"
fi
echo
cpu="cpu=proxy:$PROXY_CPU,backends+wrk:$SIDE_CPU"
result "P1 herd_rps=${MRPS[herd]} best_peer=$rps_peer best_peer_rps=$rps_peer_v ratio=$rps_ratio goal=1.15 $(meets "$rps_ratio" '>=' 1.15) nginx_rps=${MRPS[nginx]} haproxy_rps=${MRPS[haproxy]} pingora_rps=${MRPS[pingora]} direct_rps=${MRPS[direct]} herd_info_rps=${MRPS[herd_info]} cpu_us_per_req=herd:${MUS[herd]},nginx:${MUS[nginx]},haproxy:${MUS[haproxy]},pingora:${MUS[pingora]},herd_info:${MUS[herd_info]} herd_log=warn $cpu"
result "P1-p99 herd_p99_ms=${MP99[herd]} best_peer=$p99_peer best_peer_p99_ms=$p99_peer_v ratio=$p99_ratio goal=<= $(meets "${MP99[herd]}" '<=' "$p99_peer_v") nginx_p99_ms=${MP99[nginx]} haproxy_p99_ms=${MP99[haproxy]} pingora_p99_ms=${MP99[pingora]} direct_p99_ms=${MP99[direct]} herd_info_p99_ms=${MP99[herd_info]} herd_log=warn $cpu"
result "P1-cpu herd_us_per_req=${MUS[herd]} haproxy_us_per_req=${MUS[haproxy]} ratio_haproxy=$cpu_ratio_haproxy goal=0.9 $(meets "$cpu_ratio_haproxy" '<=' 0.9) best_peer=$cpu_peer best_peer_us_per_req=$cpu_peer_v ratio_best=$cpu_ratio_best nginx_us_per_req=${MUS[nginx]} pingora_us_per_req=${MUS[pingora]} $cpu"
say "elapsed ${SECONDS}s"
exit "$status"
