#!/usr/bin/python3
"""Differential test: the stock etcdctl 3.4 against etcd and against cetcd.

For every case file tests/integration/cases/*.txt, start a fresh etcd
(reference) and a fresh cetcd (candidate) with identical flags (same --name,
--initial-cluster, --initial-cluster-token and advertised peer URL, so the
ids should come out the same; only the listen ports differ), run the file's
etcdctl commands against both in order, and compare exit code, stdout and
stderr of each command byte for byte after masking ports, times and client
UUIDs.  Cluster/member ids are compared unmasked first; only if they differ
are they masked (and a NOTE is printed).

Environment:
  CETCD_BIN       directory holding cetcd (set by ctest)
  DIFF_REFERENCE  reference server (default: etcd on PATH)
  DIFF_CANDIDATE  candidate server (default: $CETCD_BIN/cetcd; "etcd" to
                  validate the harness itself: everything must match)
  DIFF_CASES      comma-separated case file names to run (default: all)
  DIFF_MAX_DIFFS  stop printing diffs after this many per file (default 50)
  DIFF_SHOW       if set, print every command with the reference's output
  DIFF_BUDGET_S   stop running commands after this many seconds (default
                  540, under ctest's 600 s timeout); the rest count as failed

Prints one line per failing command with a unified diff, a line per case
file, and at the end `N passed, N failed` (N = commands); exits 1 on any
failure.
"""

import concurrent.futures
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEADLINE = time.time() + float(os.environ.get("DIFF_BUDGET_S", "540"))


def restart(ref, cand, how, name, lineno):
    """@restart / @kill9: stop both (SIGTERM or SIGKILL), start both again on
    the same data dirs and ports.  False (and a FAIL line) if either fails,
    including a server that ignored SIGTERM for 10 s (it is killed then)."""
    stopped = True
    for srv in (ref, cand):
        dt.close_channel(srv.endpoint)
        if how == "kill9":
            srv.kill9()
        elif not srv.stop():
            stopped = False
            print("FAIL %s:%d: %s did not stop on SIGTERM within 10 s"
                  % (name, lineno, srv.label))
    for srv in (ref, cand):
        try:
            srv.start()
        except dt.ServerError as e:
            print("FAIL %s:%d: %s did not come back after @%s: %s"
                  % (name, lineno, "reference" if srv is ref else "candidate", how, e))
            return False
    return stopped


def run_file(path, ref_bin, cand_bin, pool):
    """Returns (passed, failed) command counts for one case file."""
    name = os.path.basename(path)
    cases = dt.parse_case_file(path)
    ncmd = sum(1 for c in cases if c.sleep is None and c.directive is None)
    adv = dt.free_port()   # advertised (never dialled) peer port, shared
    ref = dt.Server(ref_bin, advertise_peer_port=adv, label="ref")
    cand = dt.Server(cand_bin, advertise_peer_port=adv, label="cand")
    try:
        ref.start()        # the reference must work: else the harness is broken
        try:
            cand.start()
        except dt.ServerError as e:
            print("FAIL %s: candidate %s did not start: %s" % (name, cand_bin, e))
            return 0, ncmd

        ids_ref = dt.server_ids(ref)
        try:
            ids_cand = dt.server_ids(cand)
        except dt.ServerError as e:
            print("FAIL %s: %s" % (name, e))
            return 0, ncmd
        same_ids = (ids_ref["cluster_id"] == ids_cand["cluster_id"]
                    and ids_ref["member_id"] == ids_cand["member_id"])
        print("%s: ids reference cluster_id=%d member_id=%d raft_term=%d; "
              "candidate cluster_id=%d member_id=%d raft_term=%d: %s"
              % (name, ids_ref["cluster_id"], ids_ref["member_id"], ids_ref["raft_term"],
                 ids_cand["cluster_id"], ids_cand["member_id"], ids_cand["raft_term"],
                 "ids MATCH" if same_ids else "NOTE: ids DIFFER, masking them"))
        mref = None if same_ids else ids_ref
        mcand = None if same_ids else ids_cand

        passed = failed = 0
        max_diffs = int(os.environ.get("DIFF_MAX_DIFFS", "50"))
        for c in cases:
            if time.time() > DEADLINE:
                rest = ncmd - passed - failed
                print("FAIL %s: time budget (DIFF_BUDGET_S) used up at line %d; "
                      "%d commands not run" % (name, c.lineno, rest))
                return passed, failed + rest
            if c.sleep is not None:
                time.sleep(c.sleep)
                continue
            if c.directive:
                ok = restart(ref, cand, c.directive, name, c.lineno)
                if not ok:
                    rest = ncmd - passed - failed
                    return passed, failed + rest
                continue
            if c.grpc:
                fa = pool.submit(dt.grpc_kv, ref.endpoint, *c.grpc)
                fb = pool.submit(dt.grpc_kv, cand.endpoint, *c.grpc)
            else:
                fa = pool.submit(dt.etcdctl, ref.endpoint, c.args, c.stdin)
                fb = pool.submit(dt.etcdctl, cand.endpoint, c.args, c.stdin)
            ra, rb = fa.result(), fb.result()
            ma = (ra[0], dt.mask(ra[1], ref, mref), dt.mask(ra[2], ref, mref))
            mb = (rb[0], dt.mask(rb[1], cand, mcand), dt.mask(rb[2], cand, mcand))
            d = dt.diff_result(ma, mb, "etcd", "cetcd")
            if os.environ.get("DIFF_SHOW"):
                print(">>> %s:%d: %s\n[rc=%s]\n%s%s" % (
                    name, c.lineno, c.text if c.grpc else dt.fmt_args(c.args), ma[0],
                    "".join(dt._show(ma[1])), "".join(dt._show(ma[2]))))
            if not d:
                passed += 1
                continue
            failed += 1
            if failed <= max_diffs:
                print("FAIL %s:%d: %s" % (name, c.lineno, c.text if c.grpc
                                            else "etcdctl " + dt.fmt_args(c.args)))
                if c.stdin:
                    print("  stdin: %r" % (c.stdin[:200],))
                sys.stdout.write(d)
            if not ref.alive():
                print("FAIL %s: the reference etcd died at line %d (an input etcd "
                      "itself cannot take does not belong in a case file); log tail:\n%s"
                      % (name, c.lineno, ref.log_tail(8)))
                rest = ncmd - passed - failed
                return passed, failed + rest
            if not cand.alive():
                print("FAIL %s: candidate died (status %s) at line %d; log tail:\n%s"
                      % (name, cand.proc.returncode, c.lineno, cand.log_tail()))
                rest = ncmd - passed - failed
                return passed, failed + rest
        return passed, failed
    finally:
        dt.close_channel(ref.endpoint)
        dt.close_channel(cand.endpoint)
        ref.cleanup()
        cand.cleanup()


def main():
    ref_bin = dt.reference_binary()
    cand_bin = dt.candidate_binary()
    files = sorted(glob.glob(os.path.join(HERE, "cases", "*.txt")))
    only = os.environ.get("DIFF_CASES")
    if only:
        want = set(x.strip() for x in only.split(","))
        files = [f for f in files if os.path.basename(f) in want
                 or os.path.basename(f)[:-4] in want]
    if not files:
        print("no case files found")
        print("0 passed, 1 failed")
        return 1
    print("reference: %s  candidate: %s  etcdctl: %s" % (ref_bin, cand_bin, dt.ETCDCTL))
    tot_p = tot_f = 0
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for f in files:
            if time.time() > DEADLINE:
                n = sum(1 for c in dt.parse_case_file(f)
                        if c.sleep is None and c.directive is None)
                print("FAIL %s: time budget used up, not run" % os.path.basename(f))
                tot_f += n
                continue
            try:
                p, fl = run_file(f, ref_bin, cand_bin, pool)
            except Exception as e:  # harness or reference failure
                print("FAIL %s: %s: %s" % (os.path.basename(f), type(e).__name__, e))
                p, fl = 0, 1
            print("%s: %d passed, %d failed" % (os.path.basename(f), p, fl))
            tot_p += p
            tot_f += fl
    print("%d passed, %d failed" % (tot_p, tot_f))
    return 1 if tot_f else 0


if __name__ == "__main__":
    sys.exit(main())
