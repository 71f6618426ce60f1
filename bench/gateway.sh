#!/usr/bin/env bash
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
#       direct     wrk straight at backend 1 (no proxy): the reference limit
#
# All contenders are started once and stay up side by side (idle while another one is loaded).
# One warm-up round, then ROUNDS measured rounds; in each round every contender gets the same wrk
# run, the order rotating from round to round (A B C, B C A, ...). Medians per contender; the
# ratio is herd / the better of nginx and HAProxy (the direct run is the reference limit, not a
# peer).
#
# Usage: bash bench/gateway.sh
#   env: ROUNDS=5 DURATION=5 WARMUP_DURATION=3 CONNS=64 HERD_INFO=1 COUNT_STATUS=1 NGINX_KEEPALIVE=64
#        PROXY_CPU=1 SIDE_CPU=0 HERD_REV=<commit> HERD_BENCH_CACHE=/tmp/herd-bench
# Exit: 0 when every contender ran (goals met or not), 1 when a contender failed to run.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# What is built and measured: the working tree (default), or with HERD_REV=<commit> that
# committed revision, exported with `git archive` (read-only for the repository) into
# $HERD_BENCH_CACHE/src-<sha> and built there with its own target dir, so a tree that is being
# edited does not change what is measured.
HERD_REV=${HERD_REV:-}
CACHE=${HERD_BENCH_CACHE:-/tmp/herd-bench}
SRC=$ROOT

ROUNDS=${ROUNDS:-5}                 # measured rounds, after one warm-up round
DURATION=${DURATION:-5}             # seconds per measured wrk run
WARMUP_DURATION=${WARMUP_DURATION:-3}
CONNS=${CONNS:-64}
HERD_INFO=${HERD_INFO:-1}           # 1: also measure herd with HERD_LOG=info (access log on)
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-64}   # nginx's upstream `keepalive` (idle connections cached)
COUNT_STATUS=${COUNT_STATUS:-1}     # 1: wrk counts every status code in a Lua response() callback
                                    # 0: only wrk's built-in count of responses >= 400 (cheaper)

# CPU budget: the proxy under test alone on PROXY_CPU; the two backends and wrk (1 thread) on
# SIDE_CPU. Every proxy gets 1 worker (thread or process) on that one CPU.
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=${PROXY_CPU:-1}; SIDE_CPU=${SIDE_CPU:-0}
else PROXY_CPU=${PROXY_CPU:-0}; SIDE_CPU=${SIDE_CPU:-0}; fi
BUDGET="proxy (1 worker thread/process) pinned to CPU $PROXY_CPU; both backends (hello, 1 thread each) and wrk -t1 -c$CONNS pinned to CPU $SIDE_CPU"

say() { printf '# %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d /tmp/herd-bench.gw.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"   # nginx's worker may run as an unprivileged user

# --- cleanup ---------------------------------------------------------------------------------
# Every process this script starts is recorded here and ended on exit, whatever happens.
HERD_CFGS=()      # herd configs that may still be up
KILL_PIDS=()      # other pids (backends, nginx master, haproxy, wrk)

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '; }

wait_gone() { # pid timeout_s
  local i
  for ((i = 0; i < $2 * 20; i++)); do pid_alive "$1" || return 0; sleep 0.05; done
  return 1
}

stop_pid() { # pid: TERM, wait, KILL; its children too
  local kids; kids=$(children_of "$1")
  pid_alive "$1" && kill -TERM "$1" 2>/dev/null
  wait_gone "$1" 5 || kill -KILL "$1" 2>/dev/null
  for k in $kids; do pid_alive "$k" && kill -KILL "$k" 2>/dev/null; done
  return 0
}

stop_herd_cfg() { # config
  local cfg=$1 pid kids
  [ -f "$cfg" ] || return 0
  pid=$(cat "$(dirname "$cfg")/.herd/herd.pid" 2>/dev/null)
  pid_alive "$pid" || return 0
  kids=$(children_of "$pid")
  taskset -c "$SIDE_CPU" "$HERD" -c "$cfg" down >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null
  wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null
  for k in $kids; do pid_alive "$k" && kill -KILL "$k" 2>/dev/null; done
  return 0
}

cleanup() {
  local cfg pid
  trap - EXIT INT TERM
  for cfg in "${HERD_CFGS[@]}"; do stop_herd_cfg "$cfg"; done
  for pid in "${KILL_PIDS[@]}"; do pid_alive "$pid" && stop_pid "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -----------------------------------------------------------------------------------
command -v curl >/dev/null || die "curl is required"
command -v taskset >/dev/null || die "taskset (util-linux) is required"

apt_install() { # packages...; never starts the packages' services (RUNLEVEL=1)
  say "installing $* (Debian, apt-get)"
  { DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@"; }
  } >>"$WORK/apt.log" 2>&1
}
command -v wrk >/dev/null || apt_install wrk || { cat "$WORK/apt.log"; die "cannot install wrk"; }

declare -A FAILED=()   # contender -> reason it failed to run

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || apt_install nginx-light || apt_install nginx || true
[ -x "$NGINX" ] || { tail -5 "$WORK/apt.log"; FAILED[nginx]="cannot install nginx-light/nginx"; }
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || apt_install haproxy || true
[ -x "$HAPROXY" ] || { tail -5 "$WORK/apt.log"; FAILED[haproxy]="cannot install haproxy"; }

if [ -n "$HERD_REV" ]; then
  sha=$(git -C "$ROOT" rev-parse --verify -q "$HERD_REV^{commit}") || die "HERD_REV=$HERD_REV is not a commit"
  SRC="$CACHE/src-${sha:0:12}"
  if [ ! -f "$SRC/Cargo.toml" ]; then
    say "exporting $HERD_REV (${sha:0:12}) with git archive into $SRC"
    rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp" &&
      git -C "$ROOT" archive --format=tar "$sha" | tar -x -C "$SRC.tmp" && mv "$SRC.tmp" "$SRC" ||
      die "cannot export $HERD_REV"
  fi
  export CARGO_TARGET_DIR="$CACHE/target"
  HERD="$CACHE/target/release/herd" HELLO="$CACHE/target/release/hello"
else
  HERD="$ROOT/target/release/herd" HELLO="$ROOT/target/release/hello"
fi
say "building $SRC (cargo build --release -p hello -p herd)"
if ! (cd "$SRC" && cargo build --release -q -p hello -p herd) >"$WORK/cargo.log" 2>&1 ||
  [ ! -x "$HERD" ] || [ ! -x "$HELLO" ]; then
  cat "$WORK/cargo.log"
  [ -x "$HELLO" ] || die "cannot build the hello backend"
  FAILED[herd]="cargo build failed"; [ "$HERD_INFO" = 1 ] && FAILED[herd_info]="cargo build failed"
fi

# A free TCP port on 127.0.0.1 (bound, read back, released), not one handed out before.
USED_PORTS=" "
free_port() {
  local p
  while :; do
    if command -v python3 >/dev/null; then
      p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    else
      p=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
    fi
    case $USED_PORTS in *" $p "*) continue ;; esac
    USED_PORTS+="$p "; echo "$p"; return
  done
}

# Workers seen in the JSON bodies of N requests to a port: "1 2" when both backends answered.
# Every answer must be 200 with the hello body, else it fails.
check_serves() { # port n
  local i code workers=""
  for ((i = 0; i < $2; i++)); do
    code=$(curl -s -o "$WORK/body" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null)
    [ "$code" = 200 ] && grep -q 'Hello from distributed node' "$WORK/body" || { echo "answer $((i + 1)): status ${code:-none}"; return 1; }
    workers+="$(grep -o '"worker":[0-9]*' "$WORK/body" | cut -d: -f2) "
  done
  printf '%s\n' $workers | sort -u | tr '\n' ' ' | sed 's/ $//'
}

wait_http() { # port timeout_s: until it answers 200
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# CPU time (user + system, all threads) the processes used, in clock ticks: what a proxy spends
# per request, whatever else runs on the machine.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { # pids...
  local p t=0 f
  for p in "$@"; do
    f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$t"
}

affinity_of() { taskset -cp "$1" 2>/dev/null | awk -F': ' '{print $2}'; }
threads_of() { ls "/proc/$1/task" 2>/dev/null | wc -l; }

# wrk's summary plus every status code counted through the response() callback (per thread
# counters, collected in done()). errors.status is wrk's own count of responses >= 400.
# The callback costs wrk CPU (it shares SIDE_CPU with the backends); COUNT_STATUS=0 drops it and
# counts 2xx as requests - errors.status (responses < 200 and 3xx are then not seen).
if [ "$COUNT_STATUS" = 1 ]; then
  COUNT_DESC="every status code counted by a wrk Lua response() callback"
  LUA_RESPONSE='response = function(status, headers, body)
  if status >= 200 and status < 300 then ok2xx = ok2xx + 1 else non2xx = non2xx + 1 end
end'
else
  COUNT_DESC="COUNT_STATUS=0: only wrk's own count of responses >= 400 (no Lua response callback)"
  LUA_RESPONSE='ok2xx, non2xx = -1, -1'
fi
cat >"$WORK/summary.lua" <<EOF
$LUA_RESPONSE
EOF
cat >>"$WORK/summary.lua" <<'EOF'
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) if response then ok2xx = 0; non2xx = 0 end end
done = function(summary, latency, requests)
  local ok, bad = 0, 0
  local e = summary.errors
  for _, t in ipairs(threads) do ok = ok + t:get("ok2xx"); bad = bad + t:get("non2xx") end
  if ok < 0 then ok = summary.requests - e.status; bad = e.status end
  io.write(string.format(
    "WRK requests=%d duration_us=%d ok2xx=%d non2xx=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, ok, bad, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
EOF

# Busy share of each CPU between two /proc/stat snapshots.
cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat; }
cpu_busy() { # before after cpu -> percent
  awk -v c="cpu$3" -v a="$1" -v b="$2" 'BEGIN{
    n = split(a, A, "\n"); for (i = 1; i <= n; i++) { split(A[i], f, " "); if (f[1] == c) { t0 = 0; for (j = 2; j <= 11; j++) t0 += f[j]; i0 = f[5] + f[6] } }
    n = split(b, B, "\n"); for (i = 1; i <= n; i++) { split(B[i], f, " "); if (f[1] == c) { t1 = 0; for (j = 2; j <= 11; j++) t1 += f[j]; i1 = f[5] + f[6] } }
    d = t1 - t0; printf "%.0f", (d > 0 ? 100 * (d - (i1 - i0)) / d : 0) }'
}

# run_wrk port duration_s out_file [proxy pids]: sets W_* from wrk's summary, the CPU busy
# shares and W_UP. Whether a proxy reuses its upstream connections: halfway through, the connections the
# proxy's own processes hold open to the backends; over the whole run, the TCP connects made on
# the machine (Tcp ActiveOpens in /proc/net/snmp; wrk's own $CONNS are part of it).
W_REQ=0 W_RPS=0 W_OK=0 W_NON2XX=0 W_SOCKERR=0 W_STATUS=0 W_P50=0 W_P99=0 W_MAX=0 W_CPU="" W_UP=""
active_opens() { awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ActiveOpens") c = i; h = 1 } else print $c }' /proc/net/snmp; }
backend_conns_of() { # pids...: established connections to a backend owned by these processes
  local re; re=$(printf 'pid=%s,|' "$@"); re=${re%|}
  ss -Htnp state established "( dport = :$B1 or dport = :$B2 )" 2>/dev/null | grep -cE "$re"
}
run_wrk() { # port duration_s out_file pids-of-the-proxy...
  local before after wrk_pid opens0 port=$1 dur=$2 out=$3
  shift 3
  opens0=$(active_opens)
  before=$(cpu_snap)
  taskset -c "$SIDE_CPU" wrk -t1 -c"$CONNS" -d"$dur"s --latency -s "$WORK/summary.lua" \
    "http://127.0.0.1:$port/" >"$out" 2>&1 &
  wrk_pid=$!; KILL_PIDS+=("$wrk_pid")
  sleep "$(awk -v d="$dur" 'BEGIN{print d / 2}')"
  local held=-; [ $# -gt 0 ] && held=$(backend_conns_of "$@")
  wait "$wrk_pid"
  after=$(cpu_snap)
  W_UP="upstream conns held $held, tcp connects in run $(( $(active_opens) - opens0 ))"
  W_PBUSY=$(cpu_busy "$before" "$after" "$PROXY_CPU")
  W_CPU="cpu$PROXY_CPU $W_PBUSY% cpu$SIDE_CPU $(cpu_busy "$before" "$after" "$SIDE_CPU")%"
  local line; line=$(grep '^WRK ' "$out" | tail -1)
  [ -n "$line" ] || return 1
  local w_requests w_duration_us w_ok2xx w_non2xx w_connect w_read w_write w_status w_timeout w_p50_us w_p99_us w_max_us
  eval "$(echo "$line" | sed 's/^WRK //; s/\([a-z0-9_]*\)=/w_\1=/g')"
  W_REQ=$w_requests W_OK=$w_ok2xx W_NON2XX=$w_non2xx W_STATUS=$w_status
  W_RPS=$(awk -v r="$w_requests" -v d="$w_duration_us" 'BEGIN{printf "%.0f", (d > 0 ? r / (d / 1e6) : 0)}')
  W_SOCKERR=$((w_connect + w_read + w_write + w_timeout))
  W_P50=$(awk -v u="$w_p50_us" 'BEGIN{printf "%.2f", u / 1000}')
  W_P99=$(awk -v u="$w_p99_us" 'BEGIN{printf "%.2f", u / 1000}')
  W_MAX=$(awk -v u="$w_max_us" 'BEGIN{printf "%.2f", u / 1000}')
}

# --- backends --------------------------------------------------------------------------------
B1=$(free_port) B2=$(free_port)
declare -A BPID=()
for i in 1 2; do
  port=$([ "$i" = 1 ] && echo "$B1" || echo "$B2")
  # HERD_INSTANCE only sets the "worker" field of the answer, to see which backend answered.
  PORT=$port HELLO_DELAY_MS=0 HERD_INSTANCE=$i taskset -c "$SIDE_CPU" "$HELLO" >"$WORK/backend$i.log" 2>&1 &
  BPID[$i]=$!; KILL_PIDS+=("${BPID[$i]}")
  wait_http "$port" 10 || { cat "$WORK/backend$i.log"; die "backend $i (hello on 127.0.0.1:$port) did not answer"; }
done

# --- contenders: start_X sets PORT and MAIN_PID (the process to watch) ------------------------
PORT= MAIN_PID=
declare -A HERD_LOGFILE=()

start_herd_with() { # key log_level
  local key=$1 level=$2 dir
  dir=$(mktemp -d "$WORK/$key.XXXX")
  PORT=$(free_port)
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
  PORT=$(free_port)
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
  PORT=$(free_port)
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

start_direct() { PORT=$B1; MAIN_PID=${BPID[1]}; }

# --- helpers for figures ---------------------------------------------------------------------
median() { # numbers...
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if (NR == 0) {print "n/a"} else if (NR % 2) {print a[(NR+1)/2]} else {v = (a[NR/2]+a[NR/2+1])/2; if (v == int(v)) print v; else printf "%.2f\n", v}}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "n/a" }'; }
meets() { # value op goal -> met|missed
  awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN{ if (v == "n/a" || g == "n/a") {print "missed"; exit}
    ok = (op == ">=") ? (v+0 >= g+0) : (v+0 <= g+0); print (ok ? "met" : "missed") }'
}

CONTENDERS=(herd nginx haproxy direct)
[ "$HERD_INFO" = 1 ] && CONTENDERS=(herd herd_info nginx haproxy direct)
declare -A NAME=([herd]=herd [herd_info]=herd-info [nginx]=nginx [haproxy]=haproxy [direct]=direct)
declare -A RPS=() P99=() P50=() USREQ=() ERRS=() REQS=()   # space-separated per-round values / totals
OUTSIDE=""                                         # CPU PROXY_CPU busy % during the direct runs

if [ -n "$HERD_REV" ]; then git_rev="${sha:0:7} (HERD_REV=$HERD_REV, exported with git archive)"
else
  git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)
  git -C "$ROOT" diff --quiet HEAD -- crates examples Cargo.toml Cargo.lock 2>/dev/null || git_rev+="+uncommitted changes (working tree)"
fi
say "herd P1 gateway benchmark — $(date -u)"
say "nproc=$(nproc); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2); nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'); HAProxy $("$HAPROXY" -v 2>/dev/null | head -1 | awk '{print $3}'); herd $("$HERD" --version 2>/dev/null | awk '{print $2}') at commit $git_rev"
say "CPU budget: $BUDGET"
say "load: wrk -t1 -c$CONNS -d${DURATION}s --latency, keep-alive, GET /; 1 warm-up round (${WARMUP_DURATION}s runs) + $ROUNDS measured rounds; contenders alternate, order rotating per round; $COUNT_DESC"
say "backends: 2 x $HELLO (HELLO_DELAY_MS=0) on 127.0.0.1:$B1 and 127.0.0.1:$B2, pids ${BPID[1]} ${BPID[2]}, shared by all contenders; 'direct' = wrk straight at backend 1 (127.0.0.1:$B1), no proxy: the reference 'limit' (1 backend sharing CPU $SIDE_CPU with wrk)"
say "herd: HERD_LOG=warn (no per-request access log); herd-info: HERD_LOG=info (herd's default, access log written to its data_dir/herd.log)"
say "nginx: worker_processes 1, upstream keepalive $NGINX_KEEPALIVE (keepalive_requests 1000000 both sides), proxy_http_version 1.1, Connection \"\", access_log off; haproxy: nbthread 1, http-reuse always, balance roundrobin, mode http, no log"

declare -A C_PORT=() C_PID=()
for c in "${CONTENDERS[@]}"; do
  [ -n "${FAILED[$c]:-}" ] && continue
  if ! "start_$c" >"$WORK/$c.start" 2>&1; then
    FAILED[$c]="did not start: $(tail -3 "$WORK/$c.start" | tr '\n' ' ')"
    say "${NAME[$c]}: FAILED to start: ${FAILED[$c]}"; continue
  fi
  C_PORT[$c]=$PORT C_PID[$c]=$MAIN_PID
  # Before any load: 4 answers, all 200 with the hello body, from both backends (round-robin).
  if ! seen=$(check_serves "$PORT" 4); then
    FAILED[$c]="does not serve before load: $seen"; say "${NAME[$c]}: FAILED: ${FAILED[$c]}"; continue
  fi
  want="1 2"; [ "$c" = direct ] && want=1
  [ "$seen" = "$want" ] || say "WARNING ${NAME[$c]}: 4 requests were answered by backend(s) '$seen', expected '$want'"
  pids="$MAIN_PID $(children_of "$MAIN_PID" | tr '\n' ' ')"
  aff=""; for p in $pids; do aff+="$p:cpu$(affinity_of "$p")/$(threads_of "$p")thr "; done
  extra=""
  [[ $c == herd* ]] && extra="; threads: $(cat /proc/"$MAIN_PID"/task/*/comm 2>/dev/null | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')"
  say "${NAME[$c]}: up on 127.0.0.1:$PORT; answers 200 from backends '$seen'; pid:affinity/threads $aff$extra"
done

herd_log_mark() { stat -c %s "${HERD_LOGFILE[$1]}" 2>/dev/null || echo 0; }

for ((round = 0; round <= ROUNDS; round++)); do
  if [ "$round" -eq 0 ]; then d=$WARMUP_DURATION; tag="warm-up"; order=("${CONTENDERS[@]}")
  else
    d=$DURATION; tag="round $round/$ROUNDS"; k=$(((round - 1) % ${#CONTENDERS[@]}))
    order=("${CONTENDERS[@]:k}" "${CONTENDERS[@]:0:k}")
  fi
  for c in "${order[@]}"; do
    [ -n "${FAILED[$c]:-}" ] && continue
    out="$WORK/$c.r$round" port=${C_PORT[$c]} pid=${C_PID[$c]}
    [[ $c == herd* ]] && mark=$(herd_log_mark "$c")
    proxy_pids=""; [ "$c" != direct ] && proxy_pids="$pid $(children_of "$pid")"
    cpu_pids="$pid $(children_of "$pid")"; t0=$(cpu_ticks $cpu_pids)
    ok=1; run_wrk "$port" "$d" "$out" $proxy_pids || ok=0
    # CPU the proxy (for 'direct': backend 1) used per request answered, in microseconds.
    us_req=$(awk -v t="$(( $(cpu_ticks $cpu_pids) - t0 ))" -v u="$TICK_US" -v n="$W_REQ" 'BEGIN{printf "%.1f", (n > 0 ? t * u / n : 0)}')
    logs=""
    if [[ $c == herd* ]]; then
      # What herd logged during the run: warnings/errors, and (herd-info) access-log lines.
      tail -c +$((mark + 1)) "${HERD_LOGFILE[$c]}" >"$out.herdlog" 2>/dev/null
      nwarn=$(grep -Ec ' (WARN|ERROR) ' "$out.herdlog")
      logs="  herd log: $(wc -l <"$out.herdlog") lines, $nwarn WARN/ERROR"
      [ "$nwarn" -gt 0 ] && grep -E ' (WARN|ERROR) ' "$out.herdlog" | head -3 >>"$WORK/herd-warnings.txt"
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
  seen=$(check_serves "${C_PORT[$c]}" 2) || { FAILED[$c]="stopped serving after the load: $seen"; continue; }
  for p in ${C_PID[$c]} $(children_of "${C_PID[$c]}"); do
    a=$(affinity_of "$p")
    want=$PROXY_CPU; [ "$c" = direct ] && want=$SIDE_CPU
    [ "$a" = "$want" ] || say "WARNING ${NAME[$c]}: pid $p has affinity '$a', expected '$want'"
  done
done
if [ -s "$WORK/herd-warnings.txt" ]; then
  say "herd WARN/ERROR lines during load (first ones):"; sed 's/^/#   /' "$WORK/herd-warnings.txt" | head -10
fi

# --- summary ---------------------------------------------------------------------------------
status=0
for c in "${!FAILED[@]}"; do say "FAILED ${NAME[$c]}: ${FAILED[$c]}"; status=1; done

declare -A MRPS=() MP99=() MP50=() MUS=()
for c in "${CONTENDERS[@]}"; do
  if [ -n "${FAILED[$c]:-}" ] || [ -z "${RPS[$c]:-}" ]; then MRPS[$c]=n/a MP99[$c]=n/a MP50[$c]=n/a MUS[$c]=n/a; continue; fi
  MRPS[$c]=$(median ${RPS[$c]}); MP99[$c]=$(median ${P99[$c]}); MP50[$c]=$(median ${P50[$c]}); MUS[$c]=$(median ${USREQ[$c]})
done
for c in herd herd_info nginx haproxy direct; do : "${MRPS[$c]:=n/a}" "${MP99[$c]:=n/a}" "${MP50[$c]:=n/a}" "${MUS[$c]:=n/a}"; done

best_of() { # map-name higher|lower -> "peer value"
  local -n m=$1; local best=n/a bv=n/a p
  for p in nginx haproxy; do
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

echo
say "medians over $ROUNDS rounds (CPU budget: $BUDGET); CPU us/req = user+system CPU time of the proxy's processes (direct: backend 1) per request"
printf '| %-10s | %8s | %10s | %10s | %15s | %14s | %21s | %15s |\n' contender "req/s" "p50 ms" "p99 ms" "herd/this req/s" "CPU us/req" "requests (all rounds)" "non-2xx+sockerr"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------ ---------- ------------ ------------ ----------------- ---------------- ----------------------- -----------------
for c in "${CONTENDERS[@]}"; do
  printf '| %-10s | %8s | %10s | %10s | %15s | %14s | %21s | %15s |\n' "${NAME[$c]}" "${MRPS[$c]}" "${MP50[$c]}" "${MP99[$c]}" \
    "$(ratio "${MRPS[herd]}" "${MRPS[$c]}")" "${MUS[$c]}" "${REQS[$c]:-n/a}" "${ERRS[$c]:-n/a}"
done
echo

[ -n "$OUTSIDE" ] && say "noise: CPU $PROXY_CPU (the proxies' CPU) was busy $(echo $OUTSIDE | sed 's/ /%, /g')% during the 'direct' runs, when no proxy was loaded: load from outside this benchmark (median $(median $OUTSIDE)%)"
echo
cpu="cpu=proxy:$PROXY_CPU,backends+wrk:$SIDE_CPU"
echo "RESULT P1 herd_rps=${MRPS[herd]} best_peer=$rps_peer best_peer_rps=$rps_peer_v ratio=$rps_ratio goal=1.15 $(meets "$rps_ratio" '>=' 1.15) nginx_rps=${MRPS[nginx]} haproxy_rps=${MRPS[haproxy]} direct_rps=${MRPS[direct]} herd_info_rps=${MRPS[herd_info]} cpu_us_per_req=herd:${MUS[herd]},nginx:${MUS[nginx]},haproxy:${MUS[haproxy]},herd_info:${MUS[herd_info]} herd_log=warn $cpu"
echo "RESULT P1-p99 herd_p99_ms=${MP99[herd]} best_peer=$p99_peer best_peer_p99_ms=$p99_peer_v ratio=$p99_ratio goal=<= $(meets "${MP99[herd]}" '<=' "$p99_peer_v") nginx_p99_ms=${MP99[nginx]} haproxy_p99_ms=${MP99[haproxy]} direct_p99_ms=${MP99[direct]} herd_info_p99_ms=${MP99[herd_info]} herd_log=warn $cpu"
say "elapsed ${SECONDS}s"
exit "$status"
