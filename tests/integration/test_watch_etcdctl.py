#!/usr/bin/python3
"""Differential test of Watch: the same `etcdctl watch` sessions against etcd
3.4 and against cetcd, while another etcdctl writes; outputs compared byte
for byte (after difftest.mask: ports, and ids only if they differ).

Sessions (each a separate etcdctl process; all started before the writes
unless they read history):
  live:     watch foo | watch --prefix foo | watch foo fop (a range) |
            watch --prev-kv --prefix foo | watch foo -- sh -c 'echo $ETCD_WATCH_*' |
            watch -w json --prefix foo (full responses: headers, revisions) |
            watch -i (interactive: two watch lines, then progress, then EOF)
  history:  watch --rev 2 --prefix foo | watch --rev 5 --prev-kv foo |
            watch --rev 1 --prefix '' (every key)
  compacted: after `compact 6`: watch --rev 3 foo (canceled: compacted) |
            watch --rev 6 foo
  writes:   puts, deletes (single, prefix), a txn changing three keys in one
            revision, an empty value.

A live watcher is given a second to be registered before the writes (there
is no way to ask etcdctl whether it is); writes to different keys are
spaced for -i, whose watches print from separate goroutines.
"""

import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

EXEC = ["sh", "-c", 'echo "exec rev=$ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE '
        '$ETCD_WATCH_KEY=$ETCD_WATCH_VALUE"']

LIVE = {
    "key": ["watch", "foo"],
    "prefix": ["watch", "--prefix", "foo"],
    "range": ["watch", "foo", "fop"],
    "prev-kv": ["watch", "--prev-kv", "--prefix", "foo"],
    "exec": ["watch", "foo", "--"] + EXEC,
    "json": ["watch", "-w", "json", "--prefix", "foo"],
}
HISTORY = {
    "rev2-prefix": ["watch", "--rev", "2", "--prefix", "foo"],
    "rev5-prev-kv": ["watch", "--rev", "5", "--prev-kv", "foo"],
    "rev1-all": ["watch", "--rev", "1", "--prefix", ""],
}
COMPACTED = {
    "rev3-compacted": ["watch", "--rev", "3", "foo"],
    "rev6": ["watch", "--rev", "6", "foo"],
}

TXN = b'mod("foo") > "0"\n\nput foo a\nput foo3 b\ndel foo2\n\nput never x\n\n'


def writes(ep):
    out = []
    for args, stdin in ((["put", "foo", "1"], b""), (["put", "foo2", "x"], b""),
                        (["put", "fo", "0"], b""), (["put", "fop", "9"], b""),
                        (["put", "foo", "2"], b""), (["del", "foo"], b""),
                        (["put", "foo", "3"], b""),
                        (["txn"], TXN), (["put", "bar", "1"], b""),
                        (["del", "--prefix", "foo"], b""), (["put", "foo", ""], b""),
                        (["put", "fooz", "last"], b"")):
        out.append(dt.etcdctl(ep, args, stdin=stdin))
    return out


def spawn(ep, args, stdin=subprocess.DEVNULL):
    return subprocess.Popen([dt.ETCDCTL, "--endpoints=" + ep] + args, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dt.clean_env(), start_new_session=True)


def finish(p, wait=0.0):
    """Let p run `wait` more seconds (it may exit by itself), then SIGTERM it."""
    try:
        out, err = p.communicate(timeout=wait) if wait else (None, None)
    except subprocess.TimeoutExpired:
        out = err = None
    if out is None:
        os.killpg(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    return (p.returncode, out, err)


def session(srv):
    ep = srv.endpoint
    res = {}
    live = {name: spawn(ep, args) for name, args in LIVE.items()}
    inter = spawn(ep, ["watch", "-i"], stdin=subprocess.PIPE)
    inter.stdin.write(b"watch ik1\nwatch --prefix ik2\n")
    inter.stdin.flush()
    time.sleep(1.0)
    res["writes"] = writes(ep)
    for k in (b"ik1", b"ik2a", b"ik1", b"ik2b"):
        dt.etcdctl(ep, ["put", k.decode(), "v"])
        time.sleep(0.2)
    inter.stdin.write(b"progress\n")
    inter.stdin.flush()
    time.sleep(0.5)
    inter.stdin.close()
    inter.stdin = None  # EOF: etcdctl -i exits (communicate must not flush it)
    res["interactive"] = finish(inter, 5)
    for name, p in live.items():
        res[name] = finish(p, 0.1)
    hist = {name: spawn(ep, args) for name, args in HISTORY.items()}
    time.sleep(1.0)
    for name, p in hist.items():
        res[name] = finish(p)
    res["compact"] = dt.etcdctl(ep, ["compact", "6"])
    comp = {name: spawn(ep, args) for name, args in COMPACTED.items()}
    time.sleep(1.0)
    for name, p in comp.items():
        res[name] = finish(p, 0.1)
    return res


def main():
    ref = dt.Server(dt.reference_binary(), label="etcd")
    cand = dt.Server(dt.candidate_binary(), label="cetcd",
                     advertise_peer_port=ref.advertise_peer_port)
    results = {}
    try:
        ref.start()
        cand.start()
        ids = {}
        threads = [threading.Thread(target=lambda s=s: results.__setitem__(s.label, session(s)))
                   for s in (ref, cand)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if "etcd" not in results or "cetcd" not in results:
            print("FAIL: a session did not finish")
            return 1
        fails = 0
        a, b = results["etcd"], results["cetcd"]
        for name in a:
            ra, rb = a[name], b[name]
            if name == "writes" and os.environ.get("DIFF_SHOW"):
                print(ra)
            if name == "writes":
                same = [tuple(dt.mask(x, ref, ids) if isinstance(x, bytes) else x for x in r) for r in ra] == \
                       [tuple(dt.mask(x, cand, ids) if isinstance(x, bytes) else x for x in r) for r in rb]
                if not same:
                    fails += 1
                    print("FAIL writes differ:\n etcd  %r\n cetcd %r" % (ra, rb))
                continue
            ma = (ra[0], dt.mask(ra[1], ref, ids), dt.mask(ra[2], ref, ids))
            mb = (rb[0], dt.mask(rb[1], cand, ids), dt.mask(rb[2], cand, ids))
            if ma != mb:
                fails += 1
                print("FAIL %s:\n--- etcd (rc %s)\n%s%s\n--- cetcd (rc %s)\n%s%s" % (
                    name, ma[0], ma[1].decode(errors="replace"), ma[2].decode(errors="replace"),
                    mb[0], mb[1].decode(errors="replace"), mb[2].decode(errors="replace")))
            else:
                print("ok   %-15s %d bytes of output" % (name, len(ma[1]) + len(ma[2])))
                if os.environ.get("DIFF_SHOW"):
                    print((ma[1] + ma[2]).decode(errors="replace"))
        print("%d sessions, %d failed" % (len(a), fails))
        return 1 if fails else 0
    finally:
        ref.cleanup()
        cand.cleanup()


if __name__ == "__main__":
    sys.exit(main())
