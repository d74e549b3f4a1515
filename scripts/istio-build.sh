#!/usr/bin/env bash
# Builds one Istio release for meshcheck in ONE Go build: the oracle (oracle/, istiod's
# config generation in process) and Istio's own pilot-discovery (istiod), istioctl and
# pilot-agent (the istio-proxy agent), version-stamped as Istio's release builds are
# (istioctl refuses unstamped versions). They share nearly every package, so the three
# commands cost a few minutes over the oracle alone. Caches the result and prints the
# path asked for:
#
#   scripts/istio-build.sh VERSION [oracle|dir]
#     VERSION: 1.30.3 (the pinned Istio), 1.31, or an istio.io/istio module version
#     oracle (default): the oracle binary's path; dir: the directory holding
#     istio-oracle, pilot-discovery, istioctl, pilot-agent and envoy_bootstrap.json
#     (Istio's Envoy bootstrap template, from the same module, for pilot-agent)
#
# Cache: ${MESHCHECK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcheck}/istio/
# Cost: a cold build downloads about 0.6 GB of Go modules and compiles pilot and
# istioctl (15-20 minutes on 2 cores); a second Istio version reuses Go's caches for
# what the versions share. MESHCHECK_BUILD_TIMEOUT (seconds, default 3600) bounds it.
#
# Istio's release tags have no `v`, so a release is a pseudo-version of its commit. The
# module proxy this project's machines reach serves only some of them, and some of
# Istio's dependencies only at nearby versions; the table below says which module
# version stands for each release and which dependency versions replace the ones the
# proxy does not serve. The oracle reports the module it was built from.
set -euo pipefail

PINNED=1.30.3
version="${1:-$PINNED}"
what="${2:-oracle}"
here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/oracle"
# shellcheck source=scripts/go-build-lib.sh
source "$here/scripts/go-build-lib.sh"

die() { echo "istio-build: $1" >&2; exit "${2:-3}"; }

case "$what" in
  oracle|dir) ;;
  *) die "unknown artifact '$what' (oracle or dir)" 2 ;;
esac

# version -> istio module version | ISTIO_VERSION the build is stamped with | git
# revision | replace lines (; separated)
case "$version" in
  1.30.3|1.30)
    # The 1.30.3 tag is commit 56df41f63e51 (v0.0.0-20260713165634-56df41f63e51); this
    # machine's module proxy refuses it. 9739e10eb9d7 is release-1.30 after 1.30.3
    # (before 1.30.4): between the tag and the branch pilot's gateway, route, cluster
    # and endpoint generation is unchanged (pilot/pkg/networking/core and
    # pilot/pkg/model differ only in xds debug, endpoint-shard pruning, EnvoyFilter
    # proxyVersion length caps and test fakes).
    module="v0.0.0-20260826214018-9739e10eb9d7"
    release="1.30.3"
    replaces="github.com/agentgateway/agentgateway/api v0.0.0-20260501213430-773586679f1c;github.com/envoyproxy/go-control-plane/contrib v1.36.1-0.20260713214202-ca8ce173c36f;github.com/envoyproxy/go-control-plane/envoy v1.37.1-0.20260713214202-ca8ce173c36f;istio.io/api v1.30.8;istio.io/client-go v1.30.8"
    ;;
  1.31|1.31.0)
    # release-1.31 after 1.31.0-rc.0; every dependency at the version Istio pins.
    module="v0.0.0-20260827124520-eed52ebb66ad"
    release="1.31.0"
    replaces=""
    ;;
  1.29*|1.28*|1.27*)
    die "Istio $version: the Go module proxy this machine reaches serves no istio.io/istio commit of the $version line (it serves release-1.30 and release-1.31 commits only); use 1.30.3 or 1.31" 3
    ;;
  v0.0.0-*)
    module="$version"
    release="${MESHCHECK_ORACLE_PROXY_VERSION:-1.30.3}"
    replaces="${MESHCHECK_ORACLE_REPLACES:-}"
    ;;
  *)
    die "unknown Istio version '$version' (known: 1.30.3, 1.31, or a istio.io/istio module version v0.0.0-...)" 2
    ;;
esac
revision="${module##*-}"


cache_root="$(meshcheck_cache)/istio"
# The key covers the oracle's sources, the module table entry and this recipe.
recipe="tools=pilot-discovery,istioctl,pilot-agent tags=vtprotobuf trimpath cgo=0 r2"
key="$( (cat "$src"/*.go; echo "$module $release $replaces $recipe") | sha256sum | cut -c1-16)"
dir="$cache_root/$version-$key"

answer() {
  case "$what" in
    oracle) echo "$dir/istio-oracle" ;;
    dir) echo "$dir" ;;
  esac
}

built() { [[ -f "$dir/.complete" ]]; }

if built; then
  answer
  exit 0
fi

command -v go >/dev/null 2>&1 || die "Go is not installed (Istio is a Go module; Istio 1.30 needs Go >= 1.25.9)"

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if built; then # built by a concurrent call while we waited
  answer
  exit 0
fi

work="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$src"/*.go "$work/"
{
  echo "module meshcheck.dev/oracle"
  echo
  echo "go 1.25.9"
  echo
  echo "require istio.io/istio $module"
  echo
  echo "tool ("
  echo "	istio.io/istio/istioctl/cmd/istioctl"
  echo "	istio.io/istio/pilot/cmd/pilot-agent"
  echo "	istio.io/istio/pilot/cmd/pilot-discovery"
  echo ")"
  if [[ -n "$replaces" ]]; then
    echo
    echo "replace ("
    IFS=';' read -ra rs <<<"$replaces"
    for r in "${rs[@]}"; do
      set -- $r
      echo "	$1 => $1 $2"
    done
    echo ")"
  fi
} >"$work/go.mod"
# The pinned version's module graph is committed (oracle/go.sum): reuse it.
pinned_module="$(awk '$1 == "istio.io/istio" {print $2} $1 == "require" && $2 == "istio.io/istio" {print $3}' "$src/go.mod")"
if [[ "$module" == "$pinned_module" ]]; then
  cp "$src/go.sum" "$work/go.sum"
fi

echo "istio-build: building Istio $release (istio.io/istio@$module): the oracle, pilot-discovery, istioctl and pilot-agent; a cold build takes 15-20 minutes on 2 cores" >&2
start=$(date +%s)
(
  cd "$work"
  export GOFLAGS=-mod=mod CGO_ENABLED=0
  go mod tidy >&2 || die "go mod tidy failed for istio.io/istio@$module (see above)"
  # Istio's release stamps (pkg/version); main.proxyVersion is the oracle's.
  v=istio.io/istio/pkg/version
  ldflags="-s -w -X $v.buildVersion=$release -X $v.buildTag=$release -X $v.buildHub=docker.io/istio"
  ldflags+=" -X $v.buildGitRevision=$revision -X $v.buildStatus=Clean -X main.proxyVersion=$release"
  go_build_with_progress "istio-build" \
    go build -trimpath -tags vtprotobuf -ldflags "$ldflags" -o "$work/bin/" \
      . istio.io/istio/pilot/cmd/pilot-discovery istio.io/istio/istioctl/cmd/istioctl \
      istio.io/istio/pilot/cmd/pilot-agent \
    || die "go build failed for istio.io/istio@$module (see above)"
  mv "$work/bin/oracle" "$work/bin/istio-oracle"
  # Istio's Envoy bootstrap template (the proxyv2 image's
  # /var/lib/istio/envoy/envoy_bootstrap_tmpl.json), from the same module.
  moddir="$(go list -m -f '{{.Dir}}' istio.io/istio)"
  cp "$moddir/tools/packaging/common/envoy_bootstrap.json" "$work/bin/envoy_bootstrap.json"
)
mkdir -p "$dir"
cp "$work/go.mod" "$work/go.sum" "$dir/"
for f in "$work"/bin/*; do
  mv "$f" "$dir/"
done
echo "istio $release module $module built $(date -u +%FT%TZ) in $(( $(date +%s) - start )) s" >"$dir/.complete"
echo "istio-build: built in $(( $(date +%s) - start )) s: $dir" >&2
answer
