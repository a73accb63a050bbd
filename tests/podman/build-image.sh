#!/usr/bin/env bash
# Builds a podman image of steward as PID 1 supervising steward-proxy, from this checkout's
# release binaries, the shared libraries they link (as ldd lists them) and etc/container's
# configuration: etc/container/Dockerfile's final stage without a base image, since no
# registry is reachable from CI. Usage: build-image.sh TAG
# RELEASE_DIR overrides where the binaries are (default: target/release).
set -euo pipefail

tag=${1:?usage: build-image.sh TAG}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
release=${RELEASE_DIR:-$repo/target/release}

for b in steward steward-proxy; do
  [[ -x $release/$b ]] || { echo "build-image: $release/$b is missing: run 'make build' first" >&2; exit 1; }
done

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/root
mkdir -p "$root/usr/local/bin" "$root/etc/steward" "$root/run" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$release/steward" "$release/steward-proxy" "$root/usr/local/bin/"
# Every library either binary loads, at the path the dynamic loader looks for it.
for lib in $(for b in steward steward-proxy; do ldd "$release/$b"; done |
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$repo/etc/container/steward.toml" "$repo/etc/container/proxy.toml" \
  "$repo/etc/container/pingora.yaml" "$root/etc/steward/"
# The final stage of etc/container/Dockerfile on an empty base: its files are above, and
# its settings (ENV, STOPSIGNAL, EXPOSE, ENTRYPOINT) are taken from it as they are.
{
  echo "FROM scratch"
  echo "COPY root/ /"
  awk 'last && /^(ENV|STOPSIGNAL|EXPOSE|ENTRYPOINT|CMD|WORKDIR|USER) /; /^FROM /{last = ($0 !~ / AS /)}' \
    "$repo/etc/container/Dockerfile"
} > "$ctx/Containerfile"
grep -q '^ENTRYPOINT' "$ctx/Containerfile" || { echo "build-image: no ENTRYPOINT in etc/container/Dockerfile's final stage" >&2; exit 1; }
# --layers=false: one image and no intermediate ones, which concurrent builds of the same
# files would share, so that removing the tag removes everything.
podman build --quiet --layers=false --network none --tag "$tag" --file "$ctx/Containerfile" "$ctx"
