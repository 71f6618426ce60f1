# shellcheck shell=bash disable=SC2034  # sets variables its callers read (W_*, HERD, HELLO, ORDER, ...)
# bench/lib.sh — helpers shared by the bench scripts (cluster.sh, gateway.sh, robustness.sh).
# Sourced, never run: `. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"` after `set -euo pipefail`.
#
# What it provides:
#   output      say, die, result (one `RESULT <figure> key=value ...` line)
#   clean-up    bench_init (WORK dir + EXIT/INT/TERM traps), HERD_CFGS / KILL_PIDS / CLEANUP_HOOKS
#               (every process a script starts is registered in one of them and ended on exit),
#               pid_alive, children_of, wait_gone, stop_pid, forget_pid, stop_herd_cfg, on_cpu
#   tools       need, apt_install, ensure_wrk
#   build       build_herd (working tree, or HERD_REV=<commit> exported with git archive; honours
#               CARGO_TARGET_DIR), herd_rev_desc
#   ports/http  free_port VAR, wait_http, hello_serves
#   wrk         write_wrk_lua, parse_wrk (W_* variables)
#   herd        herd_up, herd_ls_json, herd_ready_count, herd_wait_ready
#   procfs      vmrss_kb, cpu_ticks, affinity_of, threads_of
#   memory      vmhwm_kb (peak resident set)
#   loadgen     build_loadgen (bench/loadgen: fixed-rate load generator, echo app, redb-direct),
#               parse_loadgen (L_*)
#   figures     median, median_int, ratio, meets, round_order
#
# Functions return non-zero instead of exiting where a caller may want to carry on (a contender
# that fails to start is reported, not fatal); every command whose failure is expected is guarded,
# so the helpers are safe under `set -e`.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${HERD_BENCH_CACHE:-/tmp/herd-bench}   # exported sources, HERD_REV builds, npm installs

# --- output ----------------------------------------------------------------------------------
say() { printf '# %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# result ID key=value...: the machine-readable line of one figure.
result() { printf 'RESULT %s\n' "$*"; }

# --- processes and clean-up ------------------------------------------------------------------
# Every process a script starts is recorded in one of these and ended on exit, whatever happens.
HERD_CFGS=()      # herd configs whose herd may still be up (`herd down`, then TERM/KILL)
KILL_PIDS=()      # other pids (backends, proxies, wrk, ...): TERM, then KILL, children too
CLEANUP_HOOKS=()  # functions run first on exit (e.g. `pm2 kill` per PM2 home)
CLI_CPU=${CLI_CPU:-}   # CPU for CLI calls made during clean-up (`herd down`); empty: any

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

wait_gone() { # pid timeout_s: polls until the process is gone
  local i
  for ((i = 0; i < $2 * 20; i++)); do pid_alive "$1" || return 0; sleep 0.05; done
  return 1
}

on_cpu() { # cpu command...: pinned to that CPU when one is given
  local cpu=$1; shift
  if [ -n "$cpu" ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

# forget_pid pid: drops a pid that has ended from KILL_PIDS, so that clean-up never signals a
# later process that was given the same number (pid_max may be as low as 32768).
forget_pid() {
  local i
  for i in "${!KILL_PIDS[@]}"; do if [ "${KILL_PIDS[$i]}" = "$1" ]; then unset 'KILL_PIDS[i]'; fi; done
  return 0
}

stop_pid() { # pid: TERM, wait up to 5 s, KILL; its children get KILL too
  local k kids
  kids=$(children_of "$1")
  if pid_alive "$1"; then kill -TERM "$1" 2>/dev/null || true; fi
  wait_gone "$1" 5 || kill -KILL "$1" 2>/dev/null || true
  for k in $kids; do if pid_alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi; done
  wait "$1" 2>/dev/null || true   # reaps it when it is this shell's child
  forget_pid "$1"
}

stop_herd_cfg() { # config: `herd down`, wait for herd itself, KILL what is left
  local cfg=$1 pid k kids
  [ -f "$cfg" ] || return 0
  pid=$(cat "$(dirname "$cfg")/.herd/herd.pid" 2>/dev/null || true)
  pid_alive "$pid" || return 0
  kids=$(children_of "$pid")
  on_cpu "$CLI_CPU" "$HERD" -c "$cfg" down >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  # `herd down` returns before herd has finished stopping; wait for the process itself.
  wait_gone "$pid" 15 || kill -KILL "$pid" 2>/dev/null || true
  for k in $kids; do if pid_alive "$k"; then kill -KILL "$k" 2>/dev/null || true; fi; done
  return 0
}

bench_cleanup() {
  set +e
  trap - EXIT INT TERM
  local hook cfg pid
  for hook in "${CLEANUP_HOOKS[@]}"; do "$hook"; done
  for cfg in "${HERD_CFGS[@]}"; do stop_herd_cfg "$cfg"; done
  for pid in "${KILL_PIDS[@]}"; do pid_alive "$pid" && stop_pid "$pid"; done
  [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${KEEP_WORK:-}" ] && rm -rf "$WORK"
}

bench_init() { # name: WORK=/tmp/herd-bench.<name>.XXXXXX and the clean-up traps
  WORK=$(mktemp -d "/tmp/herd-bench.$1.XXXXXX") || die "mktemp failed"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# --- tools -----------------------------------------------------------------------------------
need() { # commands...: die naming the first one missing
  local c
  for c in "$@"; do command -v "$c" >/dev/null || die "$c is required"; done
}

apt_install() { # packages...; never starts the packages' services (RUNLEVEL=1)
  say "installing $* (Debian, apt-get)"
  { DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@"; }
  } >>"$WORK/apt.log" 2>&1
}

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  apt_install wrk || { cat "$WORK/apt.log"; die "cannot install wrk"; }
}

# --- building herd ---------------------------------------------------------------------------
# build_herd package...: builds the given cargo packages (release) and sets SRC, HERD, HELLO.
# What is built: the working tree (default), or with HERD_REV=<commit> that committed revision,
# exported with `git archive` (read-only for the repository) into $CACHE/src-<sha>, so a tree that
# is being edited does not change what is measured. The target dir is CARGO_TARGET_DIR when set
# (e.g. CARGO_TARGET_DIR=/tmp/target-bench, to stay out of other builds' way), else the tree's
# target/ (HERD_REV: $CACHE/target). Returns 1 when cargo fails (log in $WORK/cargo.log).
HERD_REV=${HERD_REV:-}
HERD_SHA=
build_herd() {
  local target
  SRC=$BENCH_ROOT
  if [ -n "$HERD_REV" ]; then
    HERD_SHA=$(git -C "$BENCH_ROOT" rev-parse --verify -q "$HERD_REV^{commit}") ||
      die "HERD_REV=$HERD_REV is not a commit"
    SRC="$CACHE/src-${HERD_SHA:0:12}"
    if [ ! -f "$SRC/Cargo.toml" ]; then
      say "exporting $HERD_REV (${HERD_SHA:0:12}) with git archive into $SRC"
      { rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp" &&
        git -C "$BENCH_ROOT" archive --format=tar "$HERD_SHA" | tar -x -C "$SRC.tmp" &&
        mv "$SRC.tmp" "$SRC"; } || die "cannot export $HERD_REV"
    fi
    target=${CARGO_TARGET_DIR:-$CACHE/target}
  else
    target=${CARGO_TARGET_DIR:-$SRC/target}
  fi
  HERD="$target/release/herd" HELLO="$target/release/hello"
  local pkgs=() p
  for p in "$@"; do pkgs+=(-p "$p"); done
  say "building $SRC (cargo build --release ${pkgs[*]}, target dir $target)"
  (cd "$SRC" && CARGO_TARGET_DIR=$target cargo build --release -q "${pkgs[@]}") >"$WORK/cargo.log" 2>&1
}

# herd_rev_desc: "abc1234" / "abc1234+uncommitted changes (working tree)" / "abc1234 (HERD_REV=...)".
herd_rev_desc() {
  local rev
  if [ -n "$HERD_REV" ]; then
    echo "${HERD_SHA:0:7} (HERD_REV=$HERD_REV, exported with git archive)"
    return
  fi
  rev=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$BENCH_ROOT" diff --quiet HEAD -- crates examples Cargo.toml Cargo.lock 2>/dev/null ||
    rev+="+uncommitted changes (working tree)"
  echo "$rev"
}

# --- ports and HTTP --------------------------------------------------------------------------
# free_port VAR: a free TCP port on 127.0.0.1 (bound, read back, released) into VAR, never one
# this script was handed before (a variable, not $(...), so the list of handed-out ports persists).
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
    USED_PORTS+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
}

HELLO_BODY='Hello from distributed node'   # what both hello apps (Rust and Node) answer

wait_http() { # port timeout_s [body_pattern]: polls until GET / answers 200 (with the pattern)
  local i code
  for ((i = 0; i < $2 * 10; i++)); do
    code=$(curl -s -o "$WORK/wait_http.body" -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null || true)
    if [ "$code" = 200 ] && { [ -z "${3:-}" ] || grep -q "$3" "$WORK/wait_http.body"; }; then return 0; fi
    sleep 0.1
  done
  return 1
}

# hello_serves port n: workers seen in the JSON bodies of n requests ("1 2" when two backends
# answered). Every answer must be 200 with the hello body; else prints why and fails.
hello_serves() {
  local i code workers=""
  for ((i = 0; i < $2; i++)); do
    code=$(curl -s -o "$WORK/body" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" 2>/dev/null || true)
    if [ "$code" != 200 ] || ! grep -q "$HELLO_BODY" "$WORK/body"; then
      echo "answer $((i + 1)): status ${code:-none}"; return 1
    fi
    workers+="$(grep -o '"worker":[0-9]*' "$WORK/body" | cut -d: -f2 || true) "
  done
  # shellcheck disable=SC2086  # split into one worker id per line
  printf '%s\n' $workers | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# --- wrk -------------------------------------------------------------------------------------
# write_wrk_lua file count_status: a wrk script whose done() prints one machine-readable line
#   WRK requests= duration_us= ok2xx= non2xx= connect= read= write= status= timeout= p50_us= p99_us= max_us=
# count_status=1 counts every status code in a Lua response() callback (costs wrk CPU);
# 0 keeps only wrk's own count of responses >= 400 (errors.status): ok2xx = requests - status.
write_wrk_lua() {
  if [ "$2" = 1 ]; then
    cat >"$1" <<'EOF'
response = function(status, headers, body)
  if status >= 200 and status < 300 then ok2xx = ok2xx + 1 else non2xx = non2xx + 1 end
end
EOF
  else
    echo 'ok2xx, non2xx = -1, -1' >"$1"
  fi
  cat >>"$1" <<'EOF'
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
}

# parse_wrk out_file: sets W_REQ W_RPS W_OK W_NON2XX W_SOCKERR (connect+read+write+timeout)
# W_STATUS (responses >= 400, wrk's own count) W_P50 W_P99 W_MAX (ms) from the WRK line.
W_REQ=0 W_RPS=0 W_OK=0 W_NON2XX=0 W_SOCKERR=0 W_STATUS=0 W_P50=0 W_P99=0 W_MAX=0
parse_wrk() {
  local line
  line=$(grep '^WRK ' "$1" | tail -1 || true)
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

# --- herd ------------------------------------------------------------------------------------
herd_ls_json() { "$HERD" -c "$1" ls --json 2>/dev/null; }   # config

herd_ready_count() { # config: instances in state "ready" (0 when herd does not answer)
  local n
  n=$(herd_ls_json "$1" | grep -Ec '"state": *"ready"' || true)
  echo "${n:-0}"
}

herd_wait_ready() { # config n timeout_s: polls `herd ls --json` until n instances are ready
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    [ "$(herd_ready_count "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# herd_up config cpu [env...]: `herd up -d` pinned to cpu (empty: any), the config registered for
# clean-up; sets HERD_PID. Output in <config dir>/up.out.
HERD_PID=
herd_up() {
  local cfg=$1 cpu=$2 dir
  shift 2
  dir=$(dirname "$cfg")
  HERD_CFGS+=("$cfg")
  HERD_PID=
  env "$@" taskset -c "${cpu:-0-$(($(nproc) - 1))}" "$HERD" -c "$cfg" up -d >"$dir/up.out" 2>&1 ||
    { cat "$dir/up.out"; return 1; }
  HERD_PID=$(cat "$dir/.herd/herd.pid" 2>/dev/null || true)
  pid_alive "$HERD_PID" || { echo "herd: no process"; cat "$dir/up.out"; return 1; }
}

# --- procfs ----------------------------------------------------------------------------------
vmrss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
affinity_of() { taskset -cp "$1" 2>/dev/null | awk -F': ' '{print $2}' || true; }
threads_of() { find "/proc/$1/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# CPU time (user + system, all threads) the processes used, in clock ticks.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { # pids...
  local p t=0 f
  for p in "$@"; do
    f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
    t=$((t + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$t"
}

# --- figures ---------------------------------------------------------------------------------
median() { # numbers...: the middle one; of an even count the mean of the two middle ones
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if (NR == 0) {print "n/a"} else if (NR % 2) {print a[(NR+1)/2]} else {v = (a[NR/2]+a[NR/2+1])/2; if (v == int(v)) print v; else printf "%.2f\n", v}}'
}
median_int() { # numbers...: median rounded to a whole number
  median "$@" | awk '{ if ($1 == "n/a") print; else printf "%.0f\n", $1 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.2f", a/b; else print "n/a" }'; }
meets() { # value op(>=|<=) goal -> met|missed (n/a is missed)
  awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN{ if (v == "n/a" || g == "n/a") {print "missed"; exit}
    ok = (op == ">=") ? (v+0 >= g+0) : (v+0 <= g+0); print (ok ? "met" : "missed") }'
}

# round_order round contenders...: sets ORDER, the contenders in this round's order: as given in
# the warm-up round 0, then rotated by one more place each round (A B C, B C A, C A B, ...).
ORDER=()
round_order() {
  local round=$1 k
  shift
  if [ "$round" -eq 0 ]; then ORDER=("$@"); return 0; fi
  local all=("$@")
  k=$(((round - 1) % ${#all[@]}))
  ORDER=("${all[@]:k}" "${all[@]:0:k}")
}

# --- loadgen (bench/loadgen: fixed-rate load generator and echo app) -------------------------
# build_loadgen: builds bench/loadgen (its own Cargo project, outside the workspace) into
# $CACHE/loadgen-target (CARGO_TARGET_DIR is not used: another lock file, other features) and
# sets LOADGEN; its other binary, redb-direct, lands beside it. Returns 1 when cargo fails (log in
# $WORK/loadgen-cargo.log).
LOADGEN=
build_loadgen() {
  local target="$CACHE/loadgen-target"
  LOADGEN="$target/release/loadgen"
  say "building bench/loadgen (cargo build --release, target dir $target)"
  (cd "$BENCH_ROOT/bench/loadgen" && CARGO_TARGET_DIR=$target cargo build --release -q) \
    >"$WORK/loadgen-cargo.log" 2>&1 && [ -x "$LOADGEN" ]
}

# parse_loadgen out_file: sets L_REQ L_OK L_BAD L_ERR L_RPS L_LATE L_STATUSES and, in ms,
# L_P50 L_P90 L_P99 L_P999 L_MAX L_MEAN from the LOADGEN line of `loadgen run`.
L_REQ=0 L_OK=0 L_BAD=0 L_ERR=0 L_RPS=0 L_LATE=0 L_STATUSES=- L_P50=0 L_P90=0 L_P99=0 L_P999=0 L_MAX=0 L_MEAN=0
parse_loadgen() {
  local line
  line=$(grep '^LOADGEN ' "$1" | tail -1 || true)
  [ -n "$line" ] || return 1
  L_REQ=$(_lg_field "$line" requests) L_OK=$(_lg_field "$line" ok) L_BAD=$(_lg_field "$line" bad)
  L_ERR=$(_lg_field "$line" errors) L_RPS=$(_lg_field "$line" achieved_rps)
  L_LATE=$(_lg_field "$line" late) L_STATUSES=$(_lg_field "$line" statuses)
  L_P50=$(_us_ms "$(_lg_field "$line" p50_us)") L_P90=$(_us_ms "$(_lg_field "$line" p90_us)")
  L_P99=$(_us_ms "$(_lg_field "$line" p99_us)") L_P999=$(_us_ms "$(_lg_field "$line" p999_us)")
  L_MAX=$(_us_ms "$(_lg_field "$line" max_us)") L_MEAN=$(_us_ms "$(_lg_field "$line" mean_us)")
}
_lg_field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }   # line key
_us_ms() { awk -v u="$1" 'BEGIN{printf "%.3f", u / 1000}'; }

# --- memory ----------------------------------------------------------------------------------
vmhwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
