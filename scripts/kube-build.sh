#!/usr/bin/env bash
# Builds the Kubernetes side of meshcheck's sandbox target from the Go module proxy
# (kubestack/: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kube-proxy of Kubernetes 1.36.3, a release both Istio 1.30 and 1.31 support, and
# kwok 0.8.0 built against the same k8s.io modules), version-stamped as Kubernetes'
# release builds are (istioctl refuses an unstamped API server). Caches the binaries
# and prints their directory:
#
#   scripts/kube-build.sh
#
# Cache: ${MESHCHECK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/meshcheck}/kube/
# Cost: a cold build downloads about 0.4 GB of Go modules and compiles Kubernetes
# (15-20 minutes on 2 cores). MESHCHECK_BUILD_TIMEOUT (seconds, default 3600) bounds it.
set -euo pipefail

K8S=1.36.3
here="$(cd "$(dirname "$0")/.." && pwd)"
src="$here/kubestack"
# shellcheck source=scripts/go-build-lib.sh
source "$here/scripts/go-build-lib.sh"

die() { echo "kube-build: $1" >&2; exit "${2:-3}"; }

cache_root="$(meshcheck_cache)/kube"
recipe="etcd,kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,kwok trimpath cgo=0 r1"
key="$( (cat "$src/go.mod" "$src/go.sum" "$src/cmd/etcd/main.go"; echo "$K8S $recipe") | sha256sum | cut -c1-16)"
dir="$cache_root/$K8S-$key"

if [[ -f "$dir/.complete" ]]; then
  echo "$dir"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "Go is not installed (Kubernetes is a Go module; Kubernetes $K8S needs Go >= 1.26)"

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -f "$dir/.complete" ]]; then
  echo "$dir"
  exit 0
fi

work="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "kube-build: building Kubernetes $K8S (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy) and kwok; a cold build takes 15-20 minutes on 2 cores" >&2
start=$(date +%s)
(
  cd "$src"
  export CGO_ENABLED=0 GOFLAGS=-mod=readonly
  minor="${K8S#1.}"; minor="${minor%%.*}"
  kv=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kv+=" -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  done
  kv+=" -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z"
  go_build_with_progress "kube-build" \
    go build -trimpath -ldflags "-s -w$kv" -o "$work/bin/" ./cmd/etcd \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy \
      sigs.k8s.io/kwok/cmd/kwok \
    || die "go build failed for Kubernetes $K8S (see above)"
  # kwok's own stages for nodes (the pods' stages are meshcheck's: the sandbox target
  # writes them), from the same module.
  kwokdir="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  cp "$kwokdir/kustomize/stage/node/fast/node-initialize.yaml" "$work/bin/"
  cp "$kwokdir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" "$work/bin/"
)
mkdir -p "$dir"
for f in "$work"/bin/*; do
  mv "$f" "$dir/"
done
echo "kubernetes $K8S built $(date -u +%FT%TZ) in $(( $(date +%s) - start )) s" >"$dir/.complete"
echo "kube-build: built in $(( $(date +%s) - start )) s: $dir" >&2
echo "$dir"
