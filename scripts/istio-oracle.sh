#!/usr/bin/env bash
# Prints the path of meshcheck's Istio oracle for an Istio release, building it (with
# Istio's own pilot-discovery, istioctl and pilot-agent: one Go build, see
# scripts/istio-build.sh) when it is not cached.
#
#   scripts/istio-oracle.sh [VERSION]      VERSION: 1.30.3 (default, the pinned Istio),
#                                          1.31, or a Go module version of istio.io/istio
exec bash "$(dirname "$0")/istio-build.sh" "${1:-1.30.3}" oracle
