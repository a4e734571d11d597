#!/usr/bin/python3
"""Differential test of leases: the stock etcdctl 3.4 (and raw Lease gRPC
calls etcdctl cannot make) against etcd 3.4 and against cetcd.

Both servers are started with identical flags (difftest.Server), every step
runs against both at the same moment, and exit code, stdout and stderr must
match byte for byte after masking what legitimately differs:
  * ports, times, client UUIDs (difftest.mask), and cluster/member ids if
    they differ;
  * lease IDs, which etcd draws from its clock: each distinct ID, in order
    of appearance on that server, becomes L1, L2, ... in hex (etcdctl's
    %016x) and in decimal (JSON, protobuf text);
  * a remaining TTL (timing): `remaining(Ns)` / "ttl":N / TTL: N become <R>,
    after checking on each side that N is within 3 s of what is expected;
  * the order of keys inside `attached keys([...])`, which etcd takes from a
    Go map (random order).
A streaming `lease keep-alive` is compared with consecutive repeated lines
collapsed (how many keepalives fit before the revoke is timing).

Steps: grant (server-chosen and client-chosen IDs, the min-TTL rule, TTL too
large, lease already exists), put --lease, --ignore-lease, detaching by a
put without lease, get -w json, timetolive (--keys, -w json), list (expiry
order), keep-alive --once and streaming, revoke (all keys in one revision,
lease not found), expiry of a short lease, a restart that keeps leases, and
a kill -9 after which an acknowledged grant and its key are still there.
"""

import concurrent.futures
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

FAILS = []


class Side:
    def __init__(self, srv):
        self.srv = srv
        self.ids = []          # lease IDs in order of appearance
        self.mask_ids = None

    def name(self, i):
        return "%016x" % self.ids[i - 1]

    def learn(self, data):
        for m in re.finditer(rb"lease ([0-9a-f]{16}) granted", data):
            self.add(int(m.group(1), 16))
        for m in re.finditer(rb"^ID: (\d+)$", data, re.M):
            self.add(int(m.group(1)))

    def add(self, v):
        if v not in self.ids:
            self.ids.append(v)

    def mask(self, data):
        data = dt.mask(data, self.srv, self.mask_ids)
        for n, v in enumerate(self.ids, 1):
            tag = b"L%d" % n
            data = re.sub(rb"(?<![0-9a-f])%016x(?![0-9a-f])" % v, tag, data)
            data = re.sub(rb"(?<![0-9a-f])%x(?![0-9a-f])" % v, tag, data)
            data = re.sub(rb"(?<![0-9])%d(?![0-9])" % v, tag, data)
        data = re.sub(rb"attached keys\(\[([^\]]*)\]\)",
                      lambda m: b"attached keys([" + b" ".join(sorted(m.group(1).split(b" "))) + b"])",
                      data)
        return data


def check_remaining(label, data, lo, hi):
    """Replace remaining TTLs by <R> after checking lo <= N <= hi."""
    def sub(m):
        n = int(m.group(2))
        if not lo <= n <= hi:
            FAILS.append("%s: remaining TTL %d not in [%d, %d]: %r" % (label, n, lo, hi, data))
        return m.group(1) + b"<R>" + m.group(3)
    data = re.sub(rb"(remaining\()(-?\d+)(s\))", sub, data)
    data = re.sub(rb'("ttl":)(-?\d+)(,)', sub, data)
    return re.sub(rb"(\nTTL: )(\d+)(\n)", sub, data)


def collapse(data):
    out = []
    for line in data.split(b"\n"):
        if not out or out[-1] != line:
            out.append(line)
    return b"\n".join(out)


def grpc_lease(endpoint, method, req):
    """One Lease call: (0, text format) or (1, b'', 'StatusCode.X: msg')."""
    import grpc
    from google.protobuf import text_format
    pb = dt.rpc_pb2()
    resp_cls = {"LeaseGrant": pb.LeaseGrantResponse, "LeaseRevoke": pb.LeaseRevokeResponse,
                "LeaseTimeToLive": pb.LeaseTimeToLiveResponse,
                "LeaseLeases": pb.LeaseLeasesResponse}[method]
    call = dt.channel(endpoint).unary_unary(
        "/etcdserverpb.Lease/" + method, request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp_cls.FromString)
    try:
        resp = call(req, timeout=10)
    except grpc.RpcError as e:
        return 1, b"", ("%s: %s\n" % (e.code(), e.details())).encode()
    return 0, text_format.MessageToString(resp).encode(), b""


def keepalive_stream(side, lease_no):
    """`lease keep-alive` until the lease is revoked from another etcdctl
    1.5 s later; returns its (rc, out, err)."""
    argv = [dt.ETCDCTL, "--endpoints=" + side.srv.endpoint, "lease", "keep-alive", side.name(lease_no)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dt.clean_env())
    time.sleep(1.5)
    dt.etcdctl(side.srv.endpoint, ["lease", "revoke", side.name(lease_no)])
    try:
        out, err = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return "TIMEOUT", out, err
    return p.returncode, collapse(out), err


# (kind, ...): ctl args use {L<n>} for the side's n-th lease in hex.
# ("ctl", args, (lo, hi)) checks remaining TTLs within [lo, hi].
STEPS = [
    ("ctl", ["lease", "grant", "30"]),
    ("ctl", ["lease", "grant", "60"]),
    ("ctl", ["put", "--lease={L1}", "k1", "v1"]),
    ("ctl", ["put", "--lease={L1}", "k2", "v2"]),
    ("ctl", ["put", "--lease={L2}", "k3", "v3"]),
    ("ctl", ["put", "k4", "v4"]),
    ("ctl", ["get", "k1", "-w", "json"]),
    ("ctl", ["get", "--prefix", "k", "-w", "json"]),
    ("ctl", ["lease", "timetolive", "{L1}"], (27, 30)),
    ("ctl", ["lease", "timetolive", "--keys", "{L1}"], (27, 30)),
    ("ctl", ["lease", "timetolive", "--keys", "-w", "json", "{L2}"], (57, 60)),
    ("ctl", ["lease", "timetolive", "-w", "json", "{L1}"], (27, 30)),
    ("ctl", ["lease", "list"]),
    ("ctl", ["lease", "list", "-w", "json"]),
    ("ctl", ["lease", "keep-alive", "--once", "{L1}"]),
    ("ctl", ["lease", "keep-alive", "--once", "-w", "json", "{L1}"]),
    ("ctl", ["put", "--ignore-lease", "k1", "v1b"]),
    ("ctl", ["get", "k1", "-w", "json"]),
    ("ctl", ["put", "k2", "v2b"]),
    ("ctl", ["lease", "timetolive", "--keys", "{L1}"], (27, 30)),
    ("ctl", ["put", "--lease={L1}", "k5", "v5"]),
    ("ctl", ["put", "--lease=1234", "k6", "v6"]),
    ("ctl", ["put", "--lease={L1}", "--ignore-lease", "k1", "x"]),
    ("ctl", ["lease", "revoke", "{L1}"]),
    ("ctl", ["get", "--prefix", "k", "-w", "json"]),
    ("ctl", ["lease", "revoke", "{L1}"]),
    ("ctl", ["lease", "timetolive", "{L1}"]),
    ("ctl", ["lease", "timetolive", "-w", "json", "{L1}"]),
    ("ctl", ["lease", "keep-alive", "--once", "{L1}"]),
    ("ctl", ["put", "--lease={L1}", "k7", "v7"]),
    ("ctl", ["lease", "revoke", "zz"]),
    ("ctl", ["lease", "grant", "1"]),                       # L3: the min TTL rule
    ("ctl", ["put", "--lease={L3}", "short", "v"]),
    ("ctl", ["lease", "list"]),
    ("sleep", 4.5),                                          # expired and revoked
    ("ctl", ["get", "short", "-w", "json"]),
    ("ctl", ["lease", "timetolive", "{L3}"]),
    ("ctl", ["lease", "list"]),
    ("grpc", "LeaseGrant", "pb.LeaseGrantRequest(ID=0x1234, TTL=10)"),   # L4
    ("grpc", "LeaseGrant", "pb.LeaseGrantRequest(ID=0x1234, TTL=20)"),
    ("grpc", "LeaseGrant", "pb.LeaseGrantRequest(ID=77, TTL=9000000001)"),
    ("grpc", "LeaseGrant", "pb.LeaseGrantRequest(ID=78, TTL=9000000000)"),  # L5
    ("grpc", "LeaseGrant", "pb.LeaseGrantRequest(ID=-5, TTL=-3)"),          # L6
    ("grpc", "LeaseRevoke", "pb.LeaseRevokeRequest(ID=4321)"),
    ("grpc", "LeaseRevoke", "pb.LeaseRevokeRequest(ID=78)"),
    ("grpc", "LeaseRevoke", "pb.LeaseRevokeRequest(ID=-5)"),
    ("grpc", "LeaseTimeToLive", "pb.LeaseTimeToLiveRequest(ID=4321, keys=True)"),
    ("grpc", "LeaseTimeToLive", "pb.LeaseTimeToLiveRequest(ID=0x1234)", (8, 10)),
    ("ctl", ["lease", "grant", "3"]),                        # L7
    ("stream", 7),
    ("ctl", ["lease", "list"]),
    ("restart",),
    ("ctl", ["get", "--prefix", "k", "-w", "json"]),
    ("ctl", ["lease", "list"]),
    ("ctl", ["lease", "timetolive", "--keys", "{L2}"], (57, 61)),
    ("ctl", ["lease", "keep-alive", "--once", "{L2}"]),
    ("ctl", ["lease", "revoke", "{L2}"]),
    ("ctl", ["get", "--prefix", "k", "-w", "json"]),
    ("ctl", ["lease", "grant", "0"]),                        # L8: min TTL
    ("ctl", ["lease", "revoke", "{L8}"]),
    ("ctl", ["lease", "grant", "abc"]),
    ("ctl", ["lease", "timetolive", "xyz"]),
    ("ctl", ["txn"], "\nput --lease={L4} tk1 tv1\nput tk2 tv2\n\n\n"),  # L4: ID 0x1234
    ("ctl", ["get", "--prefix", "tk", "-w", "json"]),
    ("ctl", ["lease", "timetolive", "--keys", "{L4}"], (0, 10)),
    ("ctl", ["txn", "-w", "json"], "\nput --lease={L4} tk3 v\nget --prefix tk\n\n\n"),
    ("ctl", ["lease", "grant", "90"]),                       # L9
    ("ctl", ["put", "--lease={L9}", "k8", "v8"]),
    ("kill9",),                                              # acknowledged = durable
    ("ctl", ["lease", "list"]),
    ("ctl", ["lease", "timetolive", "--keys", "{L9}"], (87, 91)),
    ("ctl", ["get", "k8", "-w", "json"]),
]


def run_step(step, sides, pool):
    kind = step[0]
    if kind == "ctl":
        def subst(text, s):
            names = {"L%d" % (i + 1): s.name(i + 1) for i in range(len(s.ids))}
            names.update({"L%dD" % (i + 1): str(v) for i, v in enumerate(s.ids)})
            return text.format(**names)
        stdin = step[2] if len(step) > 2 and isinstance(step[2], str) else ""
        futs = [pool.submit(dt.etcdctl, s.srv.endpoint, [subst(a, s) for a in step[1]],
                            subst(stdin, s)) for s in sides]
    elif kind == "grpc":
        pb = dt.rpc_pb2()
        futs = [pool.submit(grpc_lease, s.srv.endpoint, step[1], eval(step[2], {"pb": pb}))
                for s in sides]
    elif kind == "stream":
        futs = [pool.submit(keepalive_stream, s, step[1]) for s in sides]
    return [f.result() for f in futs]


def main():
    adv = dt.free_port()
    ref = dt.Server(dt.reference_binary(), advertise_peer_port=adv, label="ref")
    cand = dt.Server(dt.candidate_binary(), advertise_peer_port=adv, label="cand")
    sides = [Side(ref), Side(cand)]
    passed = 0
    try:
        ref.start()
        cand.start()
        ia, ib = dt.server_ids(ref), dt.server_ids(cand)
        if (ia["cluster_id"], ia["member_id"]) != (ib["cluster_id"], ib["member_id"]):
            print("NOTE: ids differ, masking them")
            sides[0].mask_ids, sides[1].mask_ids = ia, ib
        pool = concurrent.futures.ThreadPoolExecutor(2)
        for n, step in enumerate(STEPS, 1):
            if step[0] == "sleep":
                time.sleep(step[1])
                continue
            if step[0] in ("restart", "kill9"):
                for s in sides:
                    dt.close_channel(s.srv.endpoint)
                    if step[0] == "kill9":
                        s.srv.kill9()
                    else:
                        s.srv.stop()
                for s in sides:
                    s.srv.start()
                continue
            res = run_step(step, sides, pool)
            masked = []
            for s, (rc, out, err) in zip(sides, res):
                s.learn(out)
                out, err = s.mask(out), s.mask(err)
                if len(step) > 2 and isinstance(step[-1], tuple):
                    lo, hi = step[-1]
                    out = check_remaining("step %d %s" % (n, s.srv.label), out, lo, hi)
                masked.append((rc, out, err))
            what = " ".join(step[1]) if step[0] == "ctl" else " ".join(map(str, step[1:]))
            if dt.judge_step(n, step[0], what, masked, FAILS):
                passed += 1
    finally:
        for s in sides:
            dt.close_channel(s.srv.endpoint)
            s.srv.cleanup()
    for f in FAILS:
        print("FAIL " + f)
    print("%d steps matched, %d failures" % (passed, len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
