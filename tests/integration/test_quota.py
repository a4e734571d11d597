#!/usr/bin/python3
"""--quota-backend-bytes and the sticky NOSPACE alarm, on cetcd alone.

Writes that would take the store past the quota get etcd's
`etcdserver: mvcc: database space exceeded` (gRPC RESOURCE_EXHAUSTED) and
raise a NOSPACE alarm for the member. While it is active, every put, txn
with a put and lease grant is refused -- even one that would fit -- until
`etcdctl alarm disarm`; reads, deletes and read-only txns go on; the alarm
survives a restart. Disarming while the store is still over the quota lets
the next write raise it again (etcd does the same until compaction and
defragmentation free space).

The byte-for-byte comparison with etcd 3.4 is test_maint_diff.py; this test
fills the store by many puts, which the two stores absorb at different
sizes, so it checks behaviour rather than output.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

NOSPACE = b"etcdserver: mvcc: database space exceeded"
FILL_MAX = 100  # 90 KB puts against a 300 KB quota: refused long before this


def main():
    failures = []
    n_checks = [0]

    def check(name, ok, detail=b""):
        n_checks[0] += 1
        print(("ok   " if ok else "FAIL ") + name)
        if not ok:
            failures.append(name)
            if detail:
                print("     " + detail.decode(errors="replace").strip()[:400])

    big = os.urandom(45000).hex().encode()  # 90 KB value
    with dt.Server(dt.candidate_binary(), label="quota",
                   extra_args=["--quota-backend-bytes", "300000"]) as s:
        s.start()
        ep = s.endpoint
        member = dt.server_ids(s)["member_id"]
        alarm_line = b"memberID:%d alarm:NOSPACE \n" % member
        rc, out, err = dt.etcdctl(ep, ["put", "small", "v"])
        check("small put under the quota", rc == 0 and out == b"OK\n", err)
        rc, out, err = dt.etcdctl(ep, ["alarm", "list"])
        check("no alarm yet", rc == 0 and out == b"", err)

        # fill until the quota refuses a put (the store's size is sampled,
        # so how many fit varies; the refusal must come)
        accepted, refused = 0, None
        for i in range(FILL_MAX):
            rc, out, err = dt.etcdctl(ep, ["put", "fill%03d" % i], stdin=big)
            if rc != 0:
                refused = err
                break
            accepted += 1
        check("the quota refuses a put after %d accepted" % accepted,
              refused is not None and NOSPACE in refused, refused or b"")
        rc, out, err = dt.etcdctl(ep, ["alarm", "list"])
        check("alarm list shows NOSPACE for the member", rc == 0 and out == alarm_line, out + err)
        rc, out, err = dt.etcdctl(ep, ["endpoint", "status"])
        check("endpoint status lists the alarm", rc == 0 and out.endswith(b", " + alarm_line), out + err)

        rc, out, err = dt.etcdctl(ep, ["put", "tiny", "t"])
        check("sticky: a put that would fit is refused", rc != 0 and NOSPACE in err, err)
        rc, out, err = dt.etcdctl(ep, ["txn"], stdin=b"\nput big3 x\n\n\n")
        check("sticky: a txn with a put is refused", rc != 0 and NOSPACE in err, err)
        rc, out, err = dt.etcdctl(ep, ["txn"], stdin=b"\nget small\n\n\n")
        check("a read-only txn is served", rc == 0 and out == b"SUCCESS\n\nsmall\nv\n", err)
        rc, out, err = dt.etcdctl(ep, ["lease", "grant", "60"])
        check("sticky: a lease grant is refused", rc != 0 and NOSPACE in err, err)
        rc, out, err = dt.etcdctl(ep, ["get", "small", "--print-value-only"])
        check("reads still served", rc == 0 and out == b"v\n", err)
        rc, out, err = dt.etcdctl(ep, ["del", "--prefix", "fill"])
        check("deletes are never refused", rc == 0 and out == b"%d\n" % accepted, out + err)
        rc, out, err = dt.etcdctl(ep, ["put", "tiny", "t"])
        check("sticky: still refused after the delete freed keys", rc != 0 and NOSPACE in err, err)

        s.stop()
        s.start()
        rc, out, err = dt.etcdctl(ep, ["alarm", "list"])
        check("the alarm survives a restart", rc == 0 and out == alarm_line, out + err)
        rc, out, err = dt.etcdctl(ep, ["put", "tiny", "t"])
        check("still refused after the restart", rc != 0 and NOSPACE in err, err)

        rc, out, err = dt.etcdctl(ep, ["alarm", "disarm"])
        check("alarm disarm lists what it disarmed", rc == 0 and out == alarm_line, out + err)
        rc, out, err = dt.etcdctl(ep, ["alarm", "list"])
        check("no alarm after disarm", rc == 0 and out == b"", out + err)
        rc, out, err = dt.etcdctl(ep, ["endpoint", "status", "-w", "json"])
        check("endpoint status has no errors", rc == 0 and b'"errors"' not in out, out + err)
        # the store still holds the deleted values' history (no compaction,
        # no defragmentation): if it is still over the quota, the next put
        # raises the alarm again, as in etcd
        rc, out, err = dt.etcdctl(ep, ["put", "tiny", "t"])
        if rc == 0:
            check("put accepted after disarm", out == b"OK\n", err)
        else:
            rc2, out2, _ = dt.etcdctl(ep, ["alarm", "list"])
            check("put refused again while over the quota re-raises the alarm",
                  NOSPACE in err and out2 == alarm_line, err + out2)
        check("server alive", s.alive())
    print("%d passed, %d failed" % (n_checks[0] - len(failures), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
