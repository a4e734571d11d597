#!/usr/bin/env bash
# test_bench_smoke.sh -- a short cetcd-bench run against a real etcd 3.4, and
# against cetcd when $CETCD_BIN/cetcd exists and serves.
#
# For each server: start it on free loopback ports with a fresh data dir;
# `cetcd-bench put` (2000 requests, 50 clients over 5 conns, 100 sequential
# 8-byte keys, 256-byte values) must report 2000 ok and 0 errors, and
# `etcdctl` must then count the 100 keys and see 256-byte values; `range`
# runs (linearizable and serializable) and a txn-put run must succeed; so must short
# txn-mixed, watch and watch-latency runs (10 streams x 10 watchers, 50 puts), whose
# JSON must show ok == requests, errors == 0 and, for the watch scenarios, every
# event received in order; --target-leader must find the leader (both servers serve
# Maintenance.Status). lease-keepalive (1000 leases, 5000 keepalives over 50 streams)
# and registry (5 services x 50 instances, TTL 3 s, 5 watchers, 4000 requests
# paced to 2000/s so that background keepalives run) must report
# ok == requests, 0 errors, and keepalives and watch events seen; so must both
# with --duration instead of --total. A dead endpoint must
# show up as counted Unavailable errors and exit status 1. Then TLS: etcd on
# an https URL with a fresh self-signed certificate (openssl CLI); a put run
# with --cacert must succeed, one without must fail certificate verification.
# (TLS is skipped, and says so, when the openssl CLI is missing.) Everything started is
# stopped by pid; the temp dirs are removed.
set -euo pipefail

: "${CETCD_BIN:?CETCD_BIN must point at the build bin directory}"
BENCH=$CETCD_BIN/cetcd-bench
export ETCDCTL_API=3
[ -x "$BENCH" ] || { echo "FAIL: $BENCH is missing"; exit 1; }
command -v etcd >/dev/null || { echo "FAIL: etcd is not installed"; exit 1; }
command -v etcdctl >/dev/null || { echo "FAIL: etcdctl is not installed"; exit 1; }

TMP=$(mktemp -d /tmp/cetcd-bench-smoke.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

USED=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    # below Linux's ephemeral range (32768-60999): no clash with the
    # source ports of outgoing connections, no TCP self-connect
    p=$((10000 + RANDOM % 22000))
    case $USED in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED="$USED$p "
      echo "$p"
      return 0
    fi
  done
  echo "FAIL: no free port" >&2
  exit 1
}

# start NAME BIN [SCHEME [EXTRA FLAGS...]] -> sets EP and PID; returns 1 if
# the server does not serve puts
start() {
  local name=$1 bin=$2 scheme=${3:-http} p q
  shift $(($# < 3 ? $# : 3))
  p=$(free_port)
  q=$(free_port)
  mkdir -p "$TMP/$name"
  "$bin" --name smoke --data-dir "$TMP/$name/data" \
    --listen-client-urls "$scheme://127.0.0.1:$p" --advertise-client-urls "$scheme://127.0.0.1:$p" \
    --listen-peer-urls "http://127.0.0.1:$q" --initial-advertise-peer-urls "http://127.0.0.1:$q" \
    --initial-cluster "smoke=http://127.0.0.1:$q" "$@" >"$TMP/$name/log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  EP="$scheme://127.0.0.1:$p"
  local tls=()
  [ "$scheme" = https ] && tls=(--cacert "$TMP/cert.pem")
  for _ in $(seq 1 150); do
    kill -0 "$PID" 2>/dev/null || return 1
    if timeout 10 etcdctl --endpoints "$EP" "${tls[@]}" --dial-timeout 1s put smoke-ready 1 >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

stop() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

json_num() { sed -n "s/.*\"$1\":\\([-0-9.e+]*\\).*/\\1/p"; }

# expect_ok NAME WHAT JSON [EXTRA FIELD VALUE...]: ok == requests, errors == 0
expect_ok() {
  local name=$1 what=$2 out=$3 req ok errs
  shift 3
  req=$(echo "$out" | json_num requests)
  ok=$(echo "$out" | json_num ok)
  errs=$(echo "$out" | json_num errors)
  [ -n "$req" ] && [ "$req" -gt 0 ] && [ "$ok" = "$req" ] && [ "$errs" = 0 ] ||
    { echo "FAIL($name): $what: requests=$req ok=$ok errors=$errs"; return 1; }
  while [ $# -ge 2 ]; do
    [ "$(echo "$out" | json_num "$1")" = "$2" ] || { echo "FAIL($name): $what: $1 is not $2"; return 1; }
    shift 2
  done
  for f in '"scenario"' '"parameters":{' '"error_distribution":[' '"total_secs"' '"requests_per_sec"' \
    '"latency_secs":{' '"p99.9"' '"bench_cpu_secs"' '"bench_cpu_ms_per_1000"' '"extra":{'; do
    echo "$out" | grep -qF "$f" || { echo "FAIL($name): $what: JSON lacks $f"; return 1; }
  done
}

check_new_scenarios() {
  local name=$1 out
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --conns 2 --clients 10 --format json \
    txn-mixed smoke-ready --total 400 --rw-ratio 1 --key-size 8 --val-size 64 --key-space-size 50) || true
  echo "$out"
  expect_ok "$name" txn-mixed "$out" || return 1
  echo "$out" | grep -qF '"read_latency_secs":{' || { echo "FAIL($name): txn-mixed: no read figures"; return 1; }
  # with --duration the run is bounded by time, not by --total
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --clients 4 --format json \
    txn-mixed "" --total 1000000000 --duration 500ms --key-space-size 20) || true
  expect_ok "$name" "txn-mixed --duration" "$out" || return 1
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --format json \
    watch --streams 10 --watch-per-stream 10 --put-total 50) || true
  echo "$out"
  # 100 watchers of one key, 50 puts: 5000 events
  expect_ok "$name" watch "$out" requests 100 events_expected 5000 events_ok 5000 || return 1
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --format json \
    watch-latency --streams 10 --watchers-per-stream 10 --put-total 50 --put-rate 100 \
    --key-size 8 --val-size 256) || true
  echo "$out"
  expect_ok "$name" watch-latency "$out" requests 5000 puts 50 events_missing 0 || return 1
  # --target-leader: Maintenance.Status names the leader (both servers serve it)
  local rc=0 err="$TMP/leader.err"
  timeout 30 "$BENCH" --endpoints "$EP" --target-leader put --total 10 >/dev/null 2>"$err" || rc=$?
  [ $rc = 0 ] || { echo "FAIL($name): --target-leader failed (rc=$rc):"; cat "$err"; return 1; }
  grep -q "using .*the leader" "$err" || { echo "FAIL($name): --target-leader did not say which"; return 1; }
}

# check_json OUT SCENARIO REQUESTS EXTRA_CONDITION: the compare tool's
# top-level fields are there, every request succeeded, no (background)
# errors, and the condition on "extra" (as e) holds.
check_json() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
out, scenario, n, cond = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
d = json.loads(out)
for k in ("scenario", "parameters", "requests", "ok", "errors", "error_distribution", "total_secs",
          "requests_per_sec", "latency_secs", "bench_cpu_secs", "bench_cpu_ms_per_1000", "extra"):
    assert k in d, "missing " + k
assert d["scenario"] == scenario, d["scenario"]
assert d["requests"] == n and d["ok"] == n and d["errors"] == 0, (d["requests"], d["ok"], d["errors"])
assert d["latency_secs"]["p99"] is not None
e = d["extra"]
assert eval(cond), cond
PY
}

check_server() {
  local name=$1 out ok errs n
  echo "== $name at $EP"
  out=$(timeout 120 "$BENCH" --endpoints "$EP" --conns 5 --clients 50 --format json \
    put --total 2000 --key-size 8 --val-size 256 --key-space-size 100 --sequential-keys) || true
  echo "$out"
  ok=$(echo "$out" | json_num ok)
  errs=$(echo "$out" | json_num errors)
  [ "$ok" = 2000 ] && [ "$errs" = 0 ] || { echo "FAIL($name): put: ok=$ok errors=$errs"; return 1; }

  # 100 bench keys plus smoke-ready, each bench value 256 bytes long.
  n=$(timeout 10 etcdctl --endpoints "$EP" get "" --from-key --keys-only -w json | json_num count) || true
  [ "$n" = 101 ] || { echo "FAIL($name): expected 101 keys, etcdctl counts '$n'"; return 1; }
  n=$(timeout 10 etcdctl --endpoints "$EP" get "" --from-key --print-value-only |
    awk 'length($0) == 256' | wc -l) || true
  [ "$n" = 100 ] || { echo "FAIL($name): expected 100 values of 256 bytes, found $n"; return 1; }

  for c in l s; do
    out=$(timeout 60 "$BENCH" --endpoints "$EP" --conns 2 --clients 10 --format json \
      range smoke-ready --total 500 --consistency $c) || true
    echo "$out"
    ok=$(echo "$out" | json_num ok)
    errs=$(echo "$out" | json_num errors)
    [ "$ok" = 500 ] && [ "$errs" = 0 ] || { echo "FAIL($name): range --consistency $c: ok=$ok errors=$errs"; return 1; }
  done
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --conns 2 --clients 10 --format json \
    txn-put --total 200 --txn-ops 4 --key-space-size 800 --val-size 16) || true
  echo "$out"
  ok=$(echo "$out" | json_num ok)
  errs=$(echo "$out" | json_num errors)
  [ "$ok" = 200 ] && [ "$errs" = 0 ] || { echo "FAIL($name): txn-put: ok=$ok errors=$errs"; return 1; }
  check_new_scenarios "$name" || return 1
  out=$(timeout 120 "$BENCH" --endpoints "$EP" --conns 5 --clients 50 --format json \
    lease-keepalive --leases 1000 --total 5000) || true
  echo "$out"
  check_json "$out" lease-keepalive 5000 "e['leases'] == 1000 and e['grants_per_sec'] > 0" ||
    { echo "FAIL($name): lease-keepalive"; return 1; }
  out=$(timeout 120 "$BENCH" --endpoints "$EP" --conns 5 --clients 50 --rate 2000 --format json \
    registry --services 5 --instances 250 --ttl 3 --watchers 5 --total 4000) || true
  echo "$out"
  check_json "$out" registry 4000 "e['keepalives_sent'] > 0 and e['keepalive']['count'] > 0 and \
e['watch_events_seen'] >= e['watch_events_expected'] > 0 and e['churn_cycles'] > 0 and \
e['discovery_get']['count'] > 0" || { echo "FAIL($name): registry"; return 1; }
  # with --duration the keepalives and the registry's requests run until it ends
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --conns 5 --clients 50 --format json \
    lease-keepalive --leases 1000 --duration 1s) || true
  expect_ok "$name" "lease-keepalive --duration" "$out" || return 1
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --conns 2 --clients 10 --format json \
    registry --services 5 --instances 100 --duration 1s) || true
  expect_ok "$name" "registry --duration" "$out" || return 1
  echo "$out" | grep -qF '"discovery_get":{"count":' || { echo "FAIL($name): registry --duration: no per-op figures"; return 1; }
  # The text report carries etcd's summary shape.
  out=$(timeout 60 "$BENCH" --endpoints "$EP" put --total 200)
  for want in "Summary:" "Requests/sec:" "Response time histogram:" "Latency distribution:" "99% in" "Bench CPU:"; do
    echo "$out" | grep -qF "$want" || { echo "FAIL($name): text report lacks '$want'"; return 1; }
  done
  echo "ok: $name"
}

# Errors are counted and shown, never hidden: nothing listens on this port.
dead=$(free_port)
rc=0
out=$(timeout 30 "$BENCH" --endpoints "127.0.0.1:$dead" put --total 5) || rc=$?
echo "$out" | grep -q "\[5\].*code = Unavailable" && [ $rc = 1 ] ||
  { echo "FAIL: a dead endpoint must give 5 Unavailable errors and exit 1 (rc=$rc):"; echo "$out"; exit 1; }
echo "ok: dead endpoint reported as errors"

start etcd etcd || { echo "FAIL: etcd did not start"; tail -n 20 "$TMP/etcd/log"; exit 1; }
check_server etcd || { tail -n 20 "$TMP/etcd/log"; exit 1; }
stop

if command -v openssl >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 || { echo "FAIL: openssl req"; exit 1; }
  start etcd-tls etcd https --cert-file "$TMP/cert.pem" --key-file "$TMP/key.pem" ||
    { echo "FAIL: etcd with TLS did not start"; tail -n 20 "$TMP/etcd-tls/log"; exit 1; }
  echo "== etcd-tls at $EP"
  out=$(timeout 60 "$BENCH" --endpoints "$EP" --cacert "$TMP/cert.pem" --conns 3 --clients 30 \
    --format json put --total 600 --val-size 256) || true
  echo "$out"
  [ "$(echo "$out" | json_num ok)" = 600 ] || { echo "FAIL(etcd-tls): put over TLS"; exit 1; }
  rc=0
  out=$(timeout 30 "$BENCH" --endpoints "$EP" put --total 2) || rc=$?
  echo "$out" | grep -q "certificate verify failed" && [ $rc = 1 ] ||
    { echo "FAIL(etcd-tls): an untrusted certificate must fail (rc=$rc):"; echo "$out"; exit 1; }
  stop
  echo "ok: etcd-tls"
else
  echo "NOTE: no openssl CLI; TLS not covered."
fi

if [ -x "$CETCD_BIN/cetcd" ]; then
  if start cetcd "$CETCD_BIN/cetcd"; then
    check_server cetcd || { tail -n 20 "$TMP/cetcd/log"; exit 1; }
    stop
  else
    stop
    echo "NOTE: $CETCD_BIN/cetcd exists but does not serve puts yet; this run covered etcd only."
    tail -n 5 "$TMP/cetcd/log" || true
  fi
else
  echo "NOTE: $CETCD_BIN/cetcd is not built; this run covered etcd only."
fi
echo "PASS"
