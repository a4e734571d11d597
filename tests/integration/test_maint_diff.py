#!/usr/bin/python3
"""Differential test of the Maintenance service's Status and Alarm: the stock
etcdctl 3.4 (and raw Maintenance gRPC calls etcdctl cannot make) against
etcd 3.4 and against cetcd, both started with identical flags and
--quota-backend-bytes 150000.

Every step runs against both servers; exit code, stdout and stderr must
match byte for byte after difftest.mask (ports, times, client UUIDs; the
cluster/member ids only if they differ) and after normalising exactly what
legitimately differs between a bbolt file and a LevelDB directory, or
between two Raft logs:
  * the store's size: dbSize, dbSizeInUse, "DBSize", and the humanised
    "DB SIZE" cell (e.g. "20 kB" against "246 B");
  * the Raft log's length: raftIndex / raftAppliedIndex, "RAFT INDEX",
    "RAFT APPLIED INDEX" (etcd writes conf-change and cluster-version
    entries that cetcd does not). Before normalising, each side is checked
    to report applied == committed (a quiet single member);
  * how long a health check took ("took = ...", "took":"...", TOOK);
  * /health: status and body are compared, not the headers (etcd's carry
    CORS and Date headers);
  * -w table: because the width of a column follows its longest cell, a
    table is compared cell by cell (borders and padding dropped).
Everything else -- ids, version, leader, raft term, revision, learner flag,
errors/alarm strings, the health line -- is compared as printed.

The NOSPACE sequence avoids depending on how fast each store grows: the
first big put (200 KB against a 150 KB quota) is refused by the quota
check on both servers whatever their size, and raises the alarm; from then
on the alarm alone refuses writes ("sticky"), until `alarm disarm`.

`alarm list -w fields` is not compared: etcdctl 3.4 panics on the nil
header etcd's AlarmResponse carries (cetcd sends none either), and the
goroutine dump holds addresses. Only its exit code and first line are.
"""

import concurrent.futures
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

FAILS = []
QUOTA = "150000"
BIG = "v" * 200000

TXN_PUT = 'val("k") = "v"\n\nput k2 v2\n\n\n'
TXN_GET = '\nget k\n\n\n'
TXN_FAIL_PUT = 'val("k") = "v"\n\nget k\n\nput k3 v3\n\n'

STATUS = [("ctl", ["endpoint", "status"]),
          ("ctl", ["endpoint", "status", "-w", "json"]),
          ("ctl", ["endpoint", "status", "-w", "fields"]),
          ("ctl", ["endpoint", "status", "-w", "table"])]

STEPS = STATUS + [
    ("ctl", ["endpoint", "health"]),
    ("http", "/health"),
    ("ctl", ["endpoint", "health", "-w", "json"]),
    ("ctl", ["endpoint", "health", "-w", "table"]),
    ("ctl", ["alarm", "list"]),
    ("ctl", ["alarm", "list", "-w", "json"]),
    ("ctl", ["alarm", "list", "-w", "protobuf"]),
    ("ctl", ["alarm", "list", "-w", "table"]),
    ("panic", ["alarm", "list", "-w", "fields"]),
    ("ctl", ["alarm", "disarm"]),
    ("ctl", ["put", "k", "v"]),
    # the quota refuses the big put and raises NOSPACE for this member
    ("ctl", ["put", "big"], BIG),
    ("ctl", ["alarm", "list"]),
    ("ctl", ["alarm", "list", "-w", "json"]),
    ("http", "/health"),
    ("http", "/health?exclude=NOSPACE"),
    ("http", "/health?exclude=CORRUPT"),
    ] + STATUS + [
    # sticky: small writes fit the quota but the alarm refuses them
    ("ctl", ["put", "k", "v2"]),
    ("ctl", ["txn"], TXN_PUT),
    ("ctl", ["txn"], TXN_FAIL_PUT),
    ("ctl", ["txn"], TXN_GET),
    ("ctl", ["lease", "grant", "100"]),
    ("ctl", ["get", "k", "-w", "json"]),
    ("ctl", ["del", "k"]),
    ("ctl", ["put", "k0", "x"]),
    ("ctl", ["compaction", "2"]),
    ("ctl", ["get", "", "--prefix"]),
    ("restart",),
    # persisted: the alarm is still there after a restart
    ("ctl", ["alarm", "list"]),
    ("ctl", ["put", "k", "v3"]),
    ] + STATUS + [
    ("ctl", ["alarm", "disarm"]),
    ("ctl", ["alarm", "list"]),
    ("ctl", ["alarm", "disarm", "-w", "json"]),
    ("ctl", ["put", "k", "v4"]),
    ("ctl", ["txn"], TXN_FAIL_PUT),
    ("ctl", ["get", "k", "-w", "json"]),
    ] + STATUS[:2] + [
    # raw Alarm calls: any member, any type, filters, repeats
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.GET, alarm=pb.NOSPACE)"),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=42, alarm=pb.NOSPACE)"),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=42, alarm=pb.NOSPACE)"),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.GET)"),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.GET, alarm=pb.CORRUPT)"),
    ("grpc", "Status", "pb.StatusRequest()"),
    ("ctl", ["put", "k", "v5"]),      # another member's NOSPACE caps this one too
    ("ctl", ["alarm", "list"]),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=42, alarm=pb.NOSPACE)"),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=42, alarm=pb.NOSPACE)"),
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=42, alarm=pb.CORRUPT)"),
    ("ctl", ["put", "k", "v6"]),
    # CORRUPT: writes, deletes, compactions and lease calls refused; reads served
    ("grpc", "Alarm", "pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID={MEMBER}, alarm=pb.CORRUPT)"),
    ("ctl", ["put", "k", "v7"]),
    ("ctl", ["del", "k"]),
    ("ctl", ["txn"], TXN_GET),
    ("ctl", ["compaction", "3"]),
    ("ctl", ["lease", "grant", "100"]),
    ("ctl", ["lease", "revoke", "1234"]),
    ("ctl", ["get", "k"]),
    ("ctl", ["get", "k", "--consistency=s"]),
    ("http", "/health?exclude=NOSPACE"),
    ("http", "/health?exclude=NOSPACE&exclude=CORRUPT"),
    ("ctl", ["endpoint", "status", "-w", "json"]),
    ("ctl", ["alarm", "disarm"]),
    ("ctl", ["put", "k", "v8"]),
    ("ctl", ["alarm", "list"]),
    # unknown Maintenance method: grpc-go's words, from the registered service
    ("raw", "/etcdserverpb.Maintenance/Frobnicate"),
    ("raw", "/etcdserverpb.Maintenance/Status"),
]


# --- normalising -------------------------------------------------------------

_JSON_NUM = re.compile(rb'"(dbSize|dbSizeInUse|raftIndex|raftAppliedIndex)":\d+')
_FIELDS_NUM = re.compile(rb'^"(DBSize|DBSizeInUse|RaftIndex|RaftAppliedIndex)" : \d+$', re.M)
_TOOK = [(re.compile(rb"took = [0-9.]+(ns|\xc2\xb5s|ms|s)"), b"took = <T>"),
         (re.compile(rb'"took":"[0-9.]+(ns|\xc2\xb5s|ms|s)"'), b'"took":"<T>"')]
_TABLE_NORM = {"DB SIZE", "RAFT INDEX", "RAFT APPLIED INDEX", "TOOK"}


def check_applied(label, out):
    """Each side on its own: a quiet single member has applied everything
    committed (raftAppliedIndex == raftIndex) and leads itself."""
    for m in re.finditer(rb'"raftIndex":(\d+),"raftTerm":\d+,"raftAppliedIndex":(\d+)', out):
        if m.group(1) != m.group(2):
            FAILS.append("%s: raftIndex %s != raftAppliedIndex %s" % (label, m.group(1), m.group(2)))
    for m in re.finditer(rb'"member_id":(\d+),.*?"leader":(\d+)', out):
        if m.group(1) != m.group(2):
            FAILS.append("%s: leader %s is not the member %s" % (label, m.group(2), m.group(1)))


def table_cells(data):
    """A -w table as rows of stripped cells, the normalised columns blanked."""
    lines = data.split(b"\n")
    rows = [[c.strip() for c in l.split(b"|")[1:-1]] for l in lines if l.startswith(b"|")]
    if not rows:
        return data
    head = [h.decode() for h in rows[0]]
    out = [b" | ".join(rows[0])]
    for r in rows[1:]:
        out.append(b" | ".join(b"<N>" if c and i < len(head) and head[i] in _TABLE_NORM else c
                               for i, c in enumerate(r)))
    return b"TABLE\n" + b"\n".join(out) + b"\n"


def normalise(data, step):
    data = _JSON_NUM.sub(rb'"\1":<N>', data)
    data = _FIELDS_NUM.sub(rb'"\1" : <N>', data)
    for rx, rep in _TOOK:
        data = rx.sub(rep, data)
    if step[0] == "ctl" and step[1][:2] == ["endpoint", "status"] and "-w" not in step[1]:
        # simple: endpoint, id, version, db size, leader?, learner?, term, index, applied, errors
        def simple(m):
            f = m.group(0).split(b", ")
            if len(f) >= 9:
                f[3], f[7], f[8] = b"<SIZE>", b"<N>", b"<N>"
            return b", ".join(f)
        data = re.sub(rb"^.*$", simple, data, count=1, flags=re.M)
    if b"+---" in data:
        data = table_cells(data)
    return data


# --- running -------------------------------------------------------------------

def grpc_maint(endpoint, method, req):
    """One Maintenance call: (0, text format) or (1, b'', 'StatusCode.X: msg').
    Repeated alarms are sorted (etcd lists them from a Go map)."""
    import grpc
    from google.protobuf import text_format
    pb = dt.rpc_pb2()
    resp_cls = {"Alarm": pb.AlarmResponse, "Status": pb.StatusResponse}[method]
    call = dt.channel(endpoint).unary_unary(
        "/etcdserverpb.Maintenance/" + method, request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp_cls.FromString)
    try:
        resp = call(req, timeout=10)
    except grpc.RpcError as e:
        return 1, b"", ("%s: %s\n" % (e.code(), e.details())).encode()
    if method == "Alarm":
        alarms = sorted(resp.alarms, key=lambda a: (a.alarm, a.memberID))
        del resp.alarms[:]
        resp.alarms.extend(alarms)
    if method == "Status":
        # the same normalisation as etcdctl's json: sizes and log length
        # (python-etcd3's schema predates dbSizeInUse and isLearner)
        for f in ("dbSize", "dbSizeInUse", "raftIndex", "raftAppliedIndex"):
            if hasattr(resp, f):
                setattr(resp, f, 0)
    return 0, text_format.MessageToString(resp).encode(), b""


def grpc_raw(endpoint, path):
    import grpc
    call = dt.channel(endpoint).unary_unary(path, request_serializer=lambda b: b,
                                            response_deserializer=lambda b: b)
    try:
        out = call(b"\xff", timeout=10)  # a truncated varint tag: undecodable
        return 0, out, b""
    except grpc.RpcError as e:
        return 1, b"", ("%s: %s\n" % (e.code(), e.details())).encode()


def http_get(endpoint, path):
    """/health over HTTP/1.1: (status, body, b''); headers are not compared
    (etcd adds CORS and Date headers cetcd does not send)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen("http://%s%s" % (endpoint, path), timeout=10) as r:
            return r.status, r.read(), b""
    except urllib.error.HTTPError as e:
        return e.code, e.read(), b""


def run_step(step, servers, ids, pool):
    kind = step[0]
    if kind in ("ctl", "panic"):
        stdin = step[2] if len(step) > 2 else ""
        futs = [pool.submit(dt.etcdctl, s.endpoint, step[1], stdin) for s in servers]
    elif kind == "grpc":
        pb = dt.rpc_pb2()
        futs = [pool.submit(grpc_maint, s.endpoint, step[1],
                            eval(step[2].replace("{MEMBER}", str(i["member_id"])), {"pb": pb}))
                for s, i in zip(servers, ids)]
    elif kind == "http":
        futs = [pool.submit(http_get, s.endpoint, step[1]) for s in servers]
    elif kind == "raw":
        futs = [pool.submit(grpc_raw, s.endpoint, step[1]) for s in servers]
    res = [f.result() for f in futs]
    if kind == "panic":  # exit code and the first line of stderr only
        res = [(rc, out, err.split(b"\n")[0]) for rc, out, err in res]
    return res


def restart(servers):
    for s in servers:
        dt.close_channel(s.endpoint)
        if not s.stop():
            FAILS.append("%s did not stop on SIGTERM within 10 s" % s.label)
    for s in servers:
        s.start()


def candidate_only(cand):
    """What etcd 3.4 serves and cetcd does not yet: grpc-go's answer for a
    registered method without an implementation."""
    for m in ("Defragment", "Hash", "HashKV", "MoveLeader"):
        got = grpc_raw(cand.endpoint, "/etcdserverpb.Maintenance/" + m)
        want = (1, b"", b"StatusCode.UNIMPLEMENTED: method %s not implemented\n" % m.encode())
        if got != want:
            FAILS.append("candidate %s: %r, want %r" % (m, got, want))
    import grpc
    snap = dt.channel(cand.endpoint).unary_stream(
        "/etcdserverpb.Maintenance/Snapshot", request_serializer=lambda b: b,
        response_deserializer=lambda b: b)
    try:
        list(snap(b"", timeout=10))
        FAILS.append("candidate Snapshot: no error")
    except grpc.RpcError as e:
        if (e.code(), e.details()) != (grpc.StatusCode.UNIMPLEMENTED, "method Snapshot not implemented"):
            FAILS.append("candidate Snapshot: %r" % ((e.code(), e.details()),))


def main():
    adv = dt.free_port()
    args = ["--quota-backend-bytes", QUOTA]
    ref = dt.Server(dt.reference_binary(), advertise_peer_port=adv, label="ref", extra_args=args)
    cand = dt.Server(dt.candidate_binary(), advertise_peer_port=adv, label="cand", extra_args=args)
    servers = [ref, cand]
    passed = 0
    try:
        ref.start()
        cand.start()
        ids = [dt.server_ids(ref), dt.server_ids(cand)]
        mask_ids = [None, None]
        if (ids[0]["cluster_id"], ids[0]["member_id"]) != (ids[1]["cluster_id"], ids[1]["member_id"]):
            print("NOTE: ids differ, masking them")
            mask_ids = ids
        pool = concurrent.futures.ThreadPoolExecutor(2)
        for n, step in enumerate(STEPS, 1):
            if step[0] == "restart":
                restart(servers)
                continue
            res = run_step(step, servers, ids, pool)
            masked = []
            for s, mi, (rc, out, err) in zip(servers, mask_ids, res):
                check_applied("step %d %s" % (n, s.label), out)
                out = normalise(dt.mask(out, s, mi), step)
                err = normalise(dt.mask(err, s, mi), step)
                masked.append((rc, out, err))
            what = " ".join(map(str, step[1] if step[0] in ("ctl", "panic") else step[1:]))
            if dt.judge_step(n, step[0], what, masked, FAILS):
                passed += 1
        if os.path.basename(dt.candidate_binary()) != "etcd":
            candidate_only(cand)
        for s in servers:
            if not s.alive():
                FAILS.append("%s is not running at the end" % s.label)
    finally:
        for s in servers:
            dt.close_channel(s.endpoint)
            s.cleanup()
    for f in FAILS:
        print("FAIL " + f)
    print("%d steps matched, %d failures" % (passed, len(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
