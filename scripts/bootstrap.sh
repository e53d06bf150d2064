#!/usr/bin/env bash
# Install what reapi needs and is missing, so `npm start` and `npm test` work on a fresh clone.
#   scripts/bootstrap.sh          npm packages and the sandbox tools `reapi serve` uses
#   scripts/bootstrap.sh --test   also what the tests need (Bazel, Redis)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

if [[ ! -d node_modules/@grpc/grpc-js || ! -d node_modules/tsx || package-lock.json -nt node_modules/.package-lock.json ]]; then
  # `npm install` rather than `npm ci`: npm 11 wrongly reports lockfiles with optional
  # platform packages (msgpackr-extract's) as out of sync; the lockfile still pins versions.
  echo "bootstrap: installing npm packages" >&2
  npm install --no-audit --no-fund >&2
fi

# The compiled JavaScript the `reapi` command runs (scripts/build.sh): when missing or older than a source.
if ! node --input-type=module -e "const m = await import('./bin/launch.mjs'); process.exit(m.compiledIsCurrent() ? 0 : 1)"; then
  bash scripts/build.sh
fi

# Debian packages: command -> package.
declare -A need=([bwrap]=bubblewrap [setpriv]=util-linux [prlimit]=util-linux)
# Verification variations: a second locale, zone data, libfaketime and disorderfs (opt-in).
need+=([localedef]=locales [disorderfs]=disorderfs [fusermount]=fuse3)
# Cargo build scripts: strace explains what the sandbox refused (which file, tool or socket).
need+=([strace]=strace)
if (( want_test )); then
  need+=([bazel]=bazel-bootstrap [redis-server]=redis-server [zstd]=zstd [gcc]=gcc [g++]=g++)
  # promtool and prometheus: the observability test checks deploy/prometheus and scrapes reapi.
  need+=([promtool]=prometheus [prometheus]=prometheus)
  # Docker runner tests: a dockerd they start themselves (scripts/docker/start-dockerd.sh) and the
  # images scripts/docker/build-images.sh makes from busybox-static, bash-static and debootstrap.
  need+=([dockerd]=docker.io [curl]=curl [bash-static]=bash-static [debootstrap]=debootstrap)
  # deploy/compose is tested with Debian's docker-compose.
  need+=([docker-compose]=docker-compose)
  # TLS and mTLS tests make their own CA and certificates at run time; the Kubernetes manifests
  # are rendered with kubectl's kustomize.
  need+=([openssl]=openssl [kubectl]=kubernetes-client)
fi
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# Packages checked by name rather than by a command on PATH:
# - the wrapper bind-mounted into containers must be a static busybox (Debian's `busybox` is not);
# - Cargo build scripts and wasm macros are tested with Debian's own Rust (a rustup toolchain
#   earlier on PATH does not count): rustc, cargo, the wasm32 std and its linker, and the crate
#   sources under /usr/share/cargo/registry that the offline test crates depend on.
if (( want_test )); then
  for pkg in busybox-static rustc cargo libstd-rust-dev-wasm32 lld-14 pkg-config zlib1g-dev \
    librust-syn-dev librust-quote-dev librust-proc-macro2-dev librust-libc-dev librust-autocfg-dev \
    librust-num-traits-dev librust-typenum-dev librust-libz-sys-dev librust-serde-dev \
    librust-crc32fast-dev librust-anyhow-dev librust-serde-derive-dev librust-serde-test-dev librust-serde-json-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if (( ${#missing[@]} )); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [[ $(id -u) -eq 0 ]]; then
  [[ -e /usr/share/zoneinfo/Pacific/Kiritimati ]] || { apt-get install -y -qq tzdata >&2 || true; }
  [[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 || $(uname -m) != x86_64 ]] || apt-get install -y -qq libfaketime >&2 || true
  # The second locale the verifier switches to.
  locale -a 2>/dev/null | grep -qi '^en_US.utf8$' || localedef -i en_US -f UTF-8 en_US.UTF-8 >&2 || true
fi
