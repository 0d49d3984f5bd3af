#!/usr/bin/env bash
# test-host-setup.sh — make a Debian 12 (bookworm) machine a sparc-agent test host.
#
# Installs what the e2e tests need (see docs in /work/shared/test-host.md, mirrored by tests/support/testhost.py):
#   * podman 4.3.1 + runc/crun/conmon/catatonit/netavark/aardvark-dns/slirp4netns/fuse-overlayfs/uidmap,
#     busybox-static, dbus-user-session, python3-systemd, shellcheck, docker-registry (pull tests),
#     prometheus + nginx (metrics and proxy tests), slurm-wlm/slurmctld/slurmd/slurm-client/munge (SLURM tests), mmdebstrap (stand-in images),
#     coturn + nftables (the webrtc probe's media e2e: real TURN, packet drops in its own namespace);
#   * the quadlet generator taken from trixie's podman .deb (bookworm's podman has none), without touching
#     the machine's apt sources;
#   * /etc/containers/containers.conf with the settings this host needs (runc, netavark, ulimits);
#   * /run/systemd/system (so `systemd --user` and systemctl work although PID 1 is not systemd);
#   * a fake CDI spec /etc/cdi/fake-nvidia.yaml (nvidia.com/gpu=all, =0, =1) so `AddDevice=` of GPUs works.
#
# Python dependencies: NOT installed by default — .ci/run owns the venv. Pass --python to also run
# `$PYTHON -m pip install -e '.[test]'` (PYTHON defaults to python3) for a laptop-style setup.
#
# Idempotent: every step checks first and does nothing when already done (second run: ~1 s).
# Services that packages would start (munge, slurm*, docker-registry) are NOT started: tests start their own
# daemons by PID (a temporary policy-rc.d is used if the machine has none).
#
# Usage: sudo scripts/test-host-setup.sh [--python] [--images]
#   --python   also pip-install the project with its test extras into $PYTHON
#   --images   also build the stand-in images (scripts/build-standin-images.sh)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
WANT_PYTHON=0
WANT_IMAGES=0
for arg in "$@"; do
  case $arg in
    --python) WANT_PYTHON=1 ;;
    --images) WANT_IMAGES=1 ;;
    -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "must run as root" >&2
  exit 1
fi

APT_PACKAGES=(
  podman crun conmon catatonit uidmap slirp4netns fuse-overlayfs busybox-static
  golang-github-containers-common netavark aardvark-dns iptables runc dbus-user-session python3-systemd
  shellcheck docker-registry
  prometheus nginx
  slurm-wlm slurmctld slurmd slurm-client munge
  mmdebstrap
  coturn nftables
)
QUADLET=/usr/libexec/podman/quadlet
GENERATOR=/usr/lib/systemd/user-generators/podman-user-generator
MARKER="# written by sparc-agent scripts/test-host-setup.sh"

T_TOTAL=$EPOCHREALTIME
step() { # step NAME FUNCTION: run it and print how long it took
  local name=$1 t0=$EPOCHREALTIME
  shift
  "$@"
  awk -v a="$t0" -v b="$EPOCHREALTIME" -v n="$name" 'BEGIN { printf "  %-26s %6.2f s\n", n, b - a }'
}

# Write $2 to $1 only when the bytes differ, so a second run changes no mtimes.
write_if_changed() {
  local path=$1 content=$2
  if [[ -f $path ]] && [[ $(cat "$path") == "$content" ]]; then
    return 0
  fi
  mkdir -p "$(dirname "$path")"
  # keep a foreign file (not ours) instead of silently overwriting it
  if [[ -f $path ]] && ! grep -qF "$MARKER" "$path"; then
    cp -a "$path" "$path.bak-$(date +%s)"
    echo "    kept previous $path as $path.bak-*"
  fi
  printf '%s\n' "$content" >"$path.tmp.$$"
  mv -f "$path.tmp.$$" "$path"
  echo "    wrote $path"
}

install_apt_packages() {
  local missing=() p installed
  # one dpkg-query for all packages (23 separate calls cost ~0.4 s)
  installed=" $(dpkg-query -W -f='${db:Status-Status}:${Package} ' "${APT_PACKAGES[@]}" 2>/dev/null || true) "
  for p in "${APT_PACKAGES[@]}"; do
    if [[ $installed != *" installed:$p "* ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    echo "    all ${#APT_PACKAGES[@]} packages installed"
    return 0
  fi
  echo "    installing: ${missing[*]}"
  # Without a policy-rc.d, postinst scripts would start munged/slurmd/docker-registry via init.d.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from test-host-setup.sh: do not start services\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((made_policy)); then
    rm -f "$policy"
    trap - EXIT
  fi
}

install_quadlet() {
  if [[ -x $QUADLET ]] && [[ $($QUADLET -version 2>/dev/null) == [5-9].* ]]; then
    echo "    $($QUADLET -version)"
  else
    # Bookworm's podman has no quadlet; take trixie's (a static-enough Go binary, needs only libc) from its
    # .deb, using a private apt list dir so the machine's sources stay untouched.
    local mirror tmp opts
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    if [[ -z $mirror ]]; then
      mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        /etc/apt/sources.list 2>/dev/null || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$tmp/sources.list"
    opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$tmp/lists"
      -o APT::Sandbox::User=root)
    apt-get -qq "${opts[@]}" update
    (cd "$tmp" && apt-get -qq "${opts[@]}" download podman/trixie)
    dpkg-deb --fsys-tarfile "$tmp"/podman_*.deb | tar -x -C "$tmp" ./usr/libexec/podman/quadlet
    install -D -m755 "$tmp/usr/libexec/podman/quadlet" "$QUADLET"
    rm -rf "$tmp"
    echo "    installed $($QUADLET -version)"
  fi
  if [[ $(readlink "$GENERATOR" 2>/dev/null || true) != "$QUADLET" ]]; then
    mkdir -p "$(dirname "$GENERATOR")"
    ln -sfn "$QUADLET" "$GENERATOR"
    echo "    linked $GENERATOR"
  fi
}

write_containers_conf() {
  # In /etc (not via CONTAINERS_CONF) so every podman call sees it, the managers' included.
  write_if_changed /etc/containers/containers.conf "$MARKER
[containers]
# else crun and runc fail to set RLIMIT_NOFILE: \"operation not permitted\"
default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]

[engine]
# crun: \"cgroups in hybrid mode not supported, drop all controllers from cgroupv2\"
runtime = \"runc\"

[network]
# a store that once recorded \"cni\" makes -p fail: failed to find plugin \"bridge\"
network_backend = \"netavark\""
}

make_run_systemd() {
  # else systemctl says "System has not been booted with systemd" and systemd --user exits 1.
  # /run is a tmpfs: this step is needed again after every reboot.
  if [[ -d /run/systemd/system ]]; then
    echo "    exists"
  else
    mkdir -p /run/systemd/system
    echo "    created"
  fi
}

write_cdi_spec() {
  # Fake GPUs: the edits are harmless (an env var and /dev/null seen as /dev/nvidiaN).
  write_if_changed /etc/cdi/fake-nvidia.yaml "$MARKER
# Fake NVIDIA GPUs for tests: --device nvidia.com/gpu=all|0|1 (quadlet AddDevice=) set FAKE_GPU and add
# /dev/null as /dev/nvidiaN. Remove this file on a machine with real GPUs (nvidia-ctk cdi generate).
cdiVersion: \"0.5.0\"
kind: nvidia.com/gpu
devices:
  - name: \"0\"
    containerEdits:
      env: [\"FAKE_GPU=0\"]
      deviceNodes:
        - {path: /dev/nvidia0, hostPath: /dev/null}
  - name: \"1\"
    containerEdits:
      env: [\"FAKE_GPU=1\"]
      deviceNodes:
        - {path: /dev/nvidia1, hostPath: /dev/null}
  - name: all
    containerEdits:
      env: [\"FAKE_GPU=all\"]
      deviceNodes:
        - {path: /dev/nvidia0, hostPath: /dev/null}
        - {path: /dev/nvidia1, hostPath: /dev/null}
containerEdits:
  env: [\"NVIDIA_VISIBLE_DEVICES=void\"]"
}

pip_install() {
  # `pip show` alone costs ~1.2 s: ask importlib.metadata whether the editable install points here
  # (-I: else the cwd's sparc_agent.egg-info shadows the installed metadata)
  local where
  where=$("$PYTHON" -I - <<'PY' 2>/dev/null || true
import importlib.metadata as md, json
for extra in ("pytest", "hypothesis", "ruff", "mypy"):  # the test extras, without importing them
    md.distribution(extra)
print(json.loads(md.distribution("sparc-agent").read_text("direct_url.json") or "{}").get("url", ""))
PY
)
  if [[ $where == "file://$REPO" ]]; then
    echo "    sparc-agent already installed editable in $PYTHON"
    return 0
  fi
  "$PYTHON" -m pip install -q -e "${REPO}[test]"
}

echo "test-host setup (Debian $(cat /etc/debian_version 2>/dev/null || echo '?'))"
step "apt packages" install_apt_packages
step "quadlet generator" install_quadlet
step "containers.conf" write_containers_conf
step "/run/systemd/system" make_run_systemd
step "CDI fake GPUs" write_cdi_spec
if ((WANT_PYTHON)); then
  step "pip install -e .[test]" pip_install
fi
if ((WANT_IMAGES)); then
  step "stand-in images" "$REPO/scripts/build-standin-images.sh"
fi
awk -v a="$T_TOTAL" -v b="$EPOCHREALTIME" 'BEGIN { printf "  %-26s %6.2f s\n", "total", b - a }'
