#!/usr/bin/env bash
# Start a Docker daemon for reapi's DockerRunner on a machine without systemd (or where the system
# daemon is not wanted): overlay2 storage, no bridge network, no iptables rules. Idempotent: when
# the daemon of this socket already answers, it is left alone.
#
#   scripts/docker/start-dockerd.sh [--root DIR] [--socket PATH] [--storage-driver overlay2]
#   scripts/docker/start-dockerd.sh --stop [--root DIR]
#
# Defaults: --root /var/lib/reapi-docker, --socket /var/run/docker.sock (so the docker CLI finds it
# without DOCKER_HOST). The daemon's data is under ROOT/data, its state under ROOT/exec (containerd
# included), its log in ROOT/dockerd.log and its pid in ROOT/dockerd.pid. Prints the DOCKER_HOST
# to use, e.g.  export DOCKER_HOST=unix:///var/run/docker.sock
# Then build the images actions run in: scripts/docker/build-images.sh (no registry is needed).
#
# Needs root and Debian's docker.io (scripts/bootstrap.sh --test installs it). overlay2 needs the
# data root on a filesystem that supports it as an upper layer (ext4, xfs; not overlayfs or tmpfs
# on old kernels): pass --storage-driver vfs only as a last resort, it costs seconds per container.
set -euo pipefail

root=/var/lib/reapi-docker
socket=/var/run/docker.sock
driver=overlay2
stop=0
while (( $# )); do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --socket) socket=$2; shift 2 ;;
    --storage-driver) driver=$2; shift 2 ;;
    --stop) stop=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start-dockerd: unknown argument $1" >&2; exit 2 ;;
  esac
done

pidfile="$root/dockerd.pid"
alive() { [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
answers() { curl -fsS --max-time 2 --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; }

if (( stop )); then
  if alive; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "start-dockerd: stopped dockerd $pid" >&2
    # Mounts a daemon can leave behind (e.g. its default netns), so that ROOT can be removed.
    awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  else
    echo "start-dockerd: no dockerd running for $root" >&2
  fi
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then echo "start-dockerd: needs root" >&2; exit 1; fi
command -v dockerd >/dev/null || { echo "start-dockerd: dockerd not found (apt-get install docker.io)" >&2; exit 1; }
command -v curl >/dev/null || { echo "start-dockerd: curl not found (apt-get install curl)" >&2; exit 1; }

if alive && answers; then
  echo "start-dockerd: dockerd $(cat "$pidfile") already answers on $socket" >&2
  echo "export DOCKER_HOST=unix://$socket"
  exit 0
fi

mkdir -p "$root/data" "$root/exec" "$(dirname "$socket")"
# A stale socket of a dead daemon would make dockerd refuse to start.
alive || rm -f "$socket" "$pidfile"
setsid dockerd \
  --data-root "$root/data" --exec-root "$root/exec" --pidfile "$pidfile" \
  -H "unix://$socket" --storage-driver "$driver" \
  --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false --bridge=none \
  >>"$root/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 1 300); do
  answers && break
  if ! kill -0 $! 2>/dev/null; then
    echo "start-dockerd: dockerd exited; last lines of $root/dockerd.log:" >&2
    tail -n 20 "$root/dockerd.log" >&2
    exit 1
  fi
  sleep 0.1
done
answers || { echo "start-dockerd: dockerd did not answer on $socket within 30 s (see $root/dockerd.log)" >&2; exit 1; }
echo "start-dockerd: dockerd $(cat "$pidfile") ready on $socket (storage $driver, data $root/data)" >&2
echo "export DOCKER_HOST=unix://$socket"
