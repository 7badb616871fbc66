#!/usr/bin/env bash
# Installs the Debian packages RaftKV needs to build and test, and nothing
# else. Idempotent and non-interactive: a package already present is left
# alone, so a second run does nothing and needs no network.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev
  librocksdb-dev libleveldb-dev liblmdb-dev
  libprotobuf-c-dev protobuf-c-compiler
  libuv1-dev liblz4-dev libzstd-dev libxxhash-dev
  libcmocka-dev libedit-dev libmicrohttpd-dev
  redis-tools redis-server python3 procps iproute2
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# redis-server's package starts a system service on port 6379; the tests
# start their own instances on other ports and need none running.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
echo "deps: done"
