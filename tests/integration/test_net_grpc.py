#!/usr/bin/python3
"""The net transport against a real gRPC client stack (python grpcio, C-core).

Starts the CUnit binary's toy server (`$CETCD_BIN/test_net --serve`, see
tests/unit/test_net.c), which prints "PORT <n>" and runs until its stdin
closes, then checks with python grpc: unary calls, server-side errors with
grpc-go's exact codes and messages, a bidi stream, many concurrent calls
over one channel, a message over the receive limit, and that the server is
stopped at the end; then the same over TLS (test_net --serve-tls), with
python grpc and curl.  Exits 1 on any failure.
"""

import concurrent.futures
import os
import struct
import subprocess
import sys
import tempfile

import grpc

FAILS = []


def check(cond, what):
    if cond:
        print("ok   " + what)
    else:
        print("FAIL " + what)
        FAILS.append(what)


def ident(b):
    return b


def main():
    binary = os.path.join(os.environ.get("CETCD_BIN", "build/bin"), "test_net")
    proc = subprocess.Popen([binary, "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            print("FAIL server did not start: %r" % line)
            return 1
        port = int(line.split()[1])
        run(port)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            FAILS.append("server did not stop")
    check(proc.returncode == 0, "server exited cleanly (rc=%s)" % proc.returncode)
    run_tls(binary)
    print("%d failures" % len(FAILS))
    return 1 if FAILS else 0


def run(port):
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    rng = ch.unary_unary("/etcdserverpb.KV/Range", request_serializer=ident,
                         response_deserializer=ident)
    put = ch.unary_unary("/etcdserverpb.KV/Put", request_serializer=ident,
                         response_deserializer=ident)

    r = rng(b"abc", timeout=10)
    check(r == b"\x0a\x02\x10\x07abc", "unary Range reply %r" % r)
    r = put(b"xyz", timeout=10)
    check(r == b"PUTxyz", "unary Put reply through net_post %r" % r)
    try:
        rng(b"abc", timeout=10, metadata=[("token", "bad")])
        check(False, "metadata token reaches the app")
    except grpc.RpcError as ex:
        check((ex.code(), ex.details()) ==
              (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: invalid auth token"),
              "metadata token reaches the app %r" % ((ex.code(), ex.details()),))
    r = rng(b"", timeout=10)
    check(r == b"\x0a\x02\x10\x07", "empty request message")

    def err_of(path, req=b"x"):
        f = ch.unary_unary(path, request_serializer=ident, response_deserializer=ident)
        try:
            f(req, timeout=10)
            return None
        except grpc.RpcError as e:
            return (e.code(), e.details())

    e = err_of("/etcdserverpb.KV/Nope")
    check(e == (grpc.StatusCode.UNIMPLEMENTED, "unknown method Nope for service etcdserverpb.KV"),
          "unknown method %r" % (e,))
    e = err_of("/etcdserverpb.Lease/LeaseGrant")
    check(e == (grpc.StatusCode.UNIMPLEMENTED, "method LeaseGrant not implemented"),
          "unimplemented service %r" % (e,))
    e = err_of("/x.Y/Z")
    check(e == (grpc.StatusCode.UNIMPLEMENTED, "unknown service x.Y"), "unknown service %r" % (e,))
    e = err_of("/etcdserverpb.KV/Range", b"z" * 5000)
    check(e == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                "grpc: received message larger than max (5000 vs. 4096)"),
          "oversize request %r" % (e,))

    watch = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=ident,
                             response_deserializer=ident)
    out = list(watch(iter([b"one", b"two", b"three"]), timeout=10))
    check(out == [b"one", b"two", b"three", b"bye"], "bidi echo then OK on half-close %r" % out)
    try:
        list(watch(iter([b"one", b"FAIL"]), timeout=10))
        check(False, "bidi app error")
    except grpc.RpcError as ex:
        check((ex.code(), ex.details()) ==
              (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: failed precondition"),
              "bidi app error %r" % ((ex.code(), ex.details()),))

    snap = ch.unary_stream("/etcdserverpb.Maintenance/Snapshot", request_serializer=ident,
                           response_deserializer=ident)
    chunks = list(snap(bytes([40]), timeout=20))
    want = [bytes((k * 31 + i * 7 + (i >> 9)) & 0xff for i in range(65536)) for k in range(40)]
    check(chunks == want, "server stream: 40 x 64 KiB in order (%d chunks)" % len(chunks))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futs = [pool.submit((put if i % 2 else rng), b"k%05d" % i, timeout=20)
                for i in range(2000)]
        res = [f.result() for f in futs]
    good = sum(1 for i, r in enumerate(res)
               if r == ((b"PUT" if i % 2 else b"\x0a\x02\x10\x07") + b"k%05d" % i))
    check(good == 2000, "2000 concurrent calls on one channel (%d right)" % good)
    ch.close()


def run_tls(binary):
    """The toy over TLS (test_net --serve-tls DIR makes a self-signed
    certificate for localhost / 127.0.0.1 in DIR)."""
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([binary, "--serve-tls", d], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        try:
            line = proc.stdout.readline().decode()
            if not line.startswith("PORT "):
                check(False, "TLS server did not start: %r" % line)
                return
            port = int(line.split()[1])
            with open(os.path.join(d, "cert.pem"), "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            ch = grpc.secure_channel("127.0.0.1:%d" % port, creds)
            rng = ch.unary_unary("/etcdserverpb.KV/Range", request_serializer=ident,
                                 response_deserializer=ident)
            r = rng(b"tls", timeout=10)
            check(r == b"\x0a\x02\x10\x07tls", "TLS unary %r" % r)
            snap = ch.unary_stream("/etcdserverpb.Maintenance/Snapshot",
                                   request_serializer=ident, response_deserializer=ident)
            chunks = list(snap(bytes([40]), timeout=20))
            check(len(chunks) == 40 and all(len(c) == 65536 for c in chunks),
                  "TLS server stream 40 x 64 KiB")
            ch.close()
            out = subprocess.run(["curl", "-s", "--cacert", os.path.join(d, "cert.pem"),
                                  "https://localhost:%d/health" % port],
                                 capture_output=True, timeout=20)
            check(out.stdout == b"hello GET /health 0", "curl over TLS %r" % out.stdout)
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                FAILS.append("TLS server did not stop")
        check(proc.returncode == 0, "TLS server exited cleanly (rc=%s)" % proc.returncode)


if __name__ == "__main__":
    sys.exit(main())
