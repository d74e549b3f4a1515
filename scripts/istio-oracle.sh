#!/usr/bin/env bash
# Builds meshcheck's Istio oracle (oracle/, a Go program that runs istiod's own config
# generation in process) against an Istio release, caches it, and prints the binary's
# path. A second call with the same version and the same oracle sources is a cache hit.
#
#   scripts/istio-oracle.sh [VERSION]      VERSION: 1.30.3 (default, the pinned Istio),
#                                          1.31, or a Go module version of istio.io/istio
#
# Cache: ${MESHCHECK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcheck}/istio-oracle/
# Cost: a cold build downloads about 0.5 GB of Go modules and compiles pilot (about
# 10-15 minutes on 2 cores); Go's own caches make later builds of other versions faster.
#
# Istio's release tags have no `v`, so a release is a pseudo-version of its commit. The
# module proxy this project's machines reach serves only some of them, and some of
# Istio's dependencies only at nearby versions; the table below says which module
# version stands for each release and which dependency versions replace the ones the
# proxy does not serve. The oracle reports the module it was built from.
set -euo pipefail

PINNED=1.30.3
version="${1:-$PINNED}"
here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/oracle"

die() { echo "istio-oracle: $1" >&2; exit "${2:-3}"; }

# version -> istio module version | proxy ISTIO_VERSION | replace lines (; separated)
case "$version" in
  1.30.3|1.30)
    # The 1.30.3 tag is commit 56df41f63e51 (v0.0.0-20260713165634-56df41f63e51); this
    # machine's module proxy refuses it. 9739e10eb9d7 is release-1.30 after 1.30.3
    # (before 1.30.4): between the tag and the branch pilot's gateway, route, cluster
    # and endpoint generation is unchanged (pilot/pkg/networking/core and
    # pilot/pkg/model differ only in xds debug, endpoint-shard pruning, EnvoyFilter
    # proxyVersion length caps and test fakes).
    module="v0.0.0-20260826214018-9739e10eb9d7"
    proxy_version="1.30.3"
    replaces="github.com/agentgateway/agentgateway/api v0.0.0-20260501213430-773586679f1c;github.com/envoyproxy/go-control-plane/contrib v1.36.1-0.20260713214202-ca8ce173c36f;github.com/envoyproxy/go-control-plane/envoy v1.37.1-0.20260713214202-ca8ce173c36f;istio.io/api v1.30.8;istio.io/client-go v1.30.8"
    ;;
  1.31|1.31.0)
    # release-1.31 after 1.31.0-rc.0; every dependency at the version Istio pins.
    module="v0.0.0-20260827124520-eed52ebb66ad"
    proxy_version="1.31.0"
    replaces=""
    ;;
  1.29*|1.28*|1.27*)
    die "Istio $version: the Go module proxy this machine reaches serves no istio.io/istio commit of the $version line (it serves release-1.30 and release-1.31 commits only); use 1.30.3 or 1.31" 3
    ;;
  v0.0.0-*)
    module="$version"
    proxy_version="${MESHCHECK_ORACLE_PROXY_VERSION:-1.30.3}"
    replaces="${MESHCHECK_ORACLE_REPLACES:-}"
    ;;
  *)
    die "unknown Istio version '$version' (known: 1.30.3, 1.31, or a istio.io/istio module version v0.0.0-...)" 2
    ;;
esac

command -v go >/dev/null 2>&1 || die "Go is not installed (the oracle is a Go program; Istio 1.30 needs Go >= 1.25.9)"

cache_root="${MESHCHECK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcheck}/istio-oracle"
# The key covers the oracle's sources and the module table entry.
key="$( (cat "$src"/*.go; echo "$module $proxy_version $replaces") | sha256sum | cut -c1-16)"
dir="$cache_root/$version-$key"
bin="$dir/istio-oracle"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -x "$bin" ]]; then # built by a concurrent call while we waited
  echo "$bin"
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
if [[ "$module" == "$(awk '/^require istio.io\/istio/ {print $3}' "$src/go.mod")" ]]; then
  cp "$src/go.sum" "$work/go.sum"
fi

echo "istio-oracle: building the oracle for Istio $version (istio.io/istio@$module); a cold build takes 10-15 minutes" >&2
start=$(date +%s)
(
  cd "$work"
  export GOFLAGS=-mod=mod CGO_ENABLED=0
  go mod tidy >&2 || die "go mod tidy failed for istio.io/istio@$module (see above)"
  ldflags="-s -w -X main.proxyVersion=$proxy_version"
  go build -tags vtprotobuf -ldflags "$ldflags" -o "$work/istio-oracle" . >&2 \
    || die "go build failed for istio.io/istio@$module (see above)"
)
mkdir -p "$dir"
mv "$work/istio-oracle" "$bin.tmp"
cp "$work/go.mod" "$dir/go.mod"
mv "$bin.tmp" "$bin"
echo "istio-oracle: built in $(( $(date +%s) - start )) s: $bin" >&2
echo "$bin"
