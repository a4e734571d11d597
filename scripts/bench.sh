#!/usr/bin/env bash
# scripts/bench.sh -- `make bench`: the standard put comparison, cetcd
# against etcd 3.4, measured by the same client (cetcd-bench) in one run.
#
# Each round starts the server fresh (new temp data dir, free loopback
# ports), waits until it serves a put, runs the scenario with
# --server-pid so the server's peak RSS (VmHWM) and CPU are read from /proc,
# and stops the server by pid. Rounds alternate A B A B so that drift of
# the machine (page cache, thermal, neighbours) hits both alike. Durability
# is the same for both: etcd fsyncs its WAL before acknowledging by default,
# and cetcd does the same with the same flags.
#
# Exit status: 0 when both were measured, 3 when only etcd could be (cetcd
# missing or not serving), 1 on any other failure.
#
# Environment (defaults in brackets):
#   BUILD [build]  ETCD [etcd]  CETCD [$BUILD/bin/cetcd]  ROUNDS [2]  THREADS [1]
#   BENCH_OUT [$BUILD/bench-report.md]
#   SCENARIOS [default]: `default` is the put comparison below; `standard`
#     runs the unary rows of issue 6's standard comparison (put at 1, 100
#     and 1000 clients, linearizable and serializable range at 1 and 1000
#     clients, txn-put at 100 clients).
#   For the default put: TOTAL [100000] CLIENTS [1000] CONNS [100]
#     KEY_SIZE [8] VAL_SIZE [256]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
ETCD=${ETCD:-etcd}
ROUNDS=${ROUNDS:-2}
TOTAL=${TOTAL:-100000}
CLIENTS=${CLIENTS:-1000}
CONNS=${CONNS:-100}
KEY_SIZE=${KEY_SIZE:-8}
VAL_SIZE=${VAL_SIZE:-256}
THREADS=${THREADS:-1}
BENCH=$BUILD/bin/cetcd-bench
CETCD=${CETCD:-$BUILD/bin/cetcd}
BENCH_OUT=${BENCH_OUT:-$BUILD/bench-report.md}

die() { echo "bench.sh: $*" >&2; exit 1; }

[ -x "$BENCH" ] || die "$BENCH is missing: build first (make build)"
command -v "$ETCD" >/dev/null || die "etcd ($ETCD) is not installed"

TMP=$(mktemp -d /tmp/cetcd-bench.XXXXXX)
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nothing listens on (and not handed out twice by us).
USED_PORTS=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    # below Linux's ephemeral range (32768-60999): no clash with the
    # source ports of outgoing connections, no TCP self-connect
    p=$((10000 + RANDOM % 22000))
    case $USED_PORTS in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  die "no free loopback port found"
}

# start_server NAME BIN -> sets SERVER_PID and SERVER_EP; 1 if it does not serve
start_server() {
  local name=$1 bin=$2 dir="$TMP/$1.$RANDOM" p q
  p=$(free_port)
  q=$(free_port)
  mkdir -p "$dir"
  "$bin" --name bench --data-dir "$dir/data" \
    --listen-client-urls "http://127.0.0.1:$p" --advertise-client-urls "http://127.0.0.1:$p" \
    --listen-peer-urls "http://127.0.0.1:$q" --initial-advertise-peer-urls "http://127.0.0.1:$q" \
    --initial-cluster "bench=http://127.0.0.1:$q" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_EP="http://127.0.0.1:$p"
  SERVER_LOG="$dir/server.log"
  for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      local rc=0
      wait "$SERVER_PID" || rc=$?
      echo "bench.sh: $name ($bin) exited during start with status $rc; last lines of its log:" >&2
      tail -n 20 "$SERVER_LOG" >&2
      SERVER_PID=
      return 1
    fi
    if "$BENCH" --endpoints "$SERVER_EP" put --total 1 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "bench.sh: $name does not serve puts on $SERVER_EP after 20 s; last lines of its log:" >&2
  tail -n 20 "$SERVER_LOG" >&2
  stop_server
  return 1
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }

json_num() { sed -n "s/.*\"$1\":\\([-0-9.e+]*\\).*/\\1/p"; }

# The scenarios: "label|cetcd-bench arguments". The default is the put
# comparison the project is judged by; SCENARIOS=standard runs the unary
# rows of issue 6's standard comparison.
RANGE_KEY=bench-range-key
default_scenarios() {
  echo "put ${CLIENTS}c/${CONNS}x|--conns $CONNS --clients $CLIENTS put --total $TOTAL --key-size $KEY_SIZE --val-size $VAL_SIZE"
}
standard_scenarios() {
  echo "put 1c/1x|--conns 1 --clients 1 put --total 10000 --key-size 8 --val-size 256"
  echo "put 100c/10x|--conns 10 --clients 100 put --total 100000 --key-size 8 --val-size 256"
  echo "put 1000c/100x|--conns 100 --clients 1000 put --total 100000 --key-size 8 --val-size 256"
  echo "range-l 1c/1x|--conns 1 --clients 1 range $RANGE_KEY --consistency l --total 10000"
  echo "range-l 1000c/100x|--conns 100 --clients 1000 range $RANGE_KEY --consistency l --total 100000"
  echo "range-s 1c/1x|--conns 1 --clients 1 range $RANGE_KEY --consistency s --total 10000"
  echo "range-s 1000c/100x|--conns 100 --clients 1000 range $RANGE_KEY --consistency s --total 100000"
  echo "txn-put 100c/10x|--conns 10 --clients 100 txn-put --total 50000 --key-size 8 --val-size 256 --key-space-size 1000000"
}

# run_round SCENARIO NAME BIN ARGS -> appends "name rps p99 hwm_kb errors" to
# $TMP/rows.<scenario index>
run_round() {
  local idx=$1 name=$2 bin=$3 args=$4 out
  start_server "$name" "$bin" || return 1
  case $args in
  *" range $RANGE_KEY "*)
    # something to read: one key with a 256-byte value
    ETCDCTL_API=3 etcdctl --endpoints "$SERVER_EP" put "$RANGE_KEY" "$(printf '%256s' | tr ' ' v)" \
      >/dev/null || { stop_server; echo "bench.sh: etcdctl put failed on $name" >&2; return 1; }
    ;;
  esac
  # shellcheck disable=SC2086 # args is a word list by design
  out=$("$BENCH" --endpoints "$SERVER_EP" --threads "$THREADS" --server-pid "$SERVER_PID" \
    --format json $args) || true
  stop_server
  [ -n "$out" ] || { echo "bench.sh: cetcd-bench printed nothing for $name" >&2; return 1; }
  echo "$out" >>"$BUILD/bench-results.jsonl"
  local rps p99 hwm errs scpu bcpu
  rps=$(echo "$out" | json_num requests_per_sec)
  p99=$(echo "$out" | json_num p99)
  hwm=$(echo "$out" | json_num peak_rss_kb)
  errs=$(echo "$out" | json_num errors)
  scpu=$(echo "$out" | json_num cpu_secs)
  bcpu=$(echo "$out" | json_num bench_cpu_ms_per_1000)
  # null (too few samples, or no successes) or unreadable -> 0 / -1
  rps=${rps:-0} p99=${p99:-0} hwm=${hwm:--1} errs=${errs:-0} scpu=${scpu:--1} bcpu=${bcpu:-0}
  printf '  %-6s %12.1f req/s  p99 %8.2f ms  peak RSS %8.1f MiB  errors %s  server CPU %.2f s  bench CPU %.2f ms/1000 req\n' \
    "$name" "$rps" "$(calc "$p99*1000")" "$(calc "$hwm/1024")" "$errs" "$scpu" "$bcpu"
  if [ "$errs" != "0" ]; then
    echo "$out" | sed -n 's/.*"error_distribution":\(\[[^]]*\]\).*/    errors: \1/p'
  fi
  echo "$name $rps $p99 $hwm $errs" >>"$TMP/rows.$idx"
}

have_cetcd=1
if [ ! -x "$CETCD" ]; then
  echo "bench.sh: $CETCD does not exist (the server is not built yet): measuring etcd only."
  have_cetcd=0
fi

case ${SCENARIOS:-default} in
default) default_scenarios >"$TMP/scenarios" ;;
standard) standard_scenarios >"$TMP/scenarios" ;;
*) die "SCENARIOS must be default or standard" ;;
esac

echo "machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg); etcd: $("$ETCD" --version | head -n 1)"
echo "each scenario: $ROUNDS rounds, etcd and cetcd alternating, a fresh server per round; 8 B keys, 256 B values unless said"
: >"$BUILD/bench-results.jsonl"
idx=0
while IFS='|' read -r label args; do
  idx=$((idx + 1))
  echo "$label  (cetcd-bench $args)"
  : >"$TMP/rows.$idx"
  for r in $(seq 1 "$ROUNDS"); do
    echo " round $r:"
    run_round "$idx" etcd "$ETCD" "$args" || die "etcd round $r of '$label' failed"
    if [ $have_cetcd = 1 ] && ! run_round "$idx" cetcd "$CETCD" "$args"; then
      echo "bench.sh: cetcd could not be measured; continuing with etcd only."
      have_cetcd=0
    fi
  done
done <"$TMP/scenarios"

# mean throughput, mean p99, max peak RSS, errors, rounds, and the
# throughput's spread (min-max) of one server in one scenario
summary() {
  awk -v n="$1" '$1 == n { k++; rps += $2; p99 += $3; if ($4 > hwm) hwm = $4; err += $5
      if (k == 1 || $2 < lo) lo = $2; if ($2 > hi) hi = $2 }
    END { if (k) printf "%.1f %.6f %d %d %d %.0f-%.0f\n", rps / k, p99 / k, hwm, err, k, lo, hi
          else print "0 0 0 0 0 -" }' "$2"
}
ratio() { awk "BEGIN { if ($2 > 0) printf \"%.2fx\", $1 / $2; else printf \"-\" }"; }
{
  echo "| scenario | etcd req/s | cetcd req/s | ratio | etcd p99 ms | cetcd p99 ms | ratio | etcd peak RSS MiB | cetcd peak RSS MiB | ratio | errors etcd/cetcd |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  idx=0
  while IFS='|' read -r label _; do
    idx=$((idx + 1))
    read -r e_rps e_p99 e_hwm e_err _ e_spread <<<"$(summary etcd "$TMP/rows.$idx")"
    if [ $have_cetcd = 1 ]; then
      read -r c_rps c_p99 c_hwm c_err _ c_spread <<<"$(summary cetcd "$TMP/rows.$idx")"
      printf '| %s | %.0f (%s) | %.0f (%s) | %s | %.2f | %.2f | %s | %.1f | %.1f | %s | %d/%d |\n' "$label" \
        "$e_rps" "$e_spread" "$c_rps" "$c_spread" "$(ratio "$c_rps" "$e_rps")" "$(calc "$e_p99*1000")" "$(calc "$c_p99*1000")" \
        "$(ratio "$c_p99" "$e_p99")" "$(calc "$e_hwm/1024")" "$(calc "$c_hwm/1024")" \
        "$(ratio "$c_hwm" "$e_hwm")" "$e_err" "$c_err"
    else
      printf '| %s | %.0f (%s) | not measured | | %.2f | | | %.1f | | | %d/- |\n' "$label" \
        "$e_rps" "$e_spread" "$(calc "$e_p99*1000")" "$(calc "$e_hwm/1024")" "$e_err"
    fi
  done <"$TMP/scenarios"
  echo
  echo "Means over $ROUNDS rounds, with the throughput's min-max in parentheses; peak RSS is"
  echo "the largest VmHWM; ratios are cetcd / etcd."
  echo "Machine: $(nproc) cores, $(uname -sr); load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
} | tee "$BENCH_OUT"
echo "report: $BENCH_OUT; raw results: $BUILD/bench-results.jsonl"
if [ $have_cetcd = 0 ]; then
  echo "bench.sh: comparison incomplete: cetcd was not measured." >&2
  exit 3
fi
