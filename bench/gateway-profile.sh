#!/usr/bin/env bash
# shellcheck disable=SC2317  # clean-up hooks are called indirectly
# bench/gateway-profile.sh — where herd's CPU goes on the proxied request path (P1 and P3),
# counted in instructions and malloc calls by valgrind's callgrind, which stay stable on a busy
# machine where timings do not.
#
# Two cases, each a fresh herd (release build) under `valgrind --tool=callgrind`, pinned to one
# CPU so its tokio runtime has one worker as in bench/gateway.sh:
#   gateway  a `[[gateway.listener]]` with one route to an upstream over two backends
#            (`loadgen serve`, round robin), HERD_LOG=warn as in P1;
#   listen   a cluster-mode service of 2 instances of `loadgen serve` whose `listen` address herd
#            proxies (the default: a front, one catch-all route to the instances' private sockets).
# After a warm-up (wrk for WARMUP seconds) the counters are zeroed (`callgrind_control -z`) and
# dumped (`callgrind_control -d`) twice: after DURATION seconds without requests (what herd spends
# idle: its once-a-second metrics sampler, timers), then after wrk -t1 -c$CONNS ran for DURATION
# seconds. Its count of answered requests divides the difference (the few requests in flight when
# it stops are the error margin). Printed per case: instructions (Ir) and calls of malloc /
# calloc / realloc / free per request net of the idle window, then the top inclusive functions
# of the loaded window (callgrind_annotate; gross, idle work included), per request.
#
# Usage: bash bench/gateway-profile.sh   (a few minutes; the callgrind files stay in $OUT_DIR)
#   env: CASES="gateway listen" DURATION=6 WARMUP=2 CONNS=16 TOP=40 OUT_DIR=/tmp/herd-profile
#        HERD_BIN=<a herd binary, e.g. main's release build: skips the build>
#        LOADGEN_BIN=<a loadgen binary: skips its build> PROXY_CPU=1 SIDE_CPU=0
#        HERD_REV CARGO_TARGET_DIR HERD_BENCH_CACHE (see build_herd in bench/lib.sh)
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CASES=${CASES:-gateway listen}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-16}
TOP=${TOP:-40}
OUT_DIR=${OUT_DIR:-/tmp/herd-profile}
if [ "$(nproc)" -ge 2 ]; then PROXY_CPU=${PROXY_CPU:-1}; SIDE_CPU=${SIDE_CPU:-0}
else PROXY_CPU=${PROXY_CPU:-0}; SIDE_CPU=${SIDE_CPU:-0}; fi

bench_init gateway-profile
need valgrind callgrind_annotate callgrind_control curl taskset
ensure_wrk
if [ -n "${HERD_BIN:-}" ]; then
  HERD=$HERD_BIN
else
  build_herd herd || { cat "$WORK/cargo.log"; die "cargo build failed"; }
fi
[ -x "$HERD" ] || die "no herd binary at $HERD"
if [ -n "${LOADGEN_BIN:-}" ]; then
  LOADGEN=$LOADGEN_BIN
else
  build_loadgen || { cat "$WORK/loadgen-cargo.log"; die "cannot build bench/loadgen"; }
fi
mkdir -p "$OUT_DIR"

# wrk's summary as one line; answers other than 200 are counted in a response() callback.
cat >"$WORK/count.lua" <<'EOF'
local threads = {}
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body)
  if status ~= 200 then bad = (bad or 0) + 1 end
end
done = function(summary, latency, requests)
  local bad, e = 0, summary.errors
  for _, t in ipairs(threads) do bad = bad + (t:get("bad") or 0) end
  io.write(string.format("WRK requests=%d non200=%d errors=%d\n", summary.requests, bad,
    e.connect + e.read + e.write + e.timeout))
end
EOF

drive() { # port seconds out: wrk -t1 -c$CONNS for that long
  taskset -c "$SIDE_CPU" wrk -t1 -c"$CONNS" -d"$2"s -s "$WORK/count.lua" "http://127.0.0.1:$1/" >"$3" 2>&1
}

ir_total() { # callgrind file -> its total instruction count
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t + 0}' || true
}

# callgrind's dump: calls of the allocator's entry points, summed over every call site.
alloc_calls() { # callgrind file -> "malloc=N calloc=N realloc=N free=N"
  awk '
    /^c?fn=\(/ {
      id = $0; sub(/^c?fn=/, "", id); name = id
      sub(/\).*/, ")", id); sub(/^\([0-9]+\) ?/, "", name)
      if (name != "") names[id] = name
      if ($0 ~ /^cfn=/) callee = names[id]
      next
    }
    /^calls=/ { n = $0; sub(/^calls=/, "", n); sub(/ .*/, "", n); calls[callee] += n }
    END {
      split("malloc calloc realloc free", want, " ")
      for (k in calls) {
        base = k; sub(/^(__GI_)?(__libc_)?/, "", base)
        for (w in want) if (base == want[w]) total[want[w]] += calls[k]
      }
      printf "malloc=%d calloc=%d realloc=%d free=%d\n", total["malloc"], total["calloc"], total["realloc"], total["free"]
    }' "$1"
}

VG_PID=''
stop_profiled() { pid_alive "$VG_PID" && { kill -TERM "$VG_PID" 2>/dev/null; wait_gone "$VG_PID" 60 || true; }; return 0; }
CLEANUP_HOOKS+=(stop_profiled)

profile() { # case
  local c=$1 dir cfg port b1 b2 out
  dir=$(mktemp -d "$WORK/$c.XXXX"); cfg="$dir/herd.toml"
  free_port port
  out="$OUT_DIR/callgrind.$c.$(date +%s)"
  case $c in
    gateway)
      free_port b1; free_port b2
      for b in "$b1" "$b2"; do
        PORT=$b taskset -c "$SIDE_CPU" "$LOADGEN" serve >"$dir/backend.$b.log" 2>&1 &
        KILL_PIDS+=("$!")
        wait_http "$b" 10 || die "backend on $b does not answer"
      done
      cat >"$cfg" <<EOF
data_dir = "$dir/.herd"

[[gateway.listener]]
name = "main"
listen = "127.0.0.1:$port"

[[route]]
upstream = "backends"

[[upstream]]
name = "backends"
endpoints = ["127.0.0.1:$b1", "127.0.0.1:$b2"]
balance = "round_robin"
EOF
      ;;
    listen)
      cat >"$cfg" <<EOF
data_dir = "$dir/.herd"

[[service]]
name = "echo"
command = ["$LOADGEN", "serve"]
instances = 2
listen = "127.0.0.1:$port"
EOF
      ;;
    *) die "unknown case $c (gateway, listen)" ;;
  esac
  HERD_CFGS+=("$cfg")
  HERD_LOG=warn taskset -c "$PROXY_CPU" valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$HERD" -c "$cfg" up >"$dir/herd.out" 2>&1 &
  VG_PID=$!; KILL_PIDS+=("$VG_PID")
  if [ "$c" = listen ]; then
    herd_wait_ready "$cfg" 2 120 || { tail -20 "$dir/herd.out"; die "$c: instances not ready under valgrind"; }
  fi
  wait_http "$port" 120 || { tail -20 "$dir/herd.out"; die "$c: herd does not answer under valgrind"; }

  drive "$port" "$WARMUP" "$dir/warmup.out"
  # An idle window as long as the measured one: what herd spends without requests (the
  # once-a-second metrics sampler, timers), taken off the measured window's totals.
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  sleep "$DURATION"
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
  drive "$port" "$DURATION" "$dir/total.out"
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
  local idle="$out.1" dump="$out.2"
  "$HERD" -c "$cfg" down >/dev/null 2>&1 || kill -TERM "$VG_PID" 2>/dev/null || true
  wait_gone "$VG_PID" 120 || true
  forget_pid "$VG_PID"
  [ -s "$idle" ] && [ -s "$dump" ] || die "$c: callgrind wrote no dumps ($idle, $dump)"

  local line reqs errors bad total idle_total allocs idle_allocs
  line=$(grep '^WRK ' "$dir/total.out" | tail -1 || true)
  [ -n "$line" ] || { cat "$dir/total.out"; die "$c: wrk printed no summary"; }
  reqs=$(echo "$line" | sed 's/.*requests=\([0-9]*\).*/\1/')
  errors=$(echo "$line" | sed 's/.*errors=\([0-9]*\).*/\1/')
  bad=$(echo "$line" | sed 's/.*non200=\([0-9]*\).*/\1/')
  total=$(ir_total "$dump"); idle_total=$(ir_total "$idle")
  allocs=$(alloc_calls "$dump"); idle_allocs=$(alloc_calls "$idle")
  # name=value pairs per request: (measured - idle) / requests
  net() { paste -d' ' <(echo "$1" | tr ' ' '\n') <(echo "$2" | tr ' ' '\n') |
    awk -v n="$reqs" '{ split($1, a, "="); split($2, b, "="); printf "%s%s=%.2f", (NR > 1 ? " " : ""), a[1], (a[2] - b[2]) / n }'; }
  local ir_req net_ir_req
  ir_req=$(awk -v t="$total" -v n="$reqs" 'BEGIN{printf "%.0f", t / n}')
  net_ir_req=$(awk -v t="$total" -v i="$idle_total" -v n="$reqs" 'BEGIN{printf "%.0f", (t - i) / n}')
  echo
  say "case $c: $reqs requests in ${DURATION}s (wrk -t1 -c$CONNS; non-200 $bad, socket errors $errors) after ${WARMUP}s of warm-up; herd $HERD pinned to CPU $PROXY_CPU"
  say "callgrind dumps: $idle (idle ${DURATION}s), $dump (under load ${DURATION}s)"
  say "$c: $net_ir_req Ir per request net of the idle window ($ir_req gross; measured $total Ir, idle $idle_total Ir)"
  say "$c: allocator calls per request, net of the idle window: $(net "$allocs" "$idle_allocs")"
  result "gateway-profile case=$c requests=$reqs non200=$bad errors=$errors ir_per_request=$net_ir_req gross_ir_per_request=$ir_req $(net "$allocs" "$idle_allocs" | sed 's/=/_per_request=/g')"
  say "$c: inclusive cost of the top functions under load (Ir, % of total, Ir per request, idle work included):"
  callgrind_annotate --inclusive=yes --threshold=99 "$dump" 2>/dev/null >"$dump.inclusive" || true
  awk -v n="$reqs" '/^ *[0-9,]+ \(/ && k++ < top { c = $1; gsub(",", "", c); printf "%14s %8s %10.0f  %s\n", $1, $2, c / n, substr($0, index($0, $3)) }' \
    top="$TOP" "$dump.inclusive"
}

say "herd gateway profile — $(date -u); nproc=$(nproc); herd $HERD ($("$HERD" --version 2>/dev/null | awk '{print $2}' || true)); loadgen $LOADGEN"
for c in $CASES; do profile "$c"; done
