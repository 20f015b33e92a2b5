#!/usr/bin/env bash
# Builds offline stand-ins for the public base images the image and the compose stacks
# use, from Debian 12 (bookworm) packages, for machines whose Docker engine reaches no
# registry. Each is tagged with the public name it stands in for, so the Dockerfile and
# the compose files run unchanged; an image already present under that name (pulled or
# built before) is kept. Stand-ins carry the label org.prefixcache.offline-standin=true:
#   docker image ls --filter label=org.prefixcache.offline-standin=true
# Remove them before pulling the real images on a machine that has a registry.
#
#   deploy/docker/offline-images.sh            # all of them
#   deploy/docker/offline-images.sh redis      # some: debian redis prometheus alertmanager haproxy python
#
# Needs root (or sudo) for mmdebstrap, and the Debian archive. There is no stand-in for
# the Rust image (Debian's rustc is too old for the workspace: build the binary on the
# host and use build-image.sh --binary) nor for Grafana (not packaged by Debian).
set -euo pipefail

# The public names, pinned to the versions Debian 12 ships, so the stand-in and the
# real image run the same major version.
DEBIAN_IMAGE=debian:bookworm-slim
REDIS_IMAGE=redis:7.0-bookworm
PROMETHEUS_IMAGE=prom/prometheus:v2.42.0
ALERTMANAGER_IMAGE=prom/alertmanager:v0.25.0
HAPROXY_IMAGE=haproxy:2.6-bookworm
PYTHON_IMAGE=python:3.11-slim-bookworm

LABEL_ARGS=(--label org.prefixcache.offline-standin=true)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

log() { printf '[offline-images] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

present() { docker image inspect "$1" >/dev/null 2>&1; }

# The slim Debian base: minbase, without manuals, docs (copyright files kept), locales
# or apt lists, like the official debian:*-slim.
build_debian() {
  if present "$DEBIAN_IMAGE"; then log "$DEBIAN_IMAGE present"; return; fi
  if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends mmdebstrap
  fi
  local dir
  dir=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$dir'" RETURN
  log "building $DEBIAN_IMAGE with mmdebstrap (about a minute)"
  as_root mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$dir/rootfs.tar" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY_MIRROR bookworm-security main"
  as_root docker import --change 'LABEL org.prefixcache.offline-standin=true' \
    --change 'CMD ["bash"]' "$dir/rootfs.tar" "$DEBIAN_IMAGE" >/dev/null
}

# An image FROM the Debian stand-in, with packages installed by apt and the layout of
# the public image it stands in for ($2: the rest of the Dockerfile).
build_from_debian() {
  local tag=$1 rest=$2
  if present "$tag"; then log "$tag present"; return; fi
  build_debian
  log "building $tag from Debian packages"
  docker build -q "${LABEL_ARGS[@]}" -t "$tag" - >/dev/null <<DOCKERFILE
FROM $DEBIAN_IMAGE
$rest
DOCKERFILE
}

apt_install() {
  printf 'RUN apt-get update -qq \\\n && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends %s >/dev/null \\\n && rm -rf /var/lib/apt/lists/*' "$*"
}

build_redis() {
  # The official image: redis-server on PATH, /data owned by redis, run as redis.
  build_from_debian "$REDIS_IMAGE" "$(apt_install redis-server redis-tools)
RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD [\"redis-server\"]"
}

build_prometheus() {
  # The official image: entrypoint prometheus, data in /prometheus, run as nobody.
  build_from_debian "$PROMETHEUS_IMAGE" "$(apt_install prometheus)
RUN mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
WORKDIR /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT [\"/usr/bin/prometheus\"]
CMD [\"--config.file=/etc/prometheus/prometheus.yml\", \"--storage.tsdb.path=/prometheus\"]"
}

build_alertmanager() {
  # The official image: entrypoint alertmanager, data in /alertmanager, run as nobody.
  build_from_debian "$ALERTMANAGER_IMAGE" "$(apt_install prometheus-alertmanager)
RUN mkdir -p /alertmanager /etc/alertmanager && chown nobody:nogroup /alertmanager
WORKDIR /alertmanager
USER nobody
EXPOSE 9093
ENTRYPOINT [\"/usr/bin/prometheus-alertmanager\"]
CMD [\"--config.file=/etc/alertmanager/alertmanager.yml\", \"--storage.path=/alertmanager\"]"
}

build_haproxy() {
  # The official image: haproxy on PATH, its config in /usr/local/etc/haproxy, run as haproxy.
  build_from_debian "$HAPROXY_IMAGE" "$(apt_install haproxy)
RUN mkdir -p /usr/local/etc/haproxy /var/lib/haproxy && chown haproxy:haproxy /var/lib/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
CMD [\"haproxy\", \"-f\", \"/usr/local/etc/haproxy/haproxy.cfg\"]"
}

build_python() {
  build_from_debian "$PYTHON_IMAGE" "$(apt_install python3)
CMD [\"python3\"]"
}

main() {
  local wanted=("$@")
  if [ ${#wanted[@]} = 0 ]; then
    wanted=(debian redis prometheus alertmanager haproxy python)
  fi
  if ! docker info >/dev/null 2>&1; then
    log "no Docker engine answers (docker info failed)"
    exit 1
  fi
  # Several test processes may ask at once: one builds, the others wait for it.
  exec 9>"${TMPDIR:-/tmp}/prefixcache-offline-images.lock"
  flock 9
  for name in "${wanted[@]}"; do
    case "$name" in
      debian) build_debian ;;
      redis) build_redis ;;
      prometheus) build_prometheus ;;
      alertmanager) build_alertmanager ;;
      haproxy) build_haproxy ;;
      python) build_python ;;
      *) log "unknown image $name (debian redis prometheus alertmanager haproxy python)"; exit 2 ;;
    esac
  done
}

main "$@"
