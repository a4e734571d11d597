#!/usr/bin/env bash
# scripts/bench-readme.sh REPORT_DIR [TREE] -- `make bench-readme`: puts the
# report `make bench` wrote (REPORT_DIR/report.md and report.svg, from
# `cetcd-bench compare`) into TREE/README.md, between the lines
# `<!-- bench:begin -->` and `<!-- bench:end -->`, and the chart into
# TREE/docs/bench/report.svg, so that the README's performance section is
# the tool's output. TREE defaults to this checkout. The report's own title
# line is dropped (the README has its heading) and its chart link is
# pointed at docs/bench/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPORT=${1:?usage: bench-readme.sh REPORT_DIR [TREE]}
TREE=${2:-$ROOT}
README=$TREE/README.md

die() { echo "bench-readme.sh: $*" >&2; exit 1; }
[ -f "$REPORT/report.md" ] || die "$REPORT/report.md is missing: run make bench first"
[ -f "$REPORT/report.svg" ] || die "$REPORT/report.svg is missing: run make bench first"
[ "$(grep -c '^<!-- bench:begin -->$' "$README")" = 1 ] &&
  [ "$(grep -c '^<!-- bench:end -->$' "$README")" = 1 ] ||
  die "$README needs exactly one <!-- bench:begin --> and one <!-- bench:end --> line"

mkdir -p "$TREE/docs/bench"
cp "$REPORT/report.svg" "$TREE/docs/bench/report.svg"
body=$(mktemp)
trap 'rm -f "$body" "$README.new"' EXIT
sed -e '1{/^#/d}' -e 's|](report\.svg)|](docs/bench/report.svg)|' "$REPORT/report.md" |
  sed -e '1{/^$/d}' >"$body"
awk -v body="$body" '
  /^<!-- bench:begin -->$/ { print; while ((getline l < body) > 0) print l; skip = 1; next }
  /^<!-- bench:end -->$/ { skip = 0 }
  !skip { print }' "$README" >"$README.new"
mv "$README.new" "$README"
echo "bench-readme.sh: $README and $TREE/docs/bench/report.svg updated from $REPORT"
