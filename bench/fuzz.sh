#!/usr/bin/env bash
# bench/fuzz.sh — runs herd's cargo-fuzz targets (fuzz/) one after another, each for SECONDS,
# in one process (the machine is shared; no -jobs), growing fuzz/corpus/<target>/, then
# minimises each corpus (`cargo fuzz cmin`). Prints one line per target:
#
#   RESULT F1 target=<t> execs=<n> seconds=<s> execs_per_s=<n> cov=<edges> cov_half=<edges>
#          corpus=<files> last_new_s=<s> last_cov_s=<s> crashes=<n> goal=no-crash,plateau met|missed
#
# `last_new_s` is when libFuzzer last kept an input for new features (which include finer ones
# than edges: hit-count buckets, compared values); `last_cov_s` is when edge coverage (`cov:`)
# last grew, and `cov_half` the edge coverage at half the run's time (so `cov - cov_half` is what
# the second half found). The target has plateaued when edge coverage stopped growing in the first half of
# the run. A crash stops that target and leaves the input in
# fuzz/artifacts/<target>/.
#
# Usage: bash bench/fuzz.sh [SECONDS] [TARGET...]   (default 180 s, every target)
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_EACH=${1:-180}
shift || true
cd "$BENCH_ROOT/fuzz"
need cargo-fuzz
mapfile -t TARGETS < <(if (($#)); then printf '%s\n' "$@"; else cargo fuzz list; fi)
# The stores' files go to a RAM disk when there is one: fsync there is cheap.
[[ -d /dev/shm ]] && export TMPDIR=/dev/shm
say "building ${#TARGETS[@]} targets (nightly, no sanitizer: herd's crates forbid unsafe code)"
cargo +nightly fuzz build -s none --release >/dev/null
for t in "${TARGETS[@]}"; do
  log=$(mktemp)
  # Built before the clock starts (the sources may have changed since the build above), so the
  # times below count fuzzing only.
  cargo +nightly fuzz build -s none --release "$t" >/dev/null
  start=$(date +%s)
  set +e
  cargo +nightly fuzz run -s none --release "$t" -- -max_total_time="$SECONDS_EACH" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    while IFS= read -r line; do printf '%s %s\n' "$(($(date +%s) - start))" "$line"; done >"$log"
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  # A run that crashed has no "Done" line; one that found nothing new has no NEW line.
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | awk '{print $5}' | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
  last_new=$(grep -E '^[0-9]+ #[0-9]+[[:space:]]+NEW' "$log" | tail -1 | awk '{print $1}' || true)
  last_cov=$(awk '{ for (i = 2; i < NF; i++) if ($i == "cov:" && $(i + 1) + 0 > best) { best = $(i + 1) + 0; at = $1 } }
    END { print at + 0 }' "$log")
  cov_half=$(awk -v half="$((SECONDS_EACH / 2))" '$1 > half { exit }
    { for (i = 2; i < NF; i++) if ($i == "cov:" && $(i + 1) + 0 > best) best = $(i + 1) + 0 }
    END { print best + 0 }' "$log")
  crashes=$(grep -c -E 'panicked at|==ERROR|deadly signal|ERROR: libFuzzer' "$log" || true)
  cargo +nightly fuzz cmin -s none --release "$t" >/dev/null 2>&1 || true
  corpus=$(find "corpus/$t" -type f | wc -l)
  secs=${secs:-$SECONDS_EACH}
  goal=met
  ((crashes == 0)) || goal=missed
  ((${last_cov:-0} * 2 <= secs)) || goal=missed
  result "F1 target=$t execs=$execs seconds=$secs execs_per_s=$((execs / (secs > 0 ? secs : 1))) cov=${cov:-0} cov_half=$cov_half corpus=$corpus last_new_s=${last_new:-0} last_cov_s=${last_cov:-0} crashes=$crashes nproc=$(nproc) goal=no-crash,plateau $goal"
  if ((crashes)); then
    grep -E -m3 -A4 'panicked at|ERROR' "$log" | sed 's/^/# /'
  fi
  rm -f "$log"
done
