#!/usr/bin/env bash
# test_bench_compare.sh -- `cetcd-bench compare`, cetcd against itself (A/A).
#
# Two cetcd server commands, one round, two tiny scenarios (put and a
# serializable range, whose key compare must put first) and one scenario
# that no build of cetcd-bench knows. Asserts: exit status 3 (report
# written, not everything measured); report.md has both measured rows with
# ratios and the unknown one as failed with its reason; results.jsonl has 4
# measured runs with ok == requests, and 2 unmeasured ones; the SVG is
# well-formed XML with an A and a B bar per measured scenario; every server
# pid compare printed is gone afterwards.
set -euo pipefail

: "${CETCD_BIN:?CETCD_BIN must point at the build bin directory}"
BENCH=$CETCD_BIN/cetcd-bench
CETCD=$CETCD_BIN/cetcd
[ -x "$BENCH" ] || { echo "FAIL: $BENCH is missing"; exit 1; }
[ -x "$CETCD" ] || { echo "FAIL: $CETCD is missing"; exit 1; }

TMP=$(mktemp -d /tmp/cetcd-compare-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/out

rc=0
timeout 300 "$BENCH" compare --a-cmd "$CETCD" --b-cmd "$CETCD" --rounds 1 --out "$OUT" \
  --scenario "put 5c=--conns 2 --clients 5 put --total 200 --key-size 8 --val-size 256" \
  --scenario "range-s 5c=--conns 2 --clients 5 range bench-range-key --consistency s --total 200" \
  --scenario "bogus=no-such-scenario --total 10" >"$TMP/stdout" 2>&1 || rc=$?
cat "$TMP/stdout"
[ $rc = 3 ] || { echo "FAIL: exit status $rc, want 3 (report written, one scenario failed)"; exit 1; }

# Every server compare started (and printed) is gone.
pids=$(sed -n 's/.*: pid \([0-9]*\) on http.*/\1/p' "$TMP/stdout")
[ "$(echo "$pids" | wc -w)" = 6 ] || { echo "FAIL: expected 6 server starts, got: $pids"; exit 1; }
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then
    echo "FAIL: server pid $p is still running"
    exit 1
  fi
done

python3 - "$OUT" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
out = sys.argv[1]

md = open(f"{out}/report.md").read()
rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]]
        for l in md.splitlines() if l.startswith("| ") and not l.startswith("| scenario")}
for label in ("put 5c", "range-s 5c"):
    r = rows.get(label)
    assert r, f"report.md lacks the row {label!r}:\n{md}"
    # ratio columns: throughput, p99, RSS, each like "1.03x"
    for col in (2, 5, 8):
        assert r[col].endswith("x"), f"{label}: column {col} is {r[col]!r}, not a ratio"
    assert r[9] == "0/0", f"{label}: errors {r[9]!r}"
assert rows.get("bogus", [""])[0] == "failed", f"bogus row: {rows.get('bogus')}"
assert "bogus: cetcd (A) measured in 0 of 1 rounds: cetcd-bench refused" in md, md
for want in ("Machine:", "Method:", "fsync", "report.svg", "cetcd Version"):
    assert want in md, f"report.md lacks {want!r}"

runs = [json.loads(l) for l in open(f"{out}/results.jsonl")]
measured = [r for r in runs if r["measured"]]
assert len(runs) == 6 and len(measured) == 4, f"{len(runs)} runs, {len(measured)} measured"
for r in measured:
    res = r["result"]
    assert res["requests"] == 200 and res["ok"] == 200 and res["errors"] == 0, r
    assert res["server"]["peak_rss_kb"] > 0, r
assert {(r["label"], r["side"]) for r in measured} == {
    (l, s) for l in ("put 5c", "range-s 5c") for s in "AB"}

svg = ET.parse(f"{out}/report.svg").getroot()
ns = "{http://www.w3.org/2000/svg}"
groups = [g for g in svg.iter(ns + "g") if g.get("class") == "scenario"]
assert [g.get("data-label") for g in groups] == ["put 5c", "range-s 5c", "bogus"], groups
for g in groups[:2]:
    bars = [r.get("class") for r in g.iter(ns + "rect")]
    assert bars == ["bar bar-a", "bar bar-b"], f"{g.get('data-label')}: {bars}"
assert not [r for r in groups[2].iter(ns + "rect") if "bar" in (r.get("class") or "")], \
    "the failed scenario has bars"
print("ok: report.md, results.jsonl, report.svg")
EOF
echo PASS
