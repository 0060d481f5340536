#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager) from the pinned
# wrapper modules beside this script, into a cache directory keyed by those pins and the Go version.
# A second run with the same pins finds the binaries there and builds nothing; two runs at once
# (CI, several worktrees) take turns on a lock instead of building the same directory twice.
#
# Prints the directory holding the three binaries on its last line of stdout.
# Environment: AIMD_TESTENV_CACHE (default ~/.cache/aimd-testenv).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${AIMD_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aimd-testenv}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/kube/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$here/etcd/go.mod")
pins=$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" | sha256sum | cut -c1-12)
key="kube-${kube_version}_etcd-${etcd_version}_$(go env GOVERSION)_${pins}"
out="$cache_root/$key"
mkdir -p "$cache_root"

exec 9>"$out.lock"
if ! flock -n 9; then
  echo "testenv: another build of $key is running; waiting for it" >&2
  flock 9
fi

if [ -x "$out/etcd" ] && [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ]; then
  echo "testenv: reusing $out" >&2
  echo "$out"
  exit 0
fi

rm -rf "$out.partial"
mkdir -p "$out.partial"
start=$(date +%s)
echo "testenv: building kube ${kube_version} and etcd ${etcd_version} into $out (cold builds take 10-25 minutes)" >&2
ldflags="-s -w"
(cd "$here/etcd" && go build -trimpath -ldflags "$ldflags" -o "$out.partial/etcd" go.etcd.io/etcd/server/v3)
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$out.partial/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
rm -rf "$out"
mv "$out.partial" "$out"
echo "testenv: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
