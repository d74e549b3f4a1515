#!/usr/bin/env bash
# Prints a directory holding the Kubernetes Gateway API CRDs of the standard channel
# at VERSION, as the Go module sigs.k8s.io/gateway-api publishes them
# (config/crd/standard/*.yaml, the files `kubectl kustomize config/crd` bundles),
# fetched from the Go module proxy once and cached:
#
#   scripts/gateway-api-crds.sh VERSION      e.g. v1.5.1 (what Istio 1.30's go.mod requires)
#
# Only the CustomResourceDefinitions are kept: the channel's
# ValidatingAdmissionPolicy (safe-upgrades) is a cluster-wide policy, not an API
# meshcheck's fixtures need. Nothing of the Gateway API is kept in meshcheck's
# repository.
#
# Cache: ${MESHCHECK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcheck}/gateway-api/
# Cost: one module download (about 1 MB) the first time; then nothing.
# Exit 2: a malformed VERSION; exit 3: no Go, or the proxy does not serve it.
set -euo pipefail

version="${1:-}"
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/go-build-lib.sh
source "$here/scripts/go-build-lib.sh"

die() { echo "gateway-api-crds: $1" >&2; exit "${2:-3}"; }

[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] \
  || die "usage: scripts/gateway-api-crds.sh VERSION (a module version such as v1.5.1; got '${version}')" 2

cache_root="$(meshcheck_cache)/gateway-api"
dir="$cache_root/$version-standard"
if [[ -f "$dir/.complete" ]]; then
  echo "$dir"
  exit 0
fi
command -v go >/dev/null 2>&1 \
  || die "Go is not installed: the Gateway API CRDs come from the Go module sigs.k8s.io/gateway-api@$version (install Go, or install the CRDs yourself: kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/$version/standard-install.yaml)"

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -f "$dir/.complete" ]]; then
  echo "$dir"
  exit 0
fi

# `go mod download` of an explicit module@version works outside any module and
# verifies the zip against the checksum database.
json="$(cd / && GOFLAGS= timeout 300 go mod download -json "sigs.k8s.io/gateway-api@$version" 2>&1)" \
  || die "cannot download sigs.k8s.io/gateway-api@$version from the Go module proxy: $json"
moddir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
[[ -n "$moddir" && -d "$moddir/config/crd/standard" ]] \
  || die "sigs.k8s.io/gateway-api@$version has no config/crd/standard directory (go mod download said: $json)"

work="$(mktemp -d "$cache_root/.get.XXXXXX")"
trap 'rm -rf "$work"' EXIT
n=0
for f in "$moddir"/config/crd/standard/*.yaml; do
  if grep -q '^kind: CustomResourceDefinition$' "$f"; then
    cp "$f" "$work/"
    n=$((n + 1))
  fi
done
(( n > 0 )) || die "sigs.k8s.io/gateway-api@$version: no CustomResourceDefinition in config/crd/standard"
chmod 0644 "$work"/*.yaml
chmod 0755 "$work"
echo "gateway-api $version standard channel: $n CRDs from $moddir" >"$work/.complete"
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
echo "$dir"
