#!/usr/bin/env bash
# The local target at scale: for N = 0, 50, 200, 500 services added to the ingress
# fixtures (`meshcheck gen-fixtures`: a Deployment of one replica, Service,
# DestinationRule, VirtualService route and http check each), the bring-up time
# (what the local target reports: "ready in"), the whole run's wall time (median of
# RUNS, default 3), and in one more run per N the memory: PSS of the whole local
# stack (meshcheck and every process it started, summed when the target is ready)
# and meshcheck's own peak RSS. Then the ratios to N = 0. Release build; Envoy
# cached (one untimed run first). README records the last results.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
sizes=${SIZES:-"0 50 200 500"}
cargo build --release -q
bin=$PWD/target/release/meshcheck
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

suite_for() {
  if [[ $1 == 0 ]]; then echo ingress; return; fi
  "$bin" gen-fixtures --services "$1" --out "$work/n$1" >/dev/null
  echo "$work/n$1/suite.yaml"
}

# Every descendant pid of $1 (children are in their own process groups, not sessions):
# one pass over /proc, then a walk of the parent map.
descendants() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
    { kids[$4] = kids[$4] " " $1 }
    END {
      n = split(kids[root], queue, " "); i = 1
      while (i <= n) { p = queue[i++]; print p; m = split(kids[p], more, " ")
        for (j = 1; j <= m; j++) queue[++n] = more[j] }
    }'
}

# One run with memory sampling: "<pss MiB of the stack at ready> <meshcheck peak RSS MiB>".
memory_run() {
  local suite=$1 log=$work/mem.log pid pss=0 hwm=0
  "$bin" --suite "$suite" --junit "$work/mem.xml" >/dev/null 2>"$log" &
  pid=$!
  until grep -q "local target: ready" "$log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  for p in $pid $(descendants "$pid"); do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    pss=$((pss + ${v:-0}))
  done
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [[ ${v:-0} -gt $hwm ]] && hwm=$v
    sleep 0.05
  done
  wait "$pid" || { echo "memory run of $suite failed:" >&2; tail -20 "$log" >&2; exit 1; }
  echo "$((pss / 1024)) $((hwm / 1024))"
}

"$bin" --suite ingress >/dev/null 2>&1 || { echo "warm-up run failed" >&2; exit 1; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-6s %-12s %-12s %-14s %-14s %-10s %-10s\n' N pods bring-up_s run_s bring-up/N=0 run/N=0 stack_PSS_MiB meshcheck_RSS_MiB
base_up='' base_run=''
for n in $sizes; do
  suite=$(suite_for "$n")
  ups=() walls=()
  for _ in $(seq "$runs"); do
    start=$(now)
    if ! "$bin" --suite "$suite" --junit "$work/run.xml" >"$work/out" 2>"$work/err"; then
      echo "run failed for N=$n:" >&2; tail -30 "$work/out" "$work/err" >&2; exit 1
    fi
    walls+=("$(awk -v a="$start" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}')")
    ups+=("$(sed -n 's/.*local target: ready in \([0-9.]*\)s.*/\1/p' "$work/err")")
  done
  up=$(printf '%s\n' "${ups[@]}" | median)
  run=$(printf '%s\n' "${walls[@]}" | median)
  read -r pss rss < <(memory_run "$suite")
  [[ -z $base_up ]] && base_up=$up && base_run=$run
  printf '%-6s %-6s %-12s %-12s %-14s %-14s %-10s %-10s\n' "$n" "$((n + 4))" "$up" "$run" \
    "$(awk -v a="$up" -v b="$base_up" 'BEGIN {printf "%.2f", a / b}')" \
    "$(awk -v a="$run" -v b="$base_run" 'BEGIN {printf "%.2f", a / b}')" "$pss" "$rss"
done
