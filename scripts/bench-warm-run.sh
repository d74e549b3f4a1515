#!/usr/bin/env bash
# Measures a warm run of the ingress suite on the local target: the project is built
# and Envoy is cached (one untimed run first), then `cargo run -- --suite ingress` is
# timed RUNS times (default 5) and the median is printed. README records the result.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
cargo build -q
cargo run -q -- --suite ingress >/dev/null 2>&1 || { echo "warm-up run failed" >&2; exit 1; }
times=()
for i in $(seq "$runs"); do
  start=$(date +%s.%N)
  cargo run -q -- --suite ingress >/dev/null 2>&1
  end=$(date +%s.%N)
  t=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')
  times+=("$t")
  printf 'run %d: %.3f s\n' "$i" "$t"
done
median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
printf 'median of %d warm runs: %.3f s\n' "$runs" "$median"
