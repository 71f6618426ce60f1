#!/usr/bin/env bash
# bench/shop.sh — S1: the shop (examples/shop, run by the root herd.toml) under failure.
#
# Places orders at a fixed rate through the gateway (bench/loadgen, every request with its own
# Idempotency-Key so each answer names its order), and meanwhile kills -9 one random instance of
# each service, rolls a reload through every service, kills -9 herd itself and starts it again.
# When the load ends it waits for the system to settle and checks the shop's invariants against
# what every request was answered:
#   lost          orders answered 2xx that are not stored
#   missing       stored orders without a notification (no order stored without its event)
#   duplicates    notifications listed more than once for one order, or for no stored order
#   drift         per item: initial stock - (stock now + quantities of accepted orders)
# and reports the end-to-end p50/p99 of POST /orders. Failed requests (refused while herd was
# down, or cut when an instance died under them) are counted but are not losses: the client was
# not told the order was taken.
#
# Usage: bash bench/shop.sh            (RATE=20 DURATION=45 STOCK_A=600 by default; RATE x DURATION
#                                       stays below 1000, the most one listing returns)
# Budget: herd, the six shop instances and the load generator share the machine's cores.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RATE=${RATE:-20}
DURATION=${DURATION:-45}
STOCK_A=${STOCK_A:-600}   # runs out part-way at the default rate, so rejections happen too
STOCK_B=${STOCK_B:-$((STOCK_A * 3))}
SETTLE=${SETTLE:-60}       # seconds allowed for deliveries and the sweeper to finish

awk -v r="$RATE" -v d="$DURATION" 'BEGIN{exit !(r * d < 1000)}' || die "RATE x DURATION must stay below 1000"
bench_init shop
need curl python3 taskset
build_herd herd shop || { cat "$WORK/cargo.log"; die "cargo build failed"; }
build_loadgen || { cat "$WORK/loadgen-cargo.log"; die "cannot build bench/loadgen"; }
BIN_DIR=$(dirname "$HERD")

free_port GW; free_port API; free_port ADMIN
mkdir -p "$WORK/shop"
CFG="$WORK/shop/herd.toml"
# The file users run, on this run's ports and binaries.
sed -e "s#127.0.0.1:8000#127.0.0.1:$GW#g" -e "s#127.0.0.1:3500#127.0.0.1:$API#g" \
  -e "s#127.0.0.1:9901#127.0.0.1:$ADMIN#g" -e "s#\./target/release/#$BIN_DIR/#g" \
  "$BENCH_ROOT/herd.toml" >"$CFG"
grep -q "$BIN_DIR/shop-orders" "$CFG" || die "the root herd.toml does not run the shop"

SVCS=(orders inventory notifications)
up_and_ready() {
  herd_up "$CFG" "" || die "herd did not start"
  herd_wait_ready "$CFG" 6 30 || { "$HERD" -c "$CFG" ls; die "the shop's 6 instances are not ready"; }
}
say "herd $(herd_rev_desc), nproc=$(nproc); rate=$RATE orders/s for ${DURATION}s; gateway :$GW"
up_and_ready

base="http://127.0.0.1:$GW"
for item in "bench-a:$STOCK_A" "bench-b:$STOCK_B"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$base/items/${item%%:*}" \
    -H 'content-type: application/json' -d "{\"name\":\"${item%%:*}\",\"price\":100,\"available\":${item#*:}}")
  [ "$code" = 200 ] || die "PUT /items/${item%%:*} answered $code"
done
printf '%s' '{"items":[{"item":"bench-a","quantity":1},{"item":"bench-b","quantity":2}]}' >"$WORK/order.json"

# The load, in the background.
"$LOADGEN" run --url "$base/orders" --rate "$RATE" --duration "$DURATION" --warmup 0 --conns 16 \
  --method POST --body-file "$WORK/order.json" --unique-header "Idempotency-Key: s1-" \
  --record "$WORK/record.txt" --label shop >"$WORK/load.out" 2>&1 &
LOAD_PID=$!
KILL_PIDS+=("$LOAD_PID")
started=$(date +%s.%N)
at() { # seconds since the load started: waits until then
  local wait
  wait=$(awk -v s="$started" -v t="$1" -v n="$(date +%s.%N)" 'BEGIN{w = s + t - n; print (w > 0 ? w : 0)}')
  sleep "$wait"
}
pid_of() { # service: the pid of one random instance
  herd_ls_json "$CFG" | python3 -c '
import json, random, sys
svc = sys.argv[1]
doc = json.load(sys.stdin)
services = doc["services"] if isinstance(doc, dict) else doc
pids = [i["pid"] for s in services if s["name"] == svc for i in s["instances"] if i.get("pid")]
print(random.choice(pids) if pids else "")' "$1"
}

at 5
for s in "${SVCS[@]}"; do
  p=$(pid_of "$s")
  [ -n "$p" ] || die "no instance of $s to kill"
  say "t=5s: kill -9 $s instance $p"
  kill -KILL "$p"
done
at 15
for s in "${SVCS[@]}"; do
  say "t=15s: herd reload $s"
  "$HERD" -c "$CFG" reload "$s" >/dev/null || die "herd reload $s failed"
done
at 28
say "t=28s: kill -9 herd ($HERD_PID), then herd up again"
kill -KILL "$HERD_PID"
wait_gone "$HERD_PID" 10 || die "herd did not die"
up_and_ready
say "herd is back: $(herd_ready_count "$CFG") instances ready"

wait "$LOAD_PID" || die "the load generator failed: $(cat "$WORK/load.out")"
forget_pid "$LOAD_PID"
parse_loadgen "$WORK/load.out" || die "no LOADGEN line: $(cat "$WORK/load.out")"
say "load: $(grep '^LOADGEN' "$WORK/load.out")"

# Settle, then check: polls until every invariant holds or SETTLE seconds pass (deliveries, the
# outbox relay and the orders sweeper finish the work that was in flight when things died).
check() {
  python3 - "$base" "$WORK/record.txt" "$STOCK_A" "$STOCK_B" <<'PY'
import collections, json, sys, urllib.request
base, record, stock_a, stock_b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
get = lambda p: json.load(urllib.request.urlopen(base + p, timeout=30))
answered, failed = set(), 0
for line in open(record):
    seq, status = line.split()
    if status.isdigit() and 200 <= int(status) < 300:
        answered.add("o-s1-" + seq)
    else:
        failed += 1
orders = [o for o in get("/orders?limit=1000") if o["id"].startswith("o-s1-")]
stored = {o["id"]: o for o in orders}
notes = [n for n in get("/notifications?limit=1000") if n["order"].startswith("o-s1-")]
seen = collections.Counter(n["order"] for n in notes)
lost = len(answered - stored.keys())
missing = len(stored.keys() - seen.keys())
duplicates = sum(c - 1 for c in seen.values()) + len(seen.keys() - stored.keys())
accepted = [o for o in orders if o["status"] == "accepted"]
rejected = sum(1 for o in orders if o["status"] == "rejected")
drift = 0
for item, initial in (("bench-a", stock_a), ("bench-b", stock_b)):
    now = get("/items/" + item)["available"]
    taken = sum(l["quantity"] for o in accepted for l in o["items"] if l["item"] == item)
    drift += abs(initial - (now + taken))
print(f"requests={len(answered) + failed} answered={len(answered)} failed={failed} "
      f"stored={len(stored)} accepted={len(accepted)} rejected={rejected} lost={lost} "
      f"missing={missing} duplicates={duplicates} drift={drift}")
PY
}
line=""
for ((i = 0; i < SETTLE; i++)); do
  line=$(check 2>"$WORK/check.err" || true)
  case $line in *" lost=0 missing=0 duplicates=0 drift=0") break ;; esac
  sleep 1
done
[ -n "$line" ] || die "the check failed: $(cat "$WORK/check.err")"
say "after settling ${i}s: $line"
verdict=missed
case $line in *" lost=0 missing=0 duplicates=0 drift=0") verdict=met ;; esac
result S1 "$line p50_ms=$L_P50 p99_ms=$L_P99 rate=$RATE duration_s=$DURATION nproc=$(nproc) goal=lost,missing,duplicates,drift=0 $verdict"
