# Shared by scripts/istio-build.sh and scripts/kube-build.sh (sourced, not run).

# The cache directory meshcheck and its scripts share.
meshcheck_cache() {
  echo "${MESHCHECK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcheck}"
}

# go_build_with_progress LABEL CMD...: runs a Go build at low priority, bounded by
# MESHCHECK_BUILD_TIMEOUT seconds (default 3600), printing a line a minute while it
# runs so a long cold build is visibly alive. Exits 3 when the budget runs out.
go_build_with_progress() {
  local label="$1"; shift
  local budget="${MESHCHECK_BUILD_TIMEOUT:-3600}"
  local started=$SECONDS
  ( while sleep 60; do
      kill -0 $$ 2>/dev/null || exit 0
      echo "$label: still building ($(( (SECONDS - started) / 60 )) min so far, budget $(( budget / 60 )) min)" >&2
    done ) &
  local ticker=$!
  local rc=0
  timeout --kill-after=30 "$budget" nice -n 10 "$@" >&2 || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "$label: the build did not finish within its budget of ${budget}s (MESHCHECK_BUILD_TIMEOUT)" >&2
    exit 3
  fi
  return $rc
}
