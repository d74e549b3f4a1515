#!/usr/bin/env bash
# Measures a warm run of the ingress suite on the local target, as README "Scale"
# reports it: the release build, Envoy cached and one untimed run first, then
# `./target/release/meshcheck --suite ingress` timed RUNS times (default 9); prints
# each run, the median, the load average before and after, and the per-check times of
# the last run (from its JUnit report) with its "ready in" line.
#
#   scripts/bench-warm-run.sh            RUNS=9 by default
#   RUNS=21 scripts/bench-warm-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-9}
bin=./target/release/meshcheck
junit=target/meshcheck/ingress-junit.xml
cargo build --release -q
"$bin" --suite ingress >/dev/null 2>&1 || { echo "warm-up run failed" >&2; exit 1; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
times=()
for i in $(seq "$runs"); do
  start=$(date +%s.%N)
  "$bin" --suite ingress >/dev/null 2>/tmp/meshcheck-bench.$$.err
  end=$(date +%s.%N)
  t=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
  times+=("$t")
  printf 'run %d: %.3f s\n' "$i" "$t"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
printf 'median of %d warm runs: %.3f s\n' "$runs" "$median"
echo "last run: $(grep 'ready in' /tmp/meshcheck-bench.$$.err || true)"
rm -f /tmp/meshcheck-bench.$$.err
echo "per-check times of the last run (s, from $junit):"
grep -o '<testcase name="[^"]*" classname="[^"]*" time="[^"]*"' "$junit" \
  | sed -E 's/<testcase name="([^"]*)" classname="([^"]*)" time="([^"]*)"/\3 \2::\1/' \
  | grep -v ' static::' | sort -gr
