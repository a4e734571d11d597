#!/usr/bin/python3
"""Crash test: kill -9 under concurrent writes loses no acknowledged put.

Writers (threads, one python3-etcd3 client each) put distinct keys
`crash/w<writer>/<seq>` with the value `w<writer>:<seq>:c<cycle>` and record
every ACKNOWLEDGED put with the revision of its response header.  At a random
moment of every cycle the server is killed with SIGKILL (by pid), then
restarted on the same data dir and ports.  After every restart:

  * the server must come back (log line + a read succeeding);
  * every acknowledged put is present, with its value, version 1 and
    mod_revision == create_revision == the acknowledged revision;
  * all revisions are unique, none is above the header revision, and they
    are exactly 2..header revision (one put of a new key per revision);
  * every key present was written by a writer (acknowledged, or in flight
    when the server died) -- nothing appears from nowhere.

Environment:
  CRASH_SERVER   cetcd (default: $CETCD_BIN/cetcd), etcd (PATH), or a path
  CRASH_SEED     replay a run (the seed is printed at the start)
  CRASH_CYCLES   kill/restart cycles (default 5)
  CRASH_WRITERS  writer threads (default 8)
  CRASH_MIN_S / CRASH_MAX_S   load time before each kill (default 1..3 s)
  CRASH_EARLY_KILL_P  chance per cycle of a second kill -9 0..0.5 s into the
                 restart, during recovery (default 0.4)

At the end the server is stopped with SIGTERM, started again and checked
once more.
"""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

import grpc  # noqa: E402
import etcd3  # noqa: E402
from etcd3.etcdrpc import rpc_pb2 as pb  # noqa: E402


class Writer(threading.Thread):
    def __init__(self, wid, port, cycle, seq0, acked, attempted, lock, stop, killed):
        super().__init__(daemon=True)
        self.killed = killed
        self.wid, self.port, self.cycle, self.seq = wid, port, cycle, seq0
        self.acked, self.attempted, self.lock, self.stop = acked, attempted, lock, stop
        self.errors = 0
        self.n_acked = 0
        self.unexpected = []

    def run(self):
        client = etcd3.client("127.0.0.1", self.port, timeout=15)
        try:
            while not self.stop.is_set():
                key = "crash/w%02d/%08d" % (self.wid, self.seq)
                val = "w%d:%d:c%d" % (self.wid, self.seq, self.cycle)
                self.seq += 1
                with self.lock:
                    self.attempted[key] = val
                try:
                    resp = client.put(key, val)
                except Exception as e:  # server killed: not acknowledged
                    self.errors += 1
                    if not self.killed.is_set() and self.errors < 3:
                        # before the kill an error is a bug worth showing
                        self.unexpected.append("%s: %s" % (key, e))
                    time.sleep(0.02)
                    continue
                rev = resp.header.revision
                with self.lock:
                    self.acked[key] = (val, rev)
                self.n_acked += 1
        finally:
            try:
                client.close()
            except Exception:
                pass


def read_all(endpoint, prefix=b"crash/"):
    """All keys under prefix -> (value, create, mod, version); and the header
    revision.  Paged, all pages at the revision of the first."""
    ch = grpc.insecure_channel(endpoint, options=[
        ("grpc.max_receive_message_length", 256 << 20)])
    try:
        rng = ch.unary_unary("/etcdserverpb.KV/Range",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=pb.RangeResponse.FromString)
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        out, key, rev = {}, prefix, 0
        while True:
            resp = rng(pb.RangeRequest(key=key, range_end=end, limit=5000,
                                       revision=rev), timeout=30)
            if rev == 0:
                rev = resp.header.revision
            for kv in resp.kvs:
                out[kv.key.decode()] = (kv.value.decode(), kv.create_revision,
                                        kv.mod_revision, kv.version)
            if not resp.more or not resp.kvs:
                return out, rev
            key = resp.kvs[-1].key + b"\x00"
    finally:
        ch.close()


def verify(endpoint, acked, attempted, when):
    errs = []
    data, hdr_rev = read_all(endpoint)
    for key, (val, rev) in acked.items():
        got = data.get(key)
        if got is None:
            errs.append("%s: acknowledged put %s=%r at revision %d is LOST"
                        % (when, key, val, rev))
            continue
        gval, crev, mrev, ver = got
        if gval != val or mrev != rev or crev != rev or ver != 1:
            errs.append("%s: %s acknowledged value=%r rev=%d, found value=%r "
                        "create=%d mod=%d version=%d"
                        % (when, key, val, rev, gval, crev, mrev, ver))
    revs = {}
    for key, (gval, crev, mrev, ver) in data.items():
        if key not in attempted:
            errs.append("%s: key %s=%r was never written" % (when, key, gval))
        elif attempted[key] != gval:
            errs.append("%s: key %s has value %r, written %r"
                        % (when, key, gval, attempted[key]))
        if mrev in revs:
            errs.append("%s: revision %d shared by %s and %s"
                        % (when, mrev, revs[mrev], key))
        revs[mrev] = key
        if mrev > hdr_rev:
            errs.append("%s: %s mod_revision %d above header revision %d"
                        % (when, key, mrev, hdr_rev))
    # only puts of new keys were made, one revision each, from revision 2
    # (1 is the empty store): the revisions present are exactly 2..header
    missing = set(range(2, hdr_rev + 1)) - set(revs)
    if missing:
        m = sorted(missing)
        errs.append("%s: %d revisions between 2 and the header revision %d hold no "
                    "key (e.g. %s): a write was lost or the revision counter skipped"
                    % (when, len(m), hdr_rev, m[:10]))
    return errs, len(data), hdr_rev


def main():
    seed = int(os.environ.get("CRASH_SEED") or random.SystemRandom().randrange(1 << 32))
    cycles = int(os.environ.get("CRASH_CYCLES", "5"))
    nwriters = int(os.environ.get("CRASH_WRITERS", "8"))
    tmin = float(os.environ.get("CRASH_MIN_S", "1"))
    tmax = float(os.environ.get("CRASH_MAX_S", "3"))
    early_p = float(os.environ.get("CRASH_EARLY_KILL_P", "0.4"))
    binary = dt.resolve_binary(os.environ.get("CRASH_SERVER", "cetcd"))
    rnd = random.Random(seed)
    print("crash test: server=%s seed=%d (replay with CRASH_SEED=%d) cycles=%d writers=%d"
          % (binary, seed, seed, cycles, nwriters), flush=True)

    server = dt.Server(binary, name="crash", token="crash-token", label="crash")
    acked, attempted = {}, {}
    lock = threading.Lock()
    seqs = [0] * nwriters
    failures = []
    try:
        server.start(timeout=60)
        for cycle in range(1, cycles + 1):
            stop, killed = threading.Event(), threading.Event()
            writers = [Writer(w, server.client_port, cycle, seqs[w], acked, attempted,
                              lock, stop, killed) for w in range(nwriters)]
            for w in writers:
                w.start()
            load_s = rnd.uniform(tmin, tmax)
            time.sleep(load_s)
            before = len(acked)
            killed.set()
            server.kill9()
            stop.set()
            for w in writers:
                w.join(30)
                if w.is_alive():
                    failures.append("cycle %d: writer %d did not stop" % (cycle, w.wid))
            for i, w in enumerate(writers):
                seqs[i] = w.seq
                for u in w.unexpected:
                    failures.append("cycle %d: put failed before the kill: %s" % (cycle, u))
            n_cycle = sum(w.n_acked for w in writers)
            early = ""
            if rnd.random() < early_p:
                # also kill it while it starts (WAL replay, index rebuild)
                delay = rnd.uniform(0, 0.5)
                server.start(wait=False)
                time.sleep(delay)
                server.kill9()
                early = ", killed again %.2fs into the restart" % delay
            t0 = time.time()
            try:
                server.start(timeout=60)
            except dt.ServerError as e:
                failures.append("cycle %d: server did not come back after kill -9: %s"
                                % (cycle, e))
                break
            restart_s = time.time() - t0
            with lock:
                a, t = dict(acked), dict(attempted)
            errs, nkeys, hdr = verify(server.endpoint, a, t, "cycle %d" % cycle)
            print("cycle %d: load %.2fs, %d puts acknowledged this cycle (%d total, %d "
                  "at kill), killed%s, restarted in %.2fs; %d keys present, header "
                  "revision %d; %d problems"
                  % (cycle, load_s, n_cycle, len(a), before, early, restart_s, nkeys,
                     hdr, len(errs)), flush=True)
            failures.extend(errs)
            if n_cycle == 0:
                failures.append("cycle %d: no put was acknowledged at all" % cycle)
            if errs:
                break
        if not failures:
            # finally a clean stop (SIGTERM) and start: still all there
            if not server.stop():
                failures.append("SIGTERM did not stop the server within 10 s")
            server.start(timeout=60)
            errs, nkeys, hdr = verify(server.endpoint, dict(acked), dict(attempted),
                                      "after SIGTERM restart")
            print("after a SIGTERM stop and restart: %d keys present, header revision "
                  "%d; %d problems" % (nkeys, hdr, len(errs)))
            failures.extend(errs)
        if len(acked) == 0:
            failures.append("no put was ever acknowledged")
    except dt.ServerError as e:
        failures.append("server: %s" % e)
    finally:
        server.cleanup()

    for f in failures[:50]:
        print("FAIL " + f)
    if len(failures) > 50:
        print("... %d more" % (len(failures) - 50))
    print("seed %d: %s" % (seed, "FAILED" if failures else "ok"))
    print("%d passed, %d failed" % (0 if failures else 1, 1 if failures else 0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
