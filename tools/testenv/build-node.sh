#!/usr/bin/env bash
# Builds what the real test node runs besides the control plane: kubelet, kube-scheduler,
# kube-proxy and kubectl from the same pinned k8s.io/kubernetes module as build.sh (stamped with
# its version, so the node reports it), and the pod sandbox ("pause") image from pause/ as an OCI
# archive. Cached by those inputs and the Go version next to the control-plane binaries; a second
# run finds everything there and builds nothing. Two runs at once (CI, several worktrees) take
# turns on a lock instead of building the same directory twice.
#
# Prints the directory holding kubelet, kube-scheduler, kube-proxy, kubectl and pause.tar on its
# last line of stdout. Needs Go and umoci.
# Environment: AIMD_TESTENV_CACHE (default ~/.cache/aimd-testenv).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${AIMD_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aimd-testenv}
mkdir -p "$cache_root"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

kube_version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/kube/go.mod")
pins=$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/pause/go.mod" "$here/pause/main.go" \
  "$here/build-node.sh" | sha256sum | cut -c1-12)
key="node-${kube_version}_$(go env GOVERSION)_${pins}"
out="$cache_root/$key"

complete() {
  [ -x "$out/kubelet" ] && [ -x "$out/kube-scheduler" ] && [ -x "$out/kube-proxy" ] \
    && [ -x "$out/kubectl" ] && [ -s "$out/pause.tar" ]
}

exec 9>"$out.lock"
if ! flock -n 9; then
  echo "testenv: another build of $key is running; waiting for it" >&2
  flock 9
fi

if complete; then
  echo "testenv: reusing $out" >&2
  echo "$out"
  exit 0
fi

rm -rf "$out.partial"
mkdir -p "$out.partial"
start=$(date +%s)
echo "testenv: building the node binaries of kube ${kube_version} into $out (a few minutes after build.sh)" >&2

# Without these the binaries report v0.0.0-master, and the node's kubeletVersion says so.
minor=${kube_version#v*.}
minor=${minor%%.*}
major=${kube_version#v}
major=${major%%.*}
version_flags="-X k8s.io/component-base/version.gitVersion=${kube_version}"
version_flags+=" -X k8s.io/component-base/version.gitMajor=${major}"
version_flags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
version_flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
(cd "$here/kube" && go build -trimpath -ldflags "-s -w ${version_flags}" -o "$out.partial/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl)

# The sandbox image: one layer holding the static pause binary, as an OCI archive whose tag
# (the ref name) is this build's key, so the node imports a new one whenever it changes.
work=$(mktemp -d "$out.partial/pause.XXXX")
(cd "$here/pause" && go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
umoci init --layout "$work/layout"
umoci new --image "$work/layout:$pins"
umoci insert --image "$work/layout:$pins" "$work/pause" /pause
umoci config --image "$work/layout:$pins" --os linux --architecture amd64 \
  --config.entrypoint /pause --config.user 65535:65535
tar -C "$work/layout" -cf "$out.partial/pause.tar" .
echo "$pins" > "$out.partial/pause.tag"
rm -rf "$work"

rm -rf "$out"
mv "$out.partial" "$out"
echo "testenv: built the node in $(( $(date +%s) - start ))s" >&2
echo "$out"
