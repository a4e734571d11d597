#!/usr/bin/python3
"""Watch progress: --experimental-watch-progress-notify-interval and progress
requests, on etcd 3.4 and cetcd side by side.

Each server runs with a 1 s interval. On one stream: a watch with
progress_notify on an idle key, a watch without it. Checked on both:
  * the idle progress_notify watch gets progress notifications (no events,
    its watch id, header revision = the current revision); the other none;
  * a put it watches arrives as an event, and the next notification after it
    is elided (etcd: "elide next progress update if sent a key update"): at
    most one notification in the 1.5 s that follow;
  * a progress request is answered with watch_id -1 and the current revision;
  * flag parsing: a bad duration is refused with etcd's message.
The summaries of both servers must match.

The ticker is per stream (etcd 3.4: each stream's sendLoop starts its own,
period interval + rand(interval / 10)): two streams opened 0.5 s apart each
get their first notification between 1 and 1.1 s (plus scheduling) after
they opened. A server-wide timer notifies both at one moment, so one of them
less than 0.5 s after it opened.
"""

import os
import queue
import subprocess
import sys
import threading
import time

import grpc
from etcd3 import etcdrpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

# python3-etcd3's WatchRequest predates progress_request (field 3): sent raw.
PROGRESS_REQUEST = b"\x1a\x00"


def raw(m):
    return m if isinstance(m, bytes) else m.SerializeToString()


def session(srv):
    q = queue.Queue()
    ch = grpc.insecure_channel(srv.endpoint)
    kv = etcdrpc.KVStub(ch)
    kv.Put(etcdrpc.PutRequest(key=b"other", value=b"1"))
    call = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=raw,
                            response_deserializer=etcdrpc.WatchResponse.FromString)(iter(q.get, None))
    got = []
    t0 = time.time()

    def read():
        try:
            for r in call:
                got.append((round(time.time() - t0, 1), r))
        except grpc.RpcError:
            pass
    th = threading.Thread(target=read, daemon=True)
    th.start()
    q.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(key=b"idle", progress_notify=True)))
    q.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(key=b"quiet")))
    time.sleep(2.6)
    n_before = len(got)
    rev = kv.Put(etcdrpc.PutRequest(key=b"idle", value=b"x")).header.revision
    time.sleep(1.5)
    q.put(PROGRESS_REQUEST)
    time.sleep(0.5)
    q.put(None)
    call.cancel()
    ch.close()
    # summary: what happened, without timing
    created = [r.watch_id for _, r in got if r.created]
    notes = [(r.watch_id, r.header.revision) for _, r in got[:n_before]
             if not r.created and not r.events]
    after = [(r.watch_id, len(r.events), r.header.revision) for _, r in got[n_before:]]
    # between the put and the progress request (1.5 s) the ticker fires once
    # or twice (its phase is the server's business); the first tick after
    # the event is elided, so at most one notification comes in between
    rest = after[1:]
    notes_after = [m for m in rest if m != (-1, 0, rev)]
    return {"created": created, "notifies_before_put": sorted(set(notes)),
            "some_notifies_before_put": len(notes) >= 1,
            "event": after[:1], "middle_ok": len(notes_after) <= 1 and all(m == (0, 0, rev) for m in notes_after),
            "progress_answer": rest.count((-1, 0, rev)), "put_rev": rev}


def first_notify(srv, delay, out, key):
    """Opens a stream `delay` s from now with one idle progress_notify watch;
    out[key] = seconds from just before the open to its first notification."""
    time.sleep(delay)
    q = queue.Queue()
    ch = grpc.insecure_channel(srv.endpoint)
    t0 = time.time()
    call = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=raw,
                            response_deserializer=etcdrpc.WatchResponse.FromString)(iter(q.get, None))
    q.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(key=b"phase-" + key.encode(),
                                                                         progress_notify=True)))
    try:
        for r in call:
            if not r.created and not r.events:
                out[key] = time.time() - t0
                break
    except grpc.RpcError:
        pass
    q.put(None)
    call.cancel()
    ch.close()


def phases(srv):
    out = {}
    ts = [threading.Thread(target=first_notify, args=(srv, d, out, k)) for d, k in ((0, "a"), (0.5, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    # lower bound: the server's ticker starts after t0; upper: 1.1 s of
    # ticker and jitter plus generous scheduling slack
    ok = len(out) == 2 and all(0.99 <= v < 1.6 for v in out.values())
    return ok, {k: round(v, 2) for k, v in out.items()}


def main():
    fails = 0
    for b in ("etcd", "cetcd"):
        p = subprocess.run([dt.resolve_binary(b), "--experimental-watch-progress-notify-interval=bogus"],
                           capture_output=True, env=dt.clean_env(), timeout=10)
        line = (p.stdout + p.stderr).decode().splitlines()[0]
        if line != 'invalid value "bogus" for flag -experimental-watch-progress-notify-interval: parse error':
            fails += 1
            print("FAIL %s: bad flag answered %r" % (b, line))
    args = ["--experimental-watch-progress-notify-interval", "1s"]
    ref = dt.Server(dt.reference_binary(), label="etcd", extra_args=args)
    cand = dt.Server(dt.candidate_binary(), label="cetcd", extra_args=args,
                     advertise_peer_port=ref.advertise_peer_port)
    try:
        ref.start()
        cand.start()
        res = {}
        ts = [threading.Thread(target=lambda s=s: res.__setitem__(s.label, session(s))) for s in (ref, cand)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for label in ("etcd", "cetcd"):
            print("%-5s %r" % (label, res[label]))
        a, b = res["etcd"], res["cetcd"]
        if a != b:
            fails += 1
            print("FAIL: etcd and cetcd differ")
        rev = b["put_rev"]
        if b["notifies_before_put"] != [(0, rev - 1)] or not b["some_notifies_before_put"] \
                or b["event"] != [(0, 1, rev)] or not b["middle_ok"] or b["progress_answer"] != 1:
            fails += 1
            print("FAIL: cetcd's progress: want notifications for watch 0 at %d, the event, "
                  "at most one notification, then the answer (-1) at %d" % (rev - 1, rev))
        res = {}
        ts = [threading.Thread(target=lambda s=s: res.__setitem__(s.label, phases(s))) for s in (ref, cand)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for label in ("etcd", "cetcd"):
            ok, firsts = res[label]
            print("%-5s first notification per stream (s after it opened): %r" % (label, firsts))
            if not ok:
                fails += 1
                print("FAIL %s: want each stream's first notification 1..1.1 s after it opened" % label)
    finally:
        ref.cleanup()
        cand.cleanup()
    print("%d failures" % fails)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
