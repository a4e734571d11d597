#!/usr/bin/env bash
# Installs the Debian packages cetcd builds and tests with, if any is missing.
# Idempotent and quiet when everything is present; uses sudo when not root.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  liburcu-dev libck-dev libnng-dev libleveldb-dev libcunit1-dev
  libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler libssl-dev libjansson-dev
  # the oracle for differential tests, and client libraries for integration tests
  etcd-server etcd-client python3 python3-etcd3
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
