#!/usr/bin/env bash
# trixie-root-setup.sh — "Option B" test host: podman 5.4 + systemd 257 in a Debian trixie root on a
# Debian 12 machine (bookworm's podman is 4.3.1; PubApps/RHEL 9 run podman 5.x). See
# /work/shared/test-host.md, section "Option B".
#
#   scripts/trixie-root-setup.sh build    # mmdebstrap the root (~30-60 s once, ~340 MB) + config; idempotent
#   scripts/trixie-root-setup.sh mount    # bind mounts needed to run podman/systemd inside; idempotent
#   scripts/trixie-root-setup.sh umount   # undo `mount` (never touches the host's own /proc /sys /dev)
#   scripts/trixie-root-setup.sh status   # what is built/mounted, versions
#   scripts/trixie-root-setup.sh smoke    # build+mount, run a user manager with a quadlet .pod inside, umount
#
# Env: TRIXIE_ROOT (default /opt/sparc-trixie-root), DEBIAN_MIRROR (default: the machine's apt mirror).
# Inside: `chroot $TRIXIE_ROOT env PODMAN_IGNORE_CGROUPSV1_WARNING=1 podman ...`. Start user managers
# exactly like tests/support/testhost.py does, in their own cgroup subtree (without one, systemd --user moves every
# process of the machine, PID 1 included, into /init.scope).
set -euo pipefail

R=${TRIXIE_ROOT:-/opt/sparc-trixie-root}
RECIPE_VERSION=1 # bump to rebuild existing roots
PACKAGES=podman,runc,conmon,catatonit,netavark,aardvark-dns,passt,slirp4netns,uidmap,fuse-overlayfs,systemd,dbus-user-session,python3,busybox-static,iptables,procps,iproute2
STAMP=$R/.sparc-trixie-root
MARK="# written by sparc-agent scripts/trixie-root-setup.sh"

[[ $(id -u) -eq 0 ]] || { echo "must run as root" >&2; exit 1; }

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
is_mounted() { mountpoint -q "$1"; }

build() {
  local t0=$EPOCHREALTIME want mirror
  want="v$RECIPE_VERSION $PACKAGES"
  if [[ -f $STAMP ]] && [[ $(cat "$STAMP") == "$want" ]]; then
    echo "  root $R up to date ($(elapsed "$t0") s)"
  else
    if is_mounted "$R"; then
      echo "$R is mounted: run '$0 umount' first" >&2
      return 1
    fi
    mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rm -rf "$R"
    mmdebstrap -q --variant=apt --include="$PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      trixie "$R" "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main"
    echo "$want" >"$STAMP"
    echo "  built $R ($(elapsed "$t0") s, $(du -sh "$R" | cut -f1))"
  fi
  configure
}

write_if_changed() { # path content
  if [[ -f $1 ]] && [[ $(cat "$1") == "$2" ]]; then return 0; fi
  mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" >"$1"
  echo "  wrote $1"
}

configure() {
  write_if_changed "$R/etc/containers/containers.conf" "$MARK
[containers]
# else runc fails to set RLIMIT_NOFILE: \"operation not permitted\"
default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]
[engine]
# crun cannot use the host's hybrid cgroups; no systemd system manager for the systemd cgroup driver
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
[network]
network_backend = \"netavark\"
# else \"unable to execute nft\"
firewall_driver = \"iptables\""
  # overlay on the host's overlay/ext4 inside a chroot fails to remount: vfs is slow but works
  write_if_changed "$R/etc/containers/storage.conf" "$MARK
[storage]
driver = \"vfs\"
runroot = \"/run/containers/storage\"
graphroot = \"/var/lib/containers/storage\""
  mkdir -p "$R/etc/cdi"
  if [[ -f /etc/cdi/fake-nvidia.yaml ]] && ! cmp -s /etc/cdi/fake-nvidia.yaml "$R/etc/cdi/fake-nvidia.yaml"; then
    cp /etc/cdi/fake-nvidia.yaml "$R/etc/cdi/fake-nvidia.yaml"
    echo "  copied fake CDI spec"
  fi
}

do_mount() {
  [[ -f $STAMP ]] || { echo "not built: run '$0 build'" >&2; return 1; }
  # With shared propagation, unmounting the rbind copies would unmount the host's /sys and /dev too.
  if grep -E ' /(sys|dev) ' /proc/self/mountinfo | grep -q 'shared:'; then
    echo "host /sys or /dev has shared propagation: mounts below will be made rslave" >&2
  fi
  # else image unpacking fails: "remount /, flags: 0x44000: invalid argument"
  is_mounted "$R" || mount --bind "$R" "$R"
  is_mounted "$R/proc" || mount -t proc proc "$R/proc"
  is_mounted "$R/sys" || { mount --rbind /sys "$R/sys" && mount --make-rslave "$R/sys"; }
  is_mounted "$R/dev" || { mount --rbind /dev "$R/dev" && mount --make-rslave "$R/dev"; }
  is_mounted "$R/run" || mount -t tmpfs tmpfs "$R/run"
  mkdir -p "$R/run/systemd/system" "$R/run/lock"
  echo "  mounted under $R"
}

do_umount() {
  local m
  for m in run proc sys dev; do
    if is_mounted "$R/$m"; then umount -R "$R/$m"; fi
  done
  if is_mounted "$R"; then umount "$R"; fi
  echo "  unmounted $R"
}

status() {
  if [[ -f $STAMP ]]; then echo "built: $R ($(cat "$STAMP"))"; else echo "not built: $R"; return 0; fi
  for m in "" /proc /sys /dev /run; do
    printf '  %-10s %s\n' "${m:-/}" "$(is_mounted "$R$m" && echo mounted || echo -)"
  done
  chroot "$R" env PODMAN_IGNORE_CGROUPSV1_WARNING=1 podman --version 2>/dev/null || true
  chroot "$R" /lib/systemd/systemd --version 2>/dev/null | head -1 || true
}

# Globals, so that the EXIT trap still sees them after smoke() returned.
SMOKE_NAME=th-trixie-$$
SMOKE_DIR=/tmp/$SMOKE_NAME
SMOKE_PID=

cleanup_smoke() {
  local p
  if [[ -n $SMOKE_PID ]] && kill -0 "$SMOKE_PID" 2>/dev/null; then
    # = systemctl --user exit: stops the units and their containers
    kill -TERM "$SMOKE_PID"
    timeout 60 sh -c "while kill -0 $SMOKE_PID 2>/dev/null; do sleep 0.05; done" || kill -KILL "$SMOKE_PID"
  fi
  chroot "$R" env PODMAN_IGNORE_CGROUPSV1_WARNING=1 podman pod rm -f -t 0 "$SMOKE_NAME-app" >/dev/null 2>&1 || true
  for p in /sys/fs/cgroup/*/"$SMOKE_NAME.slice"; do
    if [[ -d $p ]]; then find "$p" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  rm -f "$R/run/systemd/private"
  rm -rf "${R:?}$SMOKE_DIR"
  do_umount
}

# A user manager inside the root, in its own cgroup subtree, running a .pod + .container from a busybox
# image imported into the root's store; the pod's port is probed from the host.
smoke() {
  local t0=$EPOCHREALTIME d=$SMOKE_DIR name=$SMOKE_NAME cg port rc=0 t1
  cg=$name.slice/user@0.service
  port=$((20000 + RANDOM % 10000))
  build
  trap cleanup_smoke EXIT
  do_mount
  local inside=(chroot "$R" env PODMAN_IGNORE_CGROUPSV1_WARNING=1 "XDG_RUNTIME_DIR=$d/run"
    "XDG_CONFIG_HOME=$d/cfg" "DBUS_SESSION_BUS_ADDRESS=unix:path=$d/run/bus")
  mkdir -p "$R$d/run" "$R$d/cfg/containers/systemd" "$R$d/cfg/systemd/user"
  chmod 700 "$R$d/run"
  for h in systemd unified; do mkdir -p "/sys/fs/cgroup/$h/$cg"; done
  # busybox image in the root's own store (image tags are per store)
  if ! "${inside[@]}" podman image exists localhost/sparc-test/bb:test; then
    local img=$R$d/bb a
    mkdir -p "$img/bin" "$img/www" "$img/tmp" "$img/etc"
    cp "$R/bin/busybox" "$img/bin/"
    for a in $("$img/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$img/bin/$a"; done
    echo 'root:x:0:0:root:/:/bin/sh' >"$img/etc/passwd"
    echo hello >"$img/www/index.html"
    tar -C "$img" -cf "$R$d/bb.tar" .
    "${inside[@]}" podman import -q "$d/bb.tar" localhost/sparc-test/bb:test >/dev/null
  fi
  printf '[Pod]\nPodName=%s-app\nPublishPort=127.0.0.1:%s:80\n' "$name" "$port" >"$R$d/cfg/containers/systemd/app.pod"
  printf '%s\n' "[Container]" "Image=localhost/sparc-test/bb:test" "Pod=app.pod" "Exec=httpd -f -p 80 -h /www" \
    "RunInit=true" "HealthCmd=wget -q -O /dev/null http://127.0.0.1/" "HealthInterval=2s" "Notify=healthy" \
    >"$R$d/cfg/containers/systemd/web.container"
  # the manager: moves itself into its subtree, then becomes systemd --user (same PID)
  setsid chroot "$R" env PODMAN_IGNORE_CGROUPSV1_WARNING=1 XDG_RUNTIME_DIR="$d/run" XDG_CONFIG_HOME="$d/cfg" \
    sh -c "for h in systemd unified; do echo \$\$ > /sys/fs/cgroup/\$h/$cg/cgroup.procs; done
           exec /lib/systemd/systemd --user" </dev/null >"$R$d/manager.log" 2>&1 &
  SMOKE_PID=$!
  t1=$EPOCHREALTIME
  until "${inside[@]}" systemctl --user is-system-running 2>/dev/null | grep -qE 'running|degraded'; do
    kill -0 "$SMOKE_PID" 2>/dev/null || { cat "$R$d/manager.log"; return 1; }
    sleep 0.05
  done
  echo "  manager ready in $(elapsed "$t1") s: $("${inside[@]}" systemctl --user --version | head -1)"
  # else every quadlet start waits ~90 s for the system's network-online.target
  "${inside[@]}" systemctl --user mask -q podman-user-wait-network-online.service
  # rootful podman schedules health checks through /run/systemd/private: point it at this manager
  ln -sfn "$d/run/systemd/private" "$R/run/systemd/private"
  "${inside[@]}" systemctl --user daemon-reload
  t1=$EPOCHREALTIME
  if "${inside[@]}" timeout 90 systemctl --user start app-pod.service web.service; then
    echo "  .pod + .container (Notify=healthy) started in $(elapsed "$t1") s"
    if busybox wget -q -O - "http://127.0.0.1:$port/" | grep -q hello; then
      echo "  pod answers on 127.0.0.1:$port: OK"
    else
      echo "  pod does not answer on 127.0.0.1:$port" >&2
      rc=1
    fi
  else
    echo "  start failed" >&2
    "${inside[@]}" systemctl --user status --no-pager app-pod.service web.service >&2 || true
    rc=1
  fi
  "${inside[@]}" systemctl --user stop app-pod.service web.service || rc=1
  echo "  smoke total $(elapsed "$t0") s"
  return $rc
}

case ${1:-build} in
  build) build ;;
  mount) do_mount ;;
  umount) do_umount ;;
  status) status ;;
  smoke) smoke ;;
  -h | --help) sed -n '2,17p' "$0" ;;
  *) echo "unknown command: $1 (build|mount|umount|status|smoke)" >&2; exit 2 ;;
esac
