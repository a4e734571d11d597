#!/usr/bin/python3
"""Bad input: the server answers garbage with an error and carries on.

Starts etcd (reference, from PATH) and cetcd ($CETCD_BIN/cetcd; override with
BAD_CANDIDATE=etcd to validate this test against etcd alone) side by side,
sends each the same bad input, and checks:
  * after every input the server is still alive and serves a normal put/get
    (new connection, fresh key) -- on the candidate this is always required;
  * for gRPC-level inputs the status code and message equal etcd's
    ("strict"); for inputs whose exact error text is grpc-go's or Go
    protobuf's wording, only the code and a stable prefix are compared
    ("head"); for raw TCP/HTTP/2 inputs, what the connection saw (GOAWAY and
    its error code, RST_STREAM, PING ack, close) is compared where the RFC
    fixes it ("strict") and printed otherwise ("info").

Inputs: raw TCP garbage; HTTP/1.1 garbage; a truncated HTTP/2 preface (closed,
and left hanging while other clients are served); a valid preface followed by
garbage frames (DATA on stream 0, an over-long frame, a bad HPACK block, an
unknown frame type that must be ignored, random bytes, a gRPC message whose
length prefix lies); gRPC calls with malformed protobuf bodies; requests over
--max-request-bytes (1.5 MiB: `etcdserver: request is too large`) and over
max + 512 KiB (RESOURCE_EXHAUSTED); empty keys; unknown methods and services
(UNIMPLEMENTED); a txn with more than --max-txn-ops (128) operations; and
again with --max-request-bytes=10000 --max-txn-ops=4 on both servers.

Ends with `N passed, N failed` (N = checks); exit status 1 on any failure.
BAD_BUDGET_S (default 500) bounds the run below ctest's 600 s timeout.
"""

import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import difftest as dt  # noqa: E402

import grpc  # noqa: E402
from etcd3.etcdrpc import rpc_pb2 as pb  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
            5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE",
            9: "CONTINUATION"}
H2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR",
             3: "FLOW_CONTROL_ERROR", 4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED",
             6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
             9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
             12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}

MIB = 1024 * 1024


# ---------------------------------------------------------------------------
# raw HTTP/2
# ---------------------------------------------------------------------------

def h2_frame(ftype, flags, stream, payload):
    return (struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
            + struct.pack(">I", stream & 0x7FFFFFFF) + payload)


def hpack_int(v, prefix_bits, first=0):
    maxp = (1 << prefix_bits) - 1
    if v < maxp:
        return bytes([first | v])
    out = bytearray([first | maxp])
    v -= maxp
    while v >= 128:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman."""
    return (b"\x00" + hpack_int(len(name), 7) + name
            + hpack_int(len(value), 7) + value)


def grpc_headers_block(path, authority):
    return b"".join(hpack_literal(n, v) for n, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
        (b":authority", authority), (b"content-type", b"application/grpc"),
        (b"te", b"trailers")))


def settings_frame():
    return h2_frame(4, 0, 0, b"")


def read_events(sock, timeout=3.0, stop_on_goaway=True):
    """Read what the server sends, as a list of events: 'GOAWAY(code)',
    'RST_STREAM(stream,code)', 'HEADERS(stream)', 'PING_ACK', 'HTTP1 <line>',
    'EOF', 'RESET' (connection reset), 'TIMEOUT' (still open, silent)."""
    sock.settimeout(timeout)
    buf = b""
    events = []
    deadline = time.time() + timeout
    h2 = None
    while time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            events.append("TIMEOUT")
            return events
        except ConnectionResetError:
            events.append("RESET")
            return events
        if not chunk:
            events.append("EOF")
            return events
        buf += chunk
        if h2 is None and len(buf) >= 4:
            h2 = not buf.startswith(b"HTTP")
        if h2 is False:
            if b"\r\n" in buf:
                line = buf.split(b"\r\n", 1)[0].decode("latin-1")
                if "HTTP1 " + line not in events:
                    events.append("HTTP1 " + line)
            continue
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = buf[9:9 + n]
            buf = buf[9 + n:]
            if ftype == 7 and len(payload) >= 8:
                code = int.from_bytes(payload[4:8], "big")
                events.append("GOAWAY(%s)" % H2_ERRORS.get(code, code))
                if stop_on_goaway:
                    return events
            elif ftype == 3 and len(payload) >= 4:
                code = int.from_bytes(payload[:4], "big")
                events.append("RST_STREAM(%d,%s)" % (stream, H2_ERRORS.get(code, code)))
            elif ftype == 1:
                events.append("HEADERS(%d%s)" % (stream, ",END_STREAM" if flags & 1 else ""))
            elif ftype == 6 and flags & 1:
                events.append("PING_ACK")
    events.append("TIMEOUT")
    return events


def raw_exchange(server, data, timeout=3.0, shut_wr=False):
    s = socket.create_connection(("127.0.0.1", server.client_port), 5)
    try:
        try:
            s.sendall(data)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return ["RESET(send)"]
        return read_events(s, timeout)
    finally:
        s.close()


def conn_fate(server, data):
    """'closed :: <details>' if the server ended the connection (GOAWAY,
    then close; or just close, which is what etcd's grpc-go does), else
    'open :: <details>'.  RFC 7540 makes all of the frames sent with this a
    connection error, so the connection must end either way."""
    ev = raw_exchange(server, data, 3)
    closed = any(e.startswith(("GOAWAY", "EOF", "RESET")) for e in ev)
    return "%s :: %s" % ("closed" if closed else "open", " ".join(ev))


def summarize(events, keep):
    """Only the events of the kinds in keep (e.g. GOAWAY, RST_STREAM)."""
    return [e for e in events if e.split("(")[0].split(" ")[0] in keep]


# ---------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------

def grpc_raw(server, method, body, timeout=10):
    """Call method with raw request bytes; return 'OK <len>' or 'CODE: msg'."""
    ch = grpc.insecure_channel(server.endpoint, options=[
        ("grpc.max_send_message_length", 64 * MIB),
        ("grpc.max_receive_message_length", 64 * MIB)])
    try:
        call = ch.unary_unary(method, request_serializer=None,
                              response_deserializer=None)
        try:
            resp = call(body, timeout=timeout)
            return "OK"
        except grpc.RpcError as e:
            return "%s: %s" % (e.code().name, e.details())
    finally:
        ch.close()


def kv_ok(server, tag):
    """A normal put then get on a new connection must work."""
    key = ("bad-input/alive/%s" % tag).encode()
    val = ("v-%s-%f" % (tag, time.time())).encode()
    ch = grpc.insecure_channel(server.endpoint)
    try:
        put = ch.unary_unary("/etcdserverpb.KV/Put",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=pb.PutResponse.FromString)
        rng = ch.unary_unary("/etcdserverpb.KV/Range",
                             request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=pb.RangeResponse.FromString)
        put(pb.PutRequest(key=key, value=val), timeout=10)
        r = rng(pb.RangeRequest(key=key), timeout=10)
        if len(r.kvs) != 1 or r.kvs[0].value != val:
            return "get after put returned %r" % (r,)
        return None
    except grpc.RpcError as e:
        return "put/get failed: %s: %s" % (e.code().name, e.details())
    finally:
        ch.close()


# ---------------------------------------------------------------------------
# the checks: name, mode, function(server) -> observation (str)
#   strict: observations must be equal
#   head:   the part before the first ' :: ' must be equal (the rest is
#           grpc-go/Go-protobuf wording or transport detail, printed only)
#   info:   printed only; liveness is what is required
#   candidate-only: input that crashes etcd 3.4.23 itself; sent to the
#           candidate only, which must stay alive and serve
# ---------------------------------------------------------------------------

def pb_put(key, value=b"v"):
    return pb.PutRequest(key=key, value=value).SerializeToString()


def unmarshal_obs(server, method, body):
    r = grpc_raw(server, method, body)
    # grpc-go: "grpc: error unmarshalling request: <Go protobuf's words>"
    code, _, msg = r.partition(": ")
    prefix = "grpc: error unmarshalling request"
    head = prefix if msg.startswith(prefix) else msg
    return "%s %s :: %s" % (code, head if code != "OK" else "", msg)


def txn_ops(n):
    return pb.TxnRequest(success=[
        pb.RequestOp(request_put=pb.PutRequest(key=b"txn/%04d" % i, value=b"x"))
        for i in range(n)]).SerializeToString()


def hanging_preface(server):
    """A client that sends half a preface and then nothing must not stop
    the server from serving others."""
    s = socket.create_connection(("127.0.0.1", server.client_port), 5)
    try:
        s.sendall(PREFACE[:7])
        time.sleep(0.3)
        err = kv_ok(server, "while-hanging")
        return "others served while a preface hangs" if err is None else err
    finally:
        s.close()


def many_garbage_connections(server):
    rnd = random.Random(7)
    for i in range(50):
        try:
            s = socket.create_connection(("127.0.0.1", server.client_port), 5)
            s.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))))
            s.close()
        except OSError:
            pass
    return "50 garbage connections sent"


def lying_length_prefix(server):
    """HEADERS for KV/Put, then a DATA frame whose gRPC length prefix says
    100 bytes but carries 3, with END_STREAM: the stream must be answered
    (trailers or RST_STREAM), not hang."""
    hb = grpc_headers_block(b"/etcdserverpb.KV/Put", server.endpoint.encode())
    data = b"\x00" + struct.pack(">I", 100) + b"abc"
    ev = raw_exchange(server, PREFACE + settings_frame()
                      + h2_frame(1, 0x4, 1, hb) + h2_frame(0, 0x1, 1, data), 3)
    answered = any(e.startswith("HEADERS(1") or e.startswith("RST_STREAM(1")
                   or e.startswith("GOAWAY") for e in ev)
    return "stream answered" if answered else "stream NOT answered: %s" % ev


def compressed_without_encoding(server):
    """gRPC message with the compressed flag set but no grpc-encoding."""
    hb = grpc_headers_block(b"/etcdserverpb.KV/Put", server.endpoint.encode())
    body = pb_put(b"k")
    data = b"\x01" + struct.pack(">I", len(body)) + body
    ev = raw_exchange(server, PREFACE + settings_frame()
                      + h2_frame(1, 0x4, 1, hb) + h2_frame(0, 0x1, 1, data), 3)
    answered = any(e.startswith("HEADERS(1") or e.startswith("RST_STREAM(1")
                   or e.startswith("GOAWAY") for e in ev)
    return "stream answered" if answered else "stream NOT answered: %s" % ev


def garbage_storm_with_clients(server):
    """8 threads throw 40 garbage connections each while a good client does
    100 put/get pairs on its own connection: every good call must succeed."""
    import threading
    stop = threading.Event()

    def storm(seed):
        rnd = random.Random(seed)
        for _ in range(40):
            if stop.is_set():
                return
            try:
                c = socket.create_connection(("127.0.0.1", server.client_port), 5)
                junk = rnd.choice([PREFACE[:rnd.randrange(1, 24)], b"",
                                   PREFACE + bytes(rnd.randrange(256) for _ in range(200)),
                                   bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 2000)))])
                c.sendall(junk)
                c.close()
            except OSError:
                pass

    threads = [threading.Thread(target=storm, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    bad = 0
    try:
        for i in range(100):
            if kv_ok(server, "storm-%d" % i):
                bad += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    return "good client: %d of 100 put/get pairs failed" % bad


def idle_connections(server, n=200):
    """n connections that never send anything (or half a preface) stay open
    while a good client works."""
    socks = []
    try:
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", server.client_port), 5)
            if i % 2:
                c.sendall(PREFACE[:5])
            socks.append(c)
        err = kv_ok(server, "idle")
        return "served with %d idle connections open" % n if err is None else err
    finally:
        for c in socks:
            c.close()


def reset_mid_request(server):
    """HEADERS for KV/Put and half a gRPC message, then RST_STREAM(CANCEL):
    the connection must go on (a PING is still acked)."""
    hb = grpc_headers_block(b"/etcdserverpb.KV/Put", server.endpoint.encode())
    data = b"\x00" + struct.pack(">I", 100) + b"abc"
    ev = raw_exchange(server, PREFACE + settings_frame() + h2_frame(1, 0x4, 1, hb)
                      + h2_frame(0, 0, 1, data) + h2_frame(3, 0, 1, struct.pack(">I", 8))
                      + h2_frame(6, 0, 0, b"pingpong"), 2)
    return " ".join(summarize(ev, {"PING_ACK", "GOAWAY"}))


CHECKS = [
    # raw TCP
    ("tcp: random garbage", "info",
     lambda s: " ".join(raw_exchange(s, bytes(random.Random(1).randrange(256)
                                              for _ in range(4096)), shut_wr=True))),
    ("tcp: HTTP/1.1 garbage request line", "info",
     lambda s: " ".join(raw_exchange(s, b"FROB /\x00\xff HTTP/1.1\r\n\r\n"))),
    ("tcp: 50 short garbage connections", "strict", many_garbage_connections),
    ("tcp: connect and close at once", "strict",
     lambda s: (socket.create_connection(("127.0.0.1", s.client_port), 5).close(), "ok")[1]),
    # HTTP/1.1 (the JSON gateway's side of the port): garbage and abuse
    ("http1: 70 KB header", "info",
     lambda s: " ".join(raw_exchange(s, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000
                                     + b"\r\nConnection: close\r\n\r\n"))),
    ("http1: body shorter than Content-Length, then close", "info",
     lambda s: " ".join(raw_exchange(s, b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 1000\r\n\r\n{\"key\":", 2, shut_wr=True))),
    ("http1: bad chunked encoding", "info",
     lambda s: " ".join(raw_exchange(s, b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\n"
                                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                     b"zz\r\nfoo\r\n0\r\n\r\n"))),
    ("http1: invalid JSON to /v3/kv/put", "info",
     lambda s: " ".join(raw_exchange(s, b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 9\r\nConnection: close\r\n\r\n{\"key\":1}"))),
    ("http1: 1000 pipelined requests", "info",
     lambda s: " ".join(sorted(set(raw_exchange(
         s, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 1000, 2))))),
    ("tcp: garbage storm from 8 threads while a client works", "strict",
     garbage_storm_with_clients),
    ("tcp: 200 idle / half-preface connections", "strict", idle_connections),
    # the HTTP/2 preface
    ("h2: truncated preface, then close", "info",
     lambda s: " ".join(raw_exchange(s, PREFACE[:10], shut_wr=True))),
    ("h2: truncated preface left hanging", "strict", hanging_preface),
    ("h2: preface with a wrong tail", "info",
     lambda s: " ".join(raw_exchange(s, PREFACE[:-4] + b"XXXX"))),
    # a valid preface, then garbage frames (RFC 7540 fixes the errors)
    ("h2: DATA on stream 0", "head",
     lambda s: conn_fate(s, PREFACE + settings_frame() + h2_frame(0, 0, 0, b"xx"))),
    ("h2: frame longer than SETTINGS_MAX_FRAME_SIZE", "head",
     lambda s: conn_fate(s, PREFACE + settings_frame() + h2_frame(0, 0, 1, b"\0" * 20000))),
    ("h2: HEADERS with a garbage HPACK block", "head",
     lambda s: conn_fate(s, PREFACE + settings_frame() + h2_frame(1, 0x5, 1, b"\xff" * 16))),
    ("h2: SETTINGS with a bad length", "head",
     lambda s: conn_fate(s, PREFACE + settings_frame() + h2_frame(4, 0, 0, b"\0\0\0"))),
    ("h2: WINDOW_UPDATE of 0 on the connection", "head",
     lambda s: conn_fate(s, PREFACE + settings_frame() + h2_frame(8, 0, 0, b"\0\0\0\0"))),
    ("h2: unknown frame type is ignored (PING still acked)", "strict",
     lambda s: " ".join(summarize(raw_exchange(
         s, PREFACE + settings_frame() + h2_frame(0xEE, 0, 0, b"junk")
         + h2_frame(6, 0, 0, b"12345678"), 2), {"PING_ACK", "GOAWAY"}))),
    ("h2: random bytes after the preface", "info",
     lambda s: " ".join(summarize(raw_exchange(
         s, PREFACE + bytes(random.Random(2).randrange(256) for _ in range(2048))),
         {"GOAWAY", "EOF", "RESET", "TIMEOUT"}))),
    ("grpc: length prefix longer than the message", "strict", lying_length_prefix),
    ("grpc: RST_STREAM in the middle of a request", "strict", reset_mid_request),
    ("grpc: compressed flag without grpc-encoding", "strict", compressed_without_encoding),
    # malformed protobuf bodies (valid gRPC framing)
    ("protobuf: truncated varint tag", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Put", b"\xff")),
    ("protobuf: length past the end", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Put", b"\x0a\x10abc")),
    ("protobuf: tag without value", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Put", b"\x0a")),
    ("protobuf: field number 0", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Put", b"\x00\x01")),
    ("protobuf: wrong wire type for key", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Put", b"\x08\x01")),
    ("protobuf: garbage Range", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Range", b"\xff\xff\xff\xff")),
    ("protobuf: garbage Txn", "head",
     lambda s: unmarshal_obs(s, "/etcdserverpb.KV/Txn", b"\x0a\x05\x0a\x03")),
    ("protobuf: unknown field only (then: empty key)", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", b"\xa0\x06\x01")),
    ("protobuf: unknown fields are skipped", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put",
                        pb_put(b"bad-input/unknown-field") + b"\xa0\x06\x01\xaa\x06\x02hi")),
    ("protobuf: empty body Put (empty key)", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", b"")),
    # empty keys
    ("empty key: Put", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b""))),
    ("empty key: Range", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Range", pb.RangeRequest().SerializeToString())),
    ("empty key: DeleteRange", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/DeleteRange",
                        pb.DeleteRangeRequest().SerializeToString())),
    ("empty key: inside a Txn", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(success=[
         pb.RequestOp(request_put=pb.PutRequest(key=b"", value=b"v"))]).SerializeToString())),
    # request size limits
    ("size: 1.4 MiB put is accepted", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"bad-input/big", b"a" * (1400 * 1024)))),
    ("size: 1.5 MiB + 1 put: request is too large", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"bad-input/big", b"a" * (3 * MIB // 2 + 1)))),
    ("size: 1.9 MiB put: request is too large", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"bad-input/big", b"a" * (1900 * 1024)))),
    ("size: 2 MiB + 1 (over max + 512 KiB): RESOURCE_EXHAUSTED", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"bad-input/big", b"a" * (2 * MIB + 1)))),
    ("size: 8 MiB put: RESOURCE_EXHAUSTED", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"bad-input/big", b"a" * (8 * MIB)))),
    ("size: 1.6 MiB txn: request is too large", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(success=[
         pb.RequestOp(request_put=pb.PutRequest(key=b"t%d" % i, value=b"b" * (400 * 1024)))
         for i in range(4)]).SerializeToString())),
    # unknown methods and services
    ("unknown method on KV", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Frobnicate", b"")),
    ("unknown service", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.Nope/Range", b"")),
    ("unknown package", "strict",
     lambda s: grpc_raw(s, "/no.such.Service/Method", b"")),
    ("malformed method path", "head",
     lambda s: grpc_raw(s, "/justone", b"")),
    # etcd 3.4.23 panics (the whole server exits) on a Range with an unknown
    # sort_target; nothing to compare with, the candidate must just survive.
    ("Range with an unknown sort_target (crashes etcd 3.4.23)", "candidate-only",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Range", pb.RangeRequest(
         key=b"a", range_end=b"\0", sort_target=9,
         sort_order=pb.RangeRequest.DESCEND).SerializeToString())),
    ("Txn with a Range with an unknown sort_target (crashes etcd 3.4.23)",
     "candidate-only",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(success=[
         pb.RequestOp(request_range=pb.RangeRequest(key=b"a", sort_target=42,
                                                    sort_order=pb.RangeRequest.ASCEND))
     ]).SerializeToString())),
    # txn op limit
    ("txn: 128 ops accepted", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", txn_ops(128))),
    ("txn: 129 ops refused", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", txn_ops(129))),
    ("txn: 1000 ops in failure branch refused", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(failure=[
         pb.RequestOp(request_range=pb.RangeRequest(key=b"f%d" % i)) for i in range(1000)
     ]).SerializeToString())),
    ("txn: 129 compares refused", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(compare=[
         pb.Compare(key=b"c%d" % i, target=pb.Compare.VERSION, result=pb.Compare.EQUAL)
         for i in range(129)]).SerializeToString())),
    ("txn: nested txn over the limit", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(success=[
         pb.RequestOp(request_txn=pb.TxnRequest(success=[
             pb.RequestOp(request_range=pb.RangeRequest(key=b"n%d" % i)) for i in range(129)]))
     ]).SerializeToString())),
]


# Phase 2: non-default limits, to see that the flags are honoured.
LIMIT_FLAGS = ["--max-request-bytes=10000", "--max-txn-ops=4"]
LIMIT_CHECKS = [
    ("--max-request-bytes=10000: 9000-byte put accepted", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"lim/a", b"a" * 9000))),
    ("--max-request-bytes=10000: 10001-byte value refused", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"lim/a", b"a" * 10001))),
    ("--max-request-bytes=10000: 520 KiB put still only too large", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"lim/a", b"a" * (520 * 1024)))),
    ("--max-request-bytes=10000: 600 KiB put: RESOURCE_EXHAUSTED", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Put", pb_put(b"lim/a", b"a" * (600 * 1024)))),
    ("--max-request-bytes=10000: a 20 KB Range is served (only proposals are limited)", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Range",
                        pb.RangeRequest(key=b"k" * 20000).SerializeToString())),
    ("--max-txn-ops=4: 4 ops accepted", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", txn_ops(4))),
    ("--max-txn-ops=4: 5 ops refused", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", txn_ops(5))),
    ("--max-txn-ops=4: 5 compares refused", "strict",
     lambda s: grpc_raw(s, "/etcdserverpb.KV/Txn", pb.TxnRequest(compare=[
         pb.Compare(key=b"c%d" % i, target=pb.Compare.VERSION, result=pb.Compare.EQUAL)
         for i in range(5)]).SerializeToString())),
]


def run_checks(checks, ref_bin, cand_bin, extra, deadline):
    """Start etcd and the candidate with the extra flags, run the checks;
    return (passed, failed)."""
    ref = dt.Server(ref_bin, name="bad", token="bad-token", label="ref", extra_args=extra)
    cand = dt.Server(cand_bin, name="bad", token="bad-token", label="cand",
                     extra_args=extra)
    passed = failed = 0
    try:
        ref.start()
        try:
            cand.start()
        except dt.ServerError as e:
            print("FAIL candidate did not start with %s: %s" % (" ".join(extra) or
                                                             "default flags", e))
            return 0, len(checks)
        for i, (name, mode, fn) in enumerate(checks):
            if time.time() > deadline:
                print("FAIL time budget (BAD_BUDGET_S) used up; %d checks not run"
                      % (len(checks) - i))
                failed += len(checks) - i
                break
            problems = []
            obs = {}
            for label, srv in (("etcd", ref), ("cetcd", cand)):
                if mode == "candidate-only" and label == "etcd":
                    obs[label] = "(not sent to etcd)"
                    continue
                try:
                    obs[label] = fn(srv)
                except Exception as e:
                    obs[label] = "EXCEPTION %s: %s" % (type(e).__name__, e)
                time.sleep(0.05)
                if not srv.alive():
                    problems.append("%s DIED (status %s); log tail:\n%s"
                                    % (label, srv.proc.returncode, srv.log_tail(15)))
                    if label == "cetcd":
                        try:   # keep going with the remaining checks
                            srv.start(timeout=30)
                        except dt.ServerError as e:
                            problems.append("cetcd did not restart: %s" % e)
                    continue
                err = kv_ok(srv, "%d" % i)
                if err:
                    problems.append("%s not serving afterwards: %s" % (label, err))
            a, b = obs["etcd"], obs["cetcd"]
            if mode == "strict" and a != b:
                problems.append("etcd: %r\n      cetcd: %r" % (a, b))
            elif mode == "head" and a.split(" :: ")[0] != b.split(" :: ")[0]:
                problems.append("code differs\n      etcd: %r\n      cetcd: %r" % (a, b))
            if problems:
                failed += 1
                print("FAIL [%s] %s" % (mode, name))
                for p in problems:
                    print("      " + p)
            else:
                passed += 1
                print("ok   [%s] %s: %s%s" % (mode, name, a[:150],
                                              "" if a == b else "  (cetcd: %s)" % b[:150]))
            sys.stdout.flush()
    finally:
        ref.cleanup()
        cand.cleanup()
    return passed, failed


def main():
    ref_bin = dt.reference_binary()
    cand_bin = dt.resolve_binary(os.environ.get("BAD_CANDIDATE", "cetcd"))
    print("reference: %s  candidate: %s" % (ref_bin, cand_bin), flush=True)
    deadline = time.time() + float(os.environ.get("BAD_BUDGET_S", "500"))
    p1, f1 = run_checks(CHECKS, ref_bin, cand_bin, [], deadline)
    print("-- with %s" % " ".join(LIMIT_FLAGS), flush=True)
    p2, f2 = run_checks(LIMIT_CHECKS, ref_bin, cand_bin, LIMIT_FLAGS, deadline)
    print("%d passed, %d failed" % (p1 + p2, f1 + f2))
    return 1 if f1 + f2 else 0


if __name__ == "__main__":
    sys.exit(main())
