#!/usr/bin/env bash
# The prober against wrk: the distribution check's request rate (subsets::split-90-10
# of the ingress suite, REQUESTS requests, default 20000, CONCURRENCY default 16) and
# wrk's on the same running local gateway and route at the same concurrency, in one
# run; prints both and the ratio. Release build. wrk is the Debian package: installed
# with apt-get when missing (root), else install it yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
  else
    echo "wrk is not installed: apt-get install -y wrk" >&2; exit 3
  fi
fi
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test -q --release --test scale -- --ignored --nocapture bench_prober_against_wrk 2>&1 \
  | grep -E '^prober:|panicked|error' || { echo "the benchmark failed" >&2; exit 1; }
