#!/usr/bin/python3
"""Service registry on leases, end to end against a real cetcd process.

Five instances register under /services/web/<id>, each with its own lease
(TTL 3 s) kept alive over its own long-lived LeaseKeepAlive stream every
TTL/3, as clientv3 does. A watcher on the /services/ prefix (Watch stream,
started before anyone registers) must see every registration. Then one
instance stops heartbeating: its key must be deleted no earlier than TTL
after its last keepalive was sent and no later than 2 s after that deadline
(measured from its last keepalive's answer), the watcher must see exactly
that DELETE, and the other instances' keys must be untouched.

Then the server is restarted (SIGTERM, same data dir): the leases survive
(etcd 3.4 gives them a fresh full TTL on the new leader), the remaining
instances resume heartbeating on new streams, a new watcher starts, and a
second instance stops: the same bounds and the same checks.

Set REGISTRY_SERVER=etcd to run it against etcd 3.4 itself (validates the
test).
"""

import os
import queue
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

TTL = 3
FAILS = []


def check(ok, what):
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if not ok:
        FAILS.append(what)


def stub_call(ch, method, req_cls_name, resp_cls_name, kind="unary"):
    pb = dt.rpc_pb2()
    resp = getattr(pb, resp_cls_name)
    mk = ch.unary_unary if kind == "unary" else ch.stream_stream
    return mk(method, request_serializer=lambda m: m.SerializeToString(),
              response_deserializer=resp.FromString)


class Instance:
    """One registered service instance with its keepalive stream."""

    def __init__(self, ep, name):
        self.ep, self.name = ep, name
        self.key = ("/services/web/%s" % name).encode()
        self.stop = threading.Event()
        self.last_sent = self.last_answer = None
        self.errors = 0
        self.lease = None

    def register(self):
        import grpc
        pb = dt.rpc_pb2()
        ch = grpc.insecure_channel(self.ep)
        grant = stub_call(ch, "/etcdserverpb.Lease/LeaseGrant", "", "LeaseGrantResponse")
        put = stub_call(ch, "/etcdserverpb.KV/Put", "", "PutResponse")
        self.lease = grant(pb.LeaseGrantRequest(TTL=TTL), timeout=5).ID
        put(pb.PutRequest(key=self.key, value=b"10.0.0.%s:80" % self.name.encode(), lease=self.lease),
            timeout=5)
        ch.close()

    def start_heartbeat(self):
        self.thread = threading.Thread(target=self.heartbeat, daemon=True)
        self.thread.start()

    def heartbeat(self):
        """One bidi stream; a keepalive every TTL/3 after the last answer."""
        import grpc
        pb = dt.rpc_pb2()
        ch = grpc.insecure_channel(self.ep)
        ka = stub_call(ch, "/etcdserverpb.Lease/LeaseKeepAlive", "", "LeaseKeepAliveResponse", "stream")
        q = queue.Queue()

        def reqs():
            while True:
                item = q.get()
                if item is None:
                    return
                yield item
        try:
            answers = ka(reqs())
            while not self.stop.is_set():
                t = time.time()
                q.put(pb.LeaseKeepAliveRequest(ID=self.lease))
                r = next(answers)
                if r.TTL <= 0:
                    self.errors += 1
                    break
                self.last_sent, self.last_answer = t, time.time()
                self.stop.wait(TTL / 3.0)
        except Exception:
            self.errors += 1
        finally:
            q.put(None)
            ch.close()


class Watcher:
    def __init__(self, ep):
        import grpc
        pb = dt.rpc_pb2()
        self.events = []    # (time, type, key)
        self.ch = grpc.insecure_channel(ep)
        watch = stub_call(self.ch, "/etcdserverpb.Watch/Watch", "", "WatchResponse", "stream")
        self.q = queue.Queue()
        self.q.put(pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=b"/services/", range_end=b"/services0")))
        self.created = threading.Event()
        self.it = watch(iter(self.q.get, None))
        threading.Thread(target=self.run, daemon=True).start()
        check(self.created.wait(5), "watcher on /services/ created")

    def run(self):
        try:
            for r in self.it:
                if r.created:
                    self.created.set()
                for e in r.events:
                    self.events.append((time.time(), "DELETE" if e.type == 1 else "PUT", e.kv.key))
        except Exception:
            pass

    def close(self):
        self.q.put(None)
        self.it.cancel()
        self.ch.close()


def get_keys(ep):
    import grpc
    pb = dt.rpc_pb2()
    ch = grpc.insecure_channel(ep)
    rng = stub_call(ch, "/etcdserverpb.KV/Range", "", "RangeResponse")
    r = rng(pb.RangeRequest(key=b"/services/", range_end=b"/services0"), timeout=5)
    ch.close()
    return {kv.key: kv.lease for kv in r.kvs}


def drop_one(ep, w, inst, others, label):
    """Stop inst's heartbeat and check the bounds, the watcher, the others."""
    inst.stop.set()
    inst.thread.join(5)
    sent, answered = inst.last_sent, inst.last_answer
    deadline = answered + TTL + 2
    t_del = None
    while time.time() < deadline + 1:
        dels = [e for e in w.events if e[1] == "DELETE"]
        if dels:
            t_del = dels[0][0]
            break
        time.sleep(0.02)
    check(t_del is not None, "%s: watcher saw a DELETE" % label)
    if t_del is None:
        return
    check(t_del >= sent + TTL - 0.05,
          "%s: deleted %.2f s after the last keepalive was sent (>= TTL %d)"
          % (label, t_del - sent, TTL))
    check(t_del <= answered + TTL + 2,
          "%s: deleted %.2f s after the TTL ran out (<= 2 s)" % (label, t_del - answered - TTL))
    dels = [e for e in w.events if e[1] == "DELETE"]
    check([e[2] for e in dels] == [inst.key], "%s: the only DELETE is %r (got %r)"
          % (label, inst.key, [e[2] for e in dels]))
    time.sleep(TTL)  # the survivors' keys outlive another full TTL
    keys = get_keys(ep)
    check(inst.key not in keys, "%s: %r is gone" % (label, inst.key))
    check(all(o.key in keys and keys[o.key] == o.lease for o in others),
          "%s: the other %d instances' keys and leases are untouched" % (label, len(others)))
    check(all(o.errors == 0 for o in others), "%s: every other keepalive was answered with TTL > 0" % label)


def main():
    binary = dt.reference_binary() if os.environ.get("REGISTRY_SERVER") == "etcd" else dt.candidate_binary()
    srv = dt.Server(binary, label="registry")
    try:
        srv.start()
        ep = srv.endpoint
        w = Watcher(ep)
        insts = [Instance(ep, str(i)) for i in range(1, 6)]
        for i in insts:
            i.register()
            i.start_heartbeat()
        time.sleep(0.5)
        puts = sorted(e[2] for e in w.events if e[1] == "PUT")
        check(puts == sorted(i.key for i in insts), "watcher saw all 5 registrations")
        time.sleep(TTL + 1)  # several renewals: nobody expires while heartbeating
        check(len(get_keys(ep)) == 5, "5 instances registered after %d s of heartbeats" % (TTL + 1))
        drop_one(ep, w, insts[1], [i for i in insts if i is not insts[1]], "before restart")
        w.close()

        alive = [i for i in insts if i is not insts[1]]
        for i in alive:
            i.stop.set()
        for i in alive:
            i.thread.join(5)
        dt.close_channel(ep)
        check(srv.stop(), "server stopped on SIGTERM")
        srv.start()
        keys = get_keys(ep)
        check(sorted(keys) == sorted(i.key for i in alive) and
              all(keys[i.key] == i.lease for i in alive), "after restart: the 4 keys with their leases")
        w = Watcher(ep)
        for i in alive:
            i.stop = threading.Event()
            i.start_heartbeat()
        time.sleep(TTL + 1)
        drop_one(ep, w, alive[0], alive[1:], "after restart")
        w.close()
        for i in alive[1:]:
            i.stop.set()
        for i in alive[1:]:
            i.thread.join(5)
    finally:
        dt.close_channel(srv.endpoint)
        srv.cleanup()
    print("%d failures" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
