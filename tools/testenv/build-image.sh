#!/usr/bin/env bash
# Builds the aimd image the real test node runs, with no registry to pull from:
#  1. a Python base (Debian bookworm by debootstrap, from the same Debian mirror apt uses), once
#     per set of inputs below;
#  2. the project's Dockerfile, unchanged, with `buildah bud` on that base (its PYTHON build arg);
#     pip inside the build reaches the package registry through the host's CA bundle, bind-mounted
#     read-only into the RUN steps and never baked into the image;
#  3. a second tag of the same image whose default command is `serve-cache`, which AIMServices on
#     the test node use as their "inference server" (a template names only an image).
# Both tags go into one OCI archive (their layers shared) that the node imports into containerd.
# Rebuilt only when aimd/, pyproject.toml or the Dockerfile change (a hash of their content).
#
# RUN steps use the host's network and chroot isolation: no CNI bridge, iptables chain or
# ip_forward change is left behind. buildah's own state lives in the cache; one build at a time.
#
# Prints the directory holding images.tar and tags on its last line of stdout.
# Needs root, buildah, debootstrap. Environment: AIMD_TESTENV_CACHE (default ~/.cache/aimd-testenv),
# AIMD_DEBIAN_MIRROR (default: the first deb.debian.org-style URI apt is configured with).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${AIMD_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aimd-testenv}
mkdir -p "$cache_root"

suite=bookworm
base_packages=python3,python3-venv,python3-pip,python-is-python3
base_key=$(printf '%s\n' "$suite" "$base_packages" "minbase" | sha256sum | cut -c1-12)
base_image=localhost/aimd-python:$base_key
image_key=$(
  cd "$repo"
  {
    echo "$base_key"
    find aimd -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
      | xargs -0 sha256sum
    sha256sum pyproject.toml Dockerfile
  } | sha256sum | cut -c1-12
)
out="$cache_root/image-$image_key"

storage="$cache_root/buildah"
buildah=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver overlay)
export TMPDIR="$storage/tmp"
mkdir -p "$TMPDIR"

exec 9>"$cache_root/buildah.lock"
if ! flock -n 9; then
  echo "testenv: another image build is running; waiting for it" >&2
  flock 9
fi
# Whatever their flags, buildah keeps a blob-info cache in /var/lib/containers and a lock in
# /etc/cni, and debootstrap's mounts make /run/mount: take away again those this build made.
made_here=()
for path in /var/lib/containers /etc/cni /run/mount; do
  [ -e "$path" ] || made_here+=("$path")
done
trap 'for path in "${made_here[@]}"; do rm -rf "$path"; done' EXIT

if [ -s "$out/images.tar" ] && [ -s "$out/tags" ]; then
  echo "testenv: reusing $out" >&2
  echo "$out"
  exit 0
fi

mirror=${AIMD_DEBIAN_MIRROR:-$(
  grep -h -o -E '^(URIs:|deb) +https?://[^ ]+/debian\b' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n 1 || true
)}

if ! "${buildah[@]}" inspect --type image "$base_image" >/dev/null 2>&1; then
  start=$(date +%s)
  [ -n "$mirror" ] || { echo "testenv: no Debian mirror found; set AIMD_DEBIAN_MIRROR" >&2; exit 1; }
  echo "testenv: building the Python base $base_image (debootstrap $suite from $mirror, ~2 min)" >&2
  rootfs="$TMPDIR/python-rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include="$base_packages" "$suite" "$rootfs" "$mirror" \
    >"$TMPDIR/debootstrap.log" 2>&1 || { tail -n 30 "$TMPDIR/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/*
  container=$("${buildah[@]}" from scratch)
  mountpoint=$("${buildah[@]}" mount "$container")
  cp -a "$rootfs/." "$mountpoint/"
  "${buildah[@]}" umount "$container" >/dev/null
  "${buildah[@]}" config --os linux --arch amd64 --cmd python3 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    "$container"
  "${buildah[@]}" commit --quiet --rm "$container" "$base_image" >/dev/null
  rm -rf "$rootfs"
  echo "testenv: Python base built in $(( $(date +%s) - start ))s" >&2
fi

start=$(date +%s)
echo "testenv: building localhost/aimd:$image_key from the Dockerfile" >&2
rm -rf "$out.partial"
mkdir -p "$out.partial"
tag=localhost/aimd:$image_key
serve_tag=localhost/aimd-serve:$image_key
"${buildah[@]}" bud --quiet --pull=never --layers=false --isolation chroot --network host \
  --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg PYTHON="$base_image" --tag "$tag" --file "$repo/Dockerfile" "$repo" >/dev/null
container=$("${buildah[@]}" from --pull-never "$tag")
"${buildah[@]}" config --cmd serve-cache "$container"
"${buildah[@]}" commit --quiet --rm "$container" "$serve_tag" >/dev/null
for name in "$tag" "$serve_tag"; do
  "${buildah[@]}" push --quiet --disable-compression "$name" "oci:$out.partial/layout:$name"
done
tar -C "$out.partial/layout" -cf "$out.partial/images.tar" .
rm -rf "$out.partial/layout"
printf '%s\n' "$tag" "$serve_tag" > "$out.partial/tags"
"${buildah[@]}" rmi "$serve_tag" "$tag" >/dev/null
rm -rf "$out"
mv "$out.partial" "$out"
# Keep the two newest builds (another worktree may be on the other); older ones only take space.
ls -1dt "$cache_root"/image-*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
echo "testenv: image built in $(( $(date +%s) - start ))s" >&2
echo "$out"
