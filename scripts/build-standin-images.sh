#!/usr/bin/env bash
# build-standin-images.sh — build local stand-ins for the SPARC images (no registry needed), so that
# examples/sparc-avatar.yaml runs unchanged on a machine without the real NVIDIA/SPARC images.
#
#   localhost/sparc-test/bb:test                      busybox (host's busybox-static), for quick tests
#   localhost/sparc-test/py:base                      Debian bookworm + python3 + python3-grpcio + procps
#   nvcr.io/nvidia/riva/riva-speech:2.16.0-server     gRPC health SERVING on :50051
#   localhost/sparc/mas-server:latest                 GET /health on :8000 (needs RIVA_API_URL reachable)
#   localhost/sparc/signaling-server:latest           `node build/index.js -p 8080`: URS signaling (WebSocket, -t http)
#   docker.io/coturn/coturn:4.6                       STUN on --listening-port (3478) udp+tcp
#   localhost/sparc/unity-server:latest               process "SPARC-P.x86_64" holding a WebSocket to SIGNALING_URL
#   localhost/sparc/riva-websocket-bridge:latest      `riva-websocket-gateway --port=8080`: WebSocket server
#                                                     (examples/sparc-backend.yaml)
#   localhost/sparc-test/urs-renderer:test            a URS renderer with WebRTC (aiortc, synthetic video):
#                                                     -signalingUrl URL [--mode answer|re-offer|no-frames]
#   localhost/sparc-test/coturn:test                  the real coturn (Debian's), entrypoint turnserver
#                                                     (both on localhost/sparc-test/py-media:base: + aiortc, coturn)
#
# Sources: images/standin/. Every image carries the label org.sparc-agent.standin.hash (its recipe and
# sources); an image whose label matches is skipped, so a second run takes about a second.
# The base needs mmdebstrap and a Debian mirror (~30-40 s once); the rest is `podman build` (< 1 s each).
# Stand-ins handle SIGTERM themselves, but still run them with `podman run --init` / quadlet RunInit=true.
#
# Usage: scripts/build-standin-images.sh [--force] [--list]
#   --force  rebuild everything        --list  print the image names and exit
# Env: PODMAN (default podman), DEBIAN_MIRROR (default: the machine's apt mirror).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$REPO/images/standin
PODMAN=${PODMAN:-podman}
LABEL=org.sparc-agent.standin.hash
BB=localhost/sparc-test/bb:test
BASE=localhost/sparc-test/py:base
# name in images/standin/Containerfile.NAME -> image reference used by examples/sparc-avatar.yaml
declare -A IMAGES=(
  [riva]=nvcr.io/nvidia/riva/riva-speech:2.16.0-server
  [mas]=localhost/sparc/mas-server:latest
  [signaling]=localhost/sparc/signaling-server:latest
  [coturn]=docker.io/coturn/coturn:4.6
  [unity]=localhost/sparc/unity-server:latest
  [ws-bridge]=localhost/sparc/riva-websocket-bridge:latest
)
ORDER=(riva mas signaling coturn unity ws-bridge)
MEDIA=localhost/sparc-test/py-media:base
RENDERER=localhost/sparc-test/urs-renderer:test
TURN=localhost/sparc-test/coturn:test
MEDIA_PACKAGES=python3-aiortc,python3-av,coturn
BASE_PACKAGES=python3,python3-grpcio,procps

FORCE=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --list)
      printf '%s\n' "$BB" "$BASE"
      for n in "${ORDER[@]}"; do echo "${IMAGES[$n]}"; done
      printf '%s\n' "$MEDIA" "$RENDERER" "$TURN"
      exit 0
      ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

T_TOTAL=$EPOCHREALTIME
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# One builder at a time (parallel pytest workers or a user and a test run): image tags are global.
exec 9>"${TMPDIR:-/tmp}/sparc-standin-images.lock"
flock 9

current_hash() { "$PODMAN" image inspect --format "{{index .Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }
up_to_date() { ((FORCE == 0)) && [[ $(current_hash "$1") == "$2" ]]; }
report() { printf '  %-48s %-8s %6s s\n' "$1" "$2" "$3"; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

build_bb() {
  local t0=$EPOCHREALTIME busybox=/bin/busybox hash r
  [[ -x $busybox ]] || busybox=$(command -v busybox)
  if ! file_is_static "$busybox"; then
    echo "need a static busybox (apt-get install busybox-static)" >&2
    return 1
  fi
  hash=$(printf 'bb v1\n%s\n' "$(sha256sum <"$busybox")" | sha256sum | cut -c1-16)
  if up_to_date "$BB" "$hash"; then
    report "$BB" cached "$(elapsed "$t0")"
    return 0
  fi
  r=$WORK/bb
  mkdir -p "$r/bin" "$r/www" "$r/tmp" "$r/etc" "$r/usr" "$r/root"
  chmod 1777 "$r/tmp"
  cp "$busybox" "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do
    [[ $a == busybox ]] || ln -sf busybox "$r/bin/$a"
  done
  # so that `-v /usr:/usr:ro` can run the host's python3 inside for one-off UDP servers
  ln -sfn usr/lib "$r/lib"
  ln -sfn usr/lib64 "$r/lib64"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
  echo 'root:x:0:' >"$r/etc/group"
  echo hello >"$r/www/index.html"
  tar -C "$r" -cf "$WORK/bb.tar" .
  "$PODMAN" import -q --change "LABEL $LABEL=$hash" --change 'CMD ["/bin/sh"]' "$WORK/bb.tar" "$BB" >/dev/null
  report "$BB" built "$(elapsed "$t0")"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

build_base() {
  # build_base REF PACKAGES: a Debian bookworm root with PACKAGES, imported as REF; sets BASE_HASH
  local ref=$1 packages=$2 t0=$EPOCHREALTIME hash mirror
  hash=$(printf 'mmdebstrap v1 --variant=essential --include=%s bookworm nodoc\n' "$packages" | sha256sum | cut -c1-16)
  BASE_HASH=$hash
  if up_to_date "$ref" "$hash"; then
    report "$ref" cached "$(elapsed "$t0")"
    return 0
  fi
  command -v mmdebstrap >/dev/null || { echo "need mmdebstrap (apt-get install mmdebstrap)" >&2; return 1; }
  mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  # essential + no docs: 165 MB instead of 230 MB for --variant=apt, same run time
  mmdebstrap -q --variant=essential --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$WORK/base.tar" "deb $mirror bookworm main"
  "$PODMAN" import -q --change "LABEL $LABEL=$hash" --change 'CMD ["/usr/bin/python3"]' \
    "$WORK/base.tar" "$ref" >/dev/null
  rm -f "$WORK/base.tar"
  report "$ref" built "$(elapsed "$t0")"
}

build_media() {
  # build_media NAME REF: images/standin/Containerfile.NAME on the media base. The renderer imports
  # sparc_agent.probes.urs (the signaling client the probe uses): the build context is images/standin
  # plus a copy of the package's Python files.
  local name=$1 ref=$2 t0=$EPOCHREALTIME hash ctx=$WORK/media-$1
  hash=$( (echo "$BASE_HASH" && cd "$REPO" && find images/standin sparc_agent -name '*.py' -o -name 'Containerfile.*' |
    sort | xargs sha256sum) | sha256sum | cut -c1-16)
  if up_to_date "$ref" "$hash"; then
    report "$ref" cached "$(elapsed "$t0")"
    return 0
  fi
  mkdir -p "$ctx"
  cp -r "$SRC"/. "$ctx"/
  (cd "$REPO" && find sparc_agent -name '*.py' -print0 | xargs -0 cp --parents -t "$ctx")
  "$PODMAN" build -q --pull=never --label "$LABEL=$hash" -f "$ctx/Containerfile.$name" -t "$ref" "$ctx" >/dev/null
  report "$ref" built "$(elapsed "$t0")"
}

build_service() {
  local name=$1 ref=${IMAGES[$1]} t0=$EPOCHREALTIME hash
  # sources are shared (standin.py): hash the whole directory, plus the base it builds on
  hash=$( (echo "$BASE_HASH" && cd "$SRC" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-16)
  if up_to_date "$ref" "$hash"; then
    report "$ref" cached "$(elapsed "$t0")"
    return 0
  fi
  "$PODMAN" build -q --pull=never --label "$LABEL=$hash" -f "$SRC/Containerfile.$name" -t "$ref" "$SRC" >/dev/null
  report "$ref" built "$(elapsed "$t0")"
}

echo "stand-in images"
build_bb
build_base "$BASE" "$BASE_PACKAGES"
for n in "${ORDER[@]}"; do
  build_service "$n"
done
build_base "$MEDIA" "$BASE_PACKAGES,$MEDIA_PACKAGES"
build_media renderer "$RENDERER"
build_media turn "$TURN"
printf '  %-48s %-8s %6s s\n' total "" "$(elapsed "$T_TOTAL")"
