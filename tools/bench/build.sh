#!/usr/bin/env bash
# Builds the benchmarks' S3 server (tools/bench/s3server: gofakes3's in-memory backend behind our
# own main, plus the no-disk ceiling client) into a cache directory keyed by its inputs (go.mod,
# go.sum, main.go) and the Go version, as tools/testenv/build.sh does for the control plane. A
# second run with the same inputs finds the binary there and builds nothing.
#
# Prints the binary's path on its last line of stdout.
# Environment: AIMD_BENCH_CACHE (default ~/.cache/aimd-bench).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${AIMD_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aimd-bench}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

src="$here/s3server"
gofakes3=$(awk '$1 == "require" && $2 == "github.com/johannesboyne/gofakes3" {print $3}' "$src/go.mod")
inputs=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
out="$cache_root/s3server_gofakes3-${gofakes3}_$(go env GOVERSION)_${inputs}"

if [ -x "$out/s3server" ]; then
  echo "bench: reusing $out/s3server" >&2
  echo "$out/s3server"
  exit 0
fi

# A private build directory, renamed into place: two builds at once never share a half-built one.
mkdir -p "$cache_root"
partial=$(mktemp -d "$cache_root/.partial.XXXXXX")
echo "bench: building the S3 server (gofakes3 ${gofakes3}) into $out" >&2
(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$partial/s3server" .)
rm -rf "$out"
mv "$partial" "$out"
echo "$out/s3server"
