#!/usr/bin/python3
"""Slow-consumer test of Watch.

A client process opens many watches on one stream and then stops reading
(SIGSTOP: its socket buffers fill, then the server's queue for the stream).
Meanwhile puts and another, fast watcher carry on. Checked:
  * puts complete and the fast watcher gets every event while the slow one
    is stopped;
  * the server's RSS stays bounded (the slow stream's events are not
    buffered: its watchers move to catch-up from history);
  * when the slow client reads again (SIGCONT), every watcher gets every
    event, in order, once;
  * a second slow client whose history gets compacted while it is stopped
    gets a clean cancel with compact_revision after an in-order prefix.
Server: $CETCD_BIN/cetcd.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
from etcd3 import etcdrpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

WATCHES = 20
PUTS = 1600
VALUE = b"x" * 4096

# The slow client: WATCHES watches on prefix s/ from start revision argv[2];
# reads until every watch saw key s/end or was canceled; prints a summary.
CHILD = r'''
import json, queue, sys, grpc
from etcd3 import etcdrpc
ep, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q = queue.Queue()
for _ in range(n):
    q.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
        key=b"s/", range_end=b"s0", start_revision=start)))
call = etcdrpc.WatchStub(grpc.insecure_channel(ep)).Watch(iter(q.get, None))
w = {}
done = set()
created = 0
for r in call:
    if r.created:
        created += 1
        w[r.watch_id] = {"revs": [], "compact": 0}
        if created == n:
            print("READY", flush=True)
        continue
    s = w[r.watch_id]
    for e in r.events:
        s["revs"].append(e.kv.mod_revision)
        if e.kv.key == b"s/end":
            done.add(r.watch_id)
    if r.canceled:
        s["compact"] = r.compact_revision
        done.add(r.watch_id)
    if len(done) == n:
        break
print(json.dumps(w), flush=True)
q.put(None)
'''


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Fast:
    """A watcher that reads everything as it comes."""

    def __init__(self, ep, start):
        self.n = 0
        self.q = []
        self.call = etcdrpc.WatchStub(grpc.insecure_channel(ep)).Watch(iter([
            etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
                key=b"s/", range_end=b"s0", start_revision=start))]))
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()

    def read(self):
        try:
            for r in self.call:
                self.n += len(r.events)
        except grpc.RpcError:
            pass


def slow_client(ep, start):
    p = subprocess.Popen(["/usr/bin/python3", "-c", CHILD, ep, str(start), str(WATCHES)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    line = p.stdout.readline()
    if line.strip() != b"READY":
        raise RuntimeError("slow client did not start: %r %r" % (line, p.stderr.read()))
    return p


def put_many(kv, n, tag):
    def one(i):
        return kv.Put(etcdrpc.PutRequest(key=b"s/%s/%05d" % (tag, i), value=VALUE)).header.revision
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return max(pool.map(one, range(n)))


def check(cond, what, fails):
    print("%s %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        fails.append(what)


def main():
    fails = []
    srv = dt.Server(dt.resolve_binary("cetcd"), label="watchslow")
    try:
        srv.start()
        pid = srv.proc.pid
        ch = grpc.insecure_channel(srv.endpoint)
        kv = etcdrpc.KVStub(ch)
        first = kv.Put(etcdrpc.PutRequest(key=b"s/begin", value=b"1")).header.revision

        # --- phase 1: stopped, then resumed: every event --------------------
        slow = slow_client(srv.endpoint, first)
        fast = Fast(srv.endpoint, first)
        base = rss_kb(pid)
        os.kill(slow.pid, signal.SIGSTOP)
        t0 = time.time()
        peak = [base]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kb(pid))
                time.sleep(0.05)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        last = put_many(kv, PUTS, b"a")
        last = kv.Put(etcdrpc.PutRequest(key=b"s/end", value=b"1")).header.revision
        dt_put = time.time() - t0
        want = last - first + 1
        deadline = time.time() + 20
        while fast.n < want and time.time() < deadline:
            time.sleep(0.02)
        stop.set()
        sampler.join()
        slow_bytes = WATCHES * PUTS * len(VALUE)
        check(fast.n == want, "fast watcher got %d/%d events while the slow client is stopped "
              "(%d puts in %.1f s)" % (fast.n, want, PUTS, dt_put), fails)
        grow = peak[0] - base
        check(grow < 64 * 1024, "server RSS grew %d KiB (base %d KiB) while %d MiB of events were "
              "due to the stopped stream" % (grow, base, slow_bytes >> 20), fails)
        os.kill(slow.pid, signal.SIGCONT)
        out, err = slow.communicate(timeout=60)
        if not out.strip():
            print(err.decode(errors="replace")[-3000:])
        res = json.loads(out.decode().splitlines()[-1])
        good = sum(1 for s in res.values() if s["revs"] == list(range(first, last + 1)) and not s["compact"])
        check(good == WATCHES, "after SIGCONT %d/%d watchers got all %d events in order, once"
              % (good, WATCHES, want), fails)

        # --- phase 2: history compacted while stopped: clean cancel ---------
        first2 = kv.Put(etcdrpc.PutRequest(key=b"s/begin", value=b"2")).header.revision
        slow2 = slow_client(srv.endpoint, first2)
        os.kill(slow2.pid, signal.SIGSTOP)
        last2 = put_many(kv, PUTS, b"b")
        last2 = kv.Put(etcdrpc.PutRequest(key=b"s/end", value=b"2")).header.revision
        kv.Compact(etcdrpc.CompactionRequest(revision=last2))
        time.sleep(0.5)
        os.kill(slow2.pid, signal.SIGCONT)
        out, err = slow2.communicate(timeout=60)
        res = json.loads(out.decode().splitlines()[-1])
        clean = 0
        for s in res.values():
            revs = s["revs"]
            prefix = revs == list(range(first2, first2 + len(revs)))
            if prefix and (s["compact"] == last2 or (not s["compact"] and revs and revs[-1] == last2)):
                clean += 1
        ncomp = sum(1 for s in res.values() if s["compact"])
        check(clean == WATCHES, "compacted while stopped: %d/%d watchers got an in-order prefix then "
              "a cancel with compact_revision %d (%d canceled)" % (clean, WATCHES, last2, ncomp), fails)
        fast.call.cancel()
        ch.close()
        print("%d failures" % len(fails))
        return 1 if fails else 0
    finally:
        srv.cleanup()


if __name__ == "__main__":
    sys.exit(main())
