#!/usr/bin/env bash
# scripts/lease-bench.sh -- leases, etcd 3.4 against cetcd, one run, the same
# client (bench/lease_load.c, built here against the build directory).
#
# For each server (etcd first, then cetcd; ROUNDS times, alternating): a
# fresh data dir on free loopback ports, then lease-load: grant LEASES
# leases, keep them alive over STREAMS streams on CONNS connections
# (saturated, then paced at LEASES/10 per second = every lease once per
# TTL/3 of a 30 s TTL) for SECONDS each, revoke them all; server CPU and RSS
# from /proc/<pid>. The server is stopped by pid.
#
# Environment [defaults]: BUILD [build] ETCD [etcd] LEASES [100000] CONNS [4]
#   STREAMS [16] KA_SECONDS [5] WINDOW [2000] ROUNDS [1]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
ETCD=${ETCD:-etcd}
LEASES=${LEASES:-100000} CONNS=${CONNS:-4} STREAMS=${STREAMS:-16}
SECONDS_EACH=${KA_SECONDS:-5} WINDOW=${WINDOW:-2000} ROUNDS=${ROUNDS:-1}
LOAD=$BUILD/lease-load

cc -O2 -I"$ROOT" -I"$BUILD/gen" "$ROOT/bench/lease_load.c" "$BUILD/libcetcd_client.a" \
  "$BUILD/libcetcd_proto.a" -lprotobuf-c -lnghttp2 -lssl -lcrypto -lm -o "$LOAD"

TMP=$(mktemp -d /tmp/cetcd-lease-bench.XXXXXX)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

run() { # run NAME BINARY
  local cp pp d
  cp=$(free_port); pp=$(free_port)
  d=$TMP/$1.$RANDOM
  "$2" --data-dir "$d" --listen-client-urls "http://127.0.0.1:$cp" \
    --advertise-client-urls "http://127.0.0.1:$cp" --listen-peer-urls "http://127.0.0.1:$pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "default=http://127.0.0.1:$pp" >"$d.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do
    etcdctl --endpoints="127.0.0.1:$cp" get probe >/dev/null 2>&1 && break
    sleep 0.05
  done
  echo "== $1"
  "$LOAD" "127.0.0.1:$cp" "$PID" "$LEASES" "$CONNS" "$STREAMS" "$SECONDS_EACH" "$WINDOW"
  kill "$PID"; wait "$PID" || true; PID=
  rm -rf "$d" "$d.log"
}

for _ in $(seq "$ROUNDS"); do
  run etcd "$(command -v "$ETCD")"
  run cetcd "$BUILD/bin/cetcd"
done
