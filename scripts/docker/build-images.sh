#!/usr/bin/env bash
# Build the base images reapi's DockerRunner runs actions in, from Debian packages only (no
# container registry is needed or used), and `docker import` them into the engine at $DOCKER_HOST.
#
#   scripts/docker/build-images.sh [--force] [busybox] [debian]     (default: busybox)
#
#   busybox  reapi-busybox:latest (~4 MB): Debian's busybox-static with its applets in /bin, plus
#            bash-static as /bin/bash so Bazel's `/bin/bash -c` genrules run in it.
#   debian   reapi-debian:bookworm (~200 MB): `debootstrap --variant=minbase` of the suite apt
#            uses, from the mirror apt is configured with (~30-60 s).
#   reapi    reapi:latest: reapi itself (for deploy/): the same minbase plus bubblewrap, prometheus,
#            redis-server, busybox-static and strace, gcc and g++ (what the actions of the test
#            workspace run on its workers: a worker image holds the tools its actions use), this
#            machine's node binary and this checkout with its node_modules under /opt/reapi;
#            entrypoint `reapi`.
# Each image has /etc/reapi-image naming it (a marker tests look for) and ENV PATH. Images
# already present are kept unless --force. Actions then ask for one with the platform property
#   container-image=docker://reapi-busybox:latest
# Needs root (chroot, debootstrap), docker (CLI), busybox-static, bash-static and debootstrap:
# scripts/bootstrap.sh --test installs them. Start a daemon first: scripts/docker/start-dockerd.sh.
set -euo pipefail

force=0
images=()
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    busybox|debian|reapi) images+=("$a") ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-images: unknown argument $a" >&2; exit 2 ;;
  esac
done
(( ${#images[@]} )) || images=(busybox)
command -v docker >/dev/null || { echo "build-images: docker CLI not found (apt-get install docker.io)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/reapi-images-XXXXXX")
trap 'rm -rf "$work"' EXIT

present() { docker image inspect "$1" >/dev/null 2>&1; }

# True, after saying so, when image $1 is already in the engine and --force was not given.
kept() {
  (( !force )) && present "$1" || return 1
  echo "build-images: $1 already present" >&2
}

# Minimal account files: root, and nobody (65534), the uid actions run as by default.
write_etc() {
  local rootfs=$1 name=$2
  mkdir -p "$rootfs/etc"
  [[ -e $rootfs/etc/passwd ]] || printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  [[ -e $rootfs/etc/group ]] || printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  echo "$name" >"$rootfs/etc/reapi-image"
}

# import ROOTFS NAME PATH [docker import options...]
import() {
  local rootfs=$1 name=$2 path=$3
  shift 3
  tar --numeric-owner -C "$rootfs" -c . | docker import -c "ENV PATH=$path" "$@" -m "reapi $name, built by scripts/docker/build-images.sh" - "$name" >/dev/null
  echo "build-images: imported $name ($(docker image inspect -f '{{.Size}}' "$name") bytes)" >&2
}

build_busybox() {
  local name=reapi-busybox:latest
  kept "$name" && return
  [[ -x /bin/busybox ]] || { echo "build-images: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
  [[ -x /bin/bash-static ]] || { echo "build-images: /bin/bash-static missing (apt-get install bash-static)" >&2; exit 1; }
  # busybox must be the static build: it runs in an image without a libc.
  if file -L /bin/busybox 2>/dev/null | grep -q dynamically; then echo "build-images: /bin/busybox is not static (apt-get install busybox-static)" >&2; exit 1; fi
  local r="$work/busybox"
  mkdir -p "$r/bin" "$r/tmp" "$r/root" "$r/usr"
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  cp /bin/bash-static "$r/bin/bash"
  "$r/bin/busybox" --install -s "$r/bin" 2>/dev/null || chroot "$r" /bin/busybox --install -s /bin
  # busybox --install links to the host path of the binary; make every applet a relative link.
  for l in "$r"/bin/*; do
    [[ -L $l ]] && ln -sfn busybox "$l"
  done
  ln -s ../bin "$r/usr/bin"
  ln -s ../bin "$r/usr/sbin"
  ln -s bin "$r/sbin"
  write_etc "$r" "$name"
  import "$r" "$name" /bin
}

mirror() {
  # The first Debian mirror apt is configured with (deb822 sources or sources.list).
  local m
  m=$(grep -hs -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [[ -n $m ]] || m=$(grep -hs -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

# The Debian suite apt on this machine uses.
host_suite() { (. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}"); }

DEBIAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# minbase ROOTFS [PACKAGES]: `debootstrap --variant=minbase` of the host's suite into ROOTFS, with
# the comma-separated PACKAGES added, and apt's download caches removed.
minbase() {
  local r=$1 include=${2:-} suite m log
  command -v debootstrap >/dev/null || { echo "build-images: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
  suite=$(host_suite)
  m=$(mirror)
  log="$work/debootstrap-$(basename "$r").log"
  echo "build-images: debootstrap --variant=minbase $suite${include:+ with $include} from $m" >&2
  debootstrap --variant=minbase ${include:+"--include=$include"} "$suite" "$r" "$m" >"$log" 2>&1 || {
    tail -n 20 "$log" >&2; exit 1; }
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
}

build_debian() {
  local name r="$work/debian"
  name="reapi-debian:$(host_suite)"
  kept "$name" && return
  minbase "$r"
  write_etc "$r" "$name"
  import "$r" "$name" "$DEBIAN_PATH"
  docker tag "$name" reapi-debian:latest
}

build_reapi() {
  local name=reapi:latest r="$work/reapi" repo
  kept "$name" && return
  repo=$(cd "$(dirname "$0")/../.." && pwd)
  [[ -d $repo/node_modules ]] || { echo "build-images: $repo/node_modules missing (npm install)" >&2; exit 1; }
  minbase "$r" bubblewrap,redis-server,busybox-static,strace,ca-certificates,procps,prometheus,gcc,g++
  install -m 0755 "$(readlink -f "$(command -v node)")" "$r/usr/local/bin/node"
  mkdir -p "$r/opt/reapi"
  # The checkout as committed, plus its installed dependencies.
  git -C "$repo" archive HEAD | tar -x -C "$r/opt/reapi"
  cp -a "$repo/node_modules" "$r/opt/reapi/node_modules"
  ln -s /opt/reapi/bin/reapi.mjs "$r/usr/local/bin/reapi"
  mkdir -p "$r/data" "$r/work"
  write_etc "$r" "$name"
  import "$r" "$name" "$DEBIAN_PATH" \
    -c 'WORKDIR /opt/reapi' -c 'ENTRYPOINT ["/usr/local/bin/node", "/opt/reapi/bin/reapi.mjs"]'
}

for i in "${images[@]}"; do "build_$i"; done
