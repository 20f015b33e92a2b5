#!/usr/bin/env bash
# Builds the prefixcache image (deploy/docker/Dockerfile) and prints its size.
#
#   deploy/docker/build-image.sh                                 # from source, in the Rust image
#   deploy/docker/build-image.sh --binary target/release/prefixcache   # a binary built outside
#   deploy/docker/build-image.sh --tag prefixcache:dev ...       # another tag (default prefixcache:latest)
#
# RUNTIME_IMAGE and RUST_IMAGE, when set, are passed as the Dockerfile's base images.
# Without a registry, run deploy/docker/offline-images.sh first (it builds the runtime
# base from Debian's packages) and build from a binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

tag=prefixcache:latest
binary=
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

args=(-f "$here/Dockerfile" -t "$tag")
[ -n "${RUNTIME_IMAGE:-}" ] && args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
[ -n "${RUST_IMAGE:-}" ] && args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")

if [ -n "$binary" ]; then
  [ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 2; }
  # The context holds the binary alone: nothing else is sent to the engine.
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  cp "$binary" "$context/prefixcache"
  docker build -q --target runtime-prebuilt "${args[@]}" "$context" >/dev/null
else
  docker build "${args[@]}" "$root"
fi
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "built $tag: $((size / 1000000)) MB"
