"""Shared helpers for cetcd's integration tests (not a test by itself).

What lives here:
  * free_port() / Server: start etcd or cetcd with etcd 3.4's flags on
    loopback ports picked free, in a fresh temporary directory, wait until it
    serves, stop it by pid (also at interpreter exit), remove the directory.
  * etcdctl(): run the stock etcdctl 3.4 against one endpoint and capture
    (exit code, stdout bytes, stderr bytes).
  * parse_case_file() / run_case_file(): the differential test's case format
    and runner (see cases/README for the format).
  * mask(): hide what legitimately differs between two runs (ports, times,
    client UUIDs, and -- only when they differ -- cluster/member ids).

Which server binaries are used:
  reference  = `etcd` on PATH (override: DIFF_REFERENCE=/path/to/bin)
  candidate  = $CETCD_BIN/cetcd (override: DIFF_CANDIDATE=/path or "etcd")
The value "etcd" anywhere means the etcd found on PATH, which is how the
harness validates itself (both sides etcd: everything must match).
"""

import atexit
import difflib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"

# Every server started by this process, so an exception anywhere still stops
# them (atexit) -- nothing may be left running after a test.
_LIVE = []


def _stop_all():
    for s in list(_LIVE):
        try:
            s.stop(kill=True)
        except Exception:
            pass
        try:
            s.cleanup()
        except Exception:
            pass


atexit.register(_stop_all)


def _on_signal(signum, frame):
    _stop_all()
    sys.exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except Exception:
        pass


def resolve_binary(spec):
    """'etcd' -> the etcd on PATH; 'cetcd' -> $CETCD_BIN/cetcd; else a path."""
    if spec == "etcd":
        p = shutil.which("etcd")
        if not p:
            raise RuntimeError("etcd not found on PATH")
        return p
    if spec == "cetcd":
        return os.path.join(os.environ.get("CETCD_BIN", "build/bin"), "cetcd")
    return spec


def reference_binary():
    return resolve_binary(os.environ.get("DIFF_REFERENCE", "etcd"))


def candidate_binary():
    return resolve_binary(os.environ.get("DIFF_CANDIDATE", "cetcd"))


def free_port():
    """A loopback TCP port nobody listens on right now (bind port 0)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def free_ports(n):
    """n distinct free ports (all held open while picking, so no repeats)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def clean_env():
    """The environment for etcdctl/servers: no stray ETCD_*/ETCDCTL_* vars."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ETCDCTL_") and not k.startswith("ETCD_")}
    env["ETCDCTL_API"] = "3"
    return env


class ServerError(Exception):
    pass


class Server:
    """One etcd-compatible server process (etcd or cetcd, identical flags).

    name/token/advertise_peer_port decide the member and cluster ids (etcd
    hashes the advertised peer URLs and the cluster token), so two servers
    given the same three values should report the same ids even though they
    listen on different ports.  The advertised peer URL of a single-member
    cluster is never dialled, so it may name a port nobody listens on.
    """

    def __init__(self, binary, name="difftest", token="difftest-token",
                 advertise_peer_port=None, extra_args=(), label=None):
        self.binary = binary
        self.name = name
        self.token = token
        self.client_port, self.peer_port = free_ports(2)
        self.advertise_peer_port = advertise_peer_port or self.peer_port
        self.extra_args = list(extra_args)
        self.label = label or os.path.basename(binary)
        self.tmpdir = tempfile.mkdtemp(prefix="cetcd-it-%s-" % self.label)
        self.data_dir = os.path.join(self.tmpdir, "data")
        self.log_path = os.path.join(self.tmpdir, "server.log")
        self.proc = None
        self._log_offset = 0
        _LIVE.append(self)

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    @property
    def url(self):
        return "http://" + self.endpoint

    def args(self):
        cu = "http://127.0.0.1:%d" % self.client_port
        pu = "http://127.0.0.1:%d" % self.peer_port
        apu = "http://127.0.0.1:%d" % self.advertise_peer_port
        return [self.binary,
                "--name", self.name,
                "--data-dir", self.data_dir,
                "--listen-client-urls", cu,
                "--advertise-client-urls", cu,
                "--listen-peer-urls", pu,
                "--initial-advertise-peer-urls", apu,
                "--initial-cluster", "%s=%s" % (self.name, apu),
                "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new"] + self.extra_args

    def start(self, wait=True, timeout=30):
        """Start (or restart on the same data dir) and wait until it serves."""
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError("%s already running" % self.label)
        if not os.path.exists(self.binary):
            raise ServerError("server binary %s does not exist" % self.binary)
        self._log_offset = (os.path.getsize(self.log_path)
                            if os.path.exists(self.log_path) else 0)
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.args(), stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, cwd=self.tmpdir, env=clean_env(),
                start_new_session=True)
        finally:
            logf.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def log_since_start(self):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_since_start().splitlines()[-n:])

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=30):
        """Ready = the log says 'ready to serve client requests', the client
        port accepts TCP, and a read through etcdctl succeeds.  A read
        (`get`) is used, not `endpoint health` (which needs more services)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise ServerError("%s exited with status %s before serving; log:\n%s"
                                  % (self.label, self.proc.returncode, self.log_tail()))
            if "ready to serve client requests" in self.log_since_start() \
                    and self.tcp_ok():
                rc, _, _ = etcdctl(self.endpoint, ["get", "__difftest_probe__"],
                                   timeout=10)
                if rc == 0:
                    return
            time.sleep(0.05)
        raise ServerError("%s did not become ready in %ss; log:\n%s"
                          % (self.label, timeout, self.log_tail()))

    def tcp_ok(self):
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), 0.5):
                return True
        except OSError:
            return False

    def kill9(self):
        """kill -9 by pid, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, kill=False, timeout=10):
        """SIGTERM (or SIGKILL), by pid.  Returns False if SIGTERM did not
        stop it within timeout and SIGKILL had to."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        os.kill(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return False

    def cleanup(self):
        self.stop(kill=True)
        if self.tmpdir and os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self in _LIVE:
            _LIVE.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False


def etcdctl(endpoint, args, stdin=b"", timeout=30):
    """Run `etcdctl --endpoints=<endpoint> <args>`; return (rc, out, err).
    args may mix str and bytes (bytes pass through to argv unchanged).
    rc is the string 'TIMEOUT' if etcdctl had to be killed."""
    argv = [ETCDCTL, "--endpoints=" + endpoint] + list(args)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    try:
        p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=clean_env(),
                           timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        return "TIMEOUT", e.stdout or b"", e.stderr or b""


# ---------------------------------------------------------------------------
# Case files
# ---------------------------------------------------------------------------
#
# One etcdctl invocation per line: the arguments after
# `etcdctl --endpoints=...`, split like a POSIX shell (shlex).
#   # comment            blank lines and lines starting with # are ignored
#   put k v              plain command, empty stdin
#   txn <<EOF            here-doc: the following lines, up to a line that is
#   ...                  exactly EOF, each with a trailing newline, are stdin
#   EOF                  (any word works as the terminator: <<END ... END)
#   put k <<< EXPR       stdin is the Python expression EXPR (str or bytes),
#                        e.g.  put bin <<< b"\x00\xff"   put big <<< "x"*100000
#   !py EXPR             argv is the Python expression EXPR: a list of str or
#                        bytes, for arguments a shell line can't say, e.g.
#                        !py ["put", b"\xc3(", "v"]
#   !py EXPR <<< EXPR2   both
#   @sleep SECONDS       pause (on both sides), e.g. after compaction
#   @restart             stop both servers (SIGTERM) and start them again on
#                        the same data dirs and ports
#   @kill9               the same with kill -9: what follows reads recovered
#                        state
#   @grpc METHOD EXPR    a raw KV call etcdctl 3.4 cannot make (min/max
#                        revision filters, lease compares, nested txns,...):
#                        METHOD is Range|Put|DeleteRange|Txn|Compact, EXPR a
#                        Python expression building the request with `pb`
#                        (etcd3.etcdrpc.rpc_pb2), e.g.
#                        @grpc Range pb.RangeRequest(key=b"a", min_mod_revision=5)
#                        The "output" compared is the response in protobuf
#                        text format, or the gRPC status code and message.

class Case:
    def __init__(self, lineno, args, stdin, text):
        self.lineno = lineno
        self.args = args      # list of str/bytes
        self.stdin = stdin    # bytes
        self.text = text      # the source line(s), for messages
        self.sleep = None
        self.grpc = None      # (method, expr) for @grpc lines
        self.directive = None  # "restart" | "kill9" for @restart / @kill9


# what case-file expressions may call (they are test data, not a sandbox)
_EVAL_BUILTINS = {"range": range, "bytes": bytes, "str": str, "len": len,
                  "list": list, "reversed": reversed}


def _eval(expr, where):
    try:
        return eval(expr, {"__builtins__": _EVAL_BUILTINS}, {})
    except Exception as e:
        raise ValueError("%s: bad expression %r: %s" % (where, expr, e))


def _to_bytes(v):
    return v if isinstance(v, bytes) else str(v).encode("utf-8")


def parse_case_file(path):
    cases = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        lineno = i + 1
        i += 1
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = "%s:%d" % (os.path.basename(path), lineno)
        if s.startswith("@sleep"):
            c = Case(lineno, [], b"", s)
            c.sleep = float(s.split()[1])
            cases.append(c)
            continue
        if s in ("@restart", "@kill9"):
            c = Case(lineno, [], b"", s)
            c.directive = s[1:]
            cases.append(c)
            continue
        if s.startswith("@grpc "):
            _, method, expr = s.split(None, 2)
            c = Case(lineno, [], b"", s)
            c.grpc = (method, expr)
            cases.append(c)
            continue
        stdin = b""
        text = s
        m = re.search(r"\s<<([A-Za-z_]+)$", s)
        if m:
            term = m.group(1)
            s = s[:m.start()]
            body = []
            while True:
                if i >= len(lines):
                    raise ValueError("%s: here-doc not terminated by %s" % (where, term))
                l2 = lines[i]
                i += 1
                if l2 == term:
                    break
                body.append(l2 + "\n")
            stdin = "".join(body).encode("utf-8")
            text = text + "\n" + "".join(body) + term
        elif " <<< " in s:
            s, expr = s.split(" <<< ", 1)
            stdin = _to_bytes(_eval(expr, where))
        if s.startswith("!py "):
            args = _eval(s[4:], where)
            if not isinstance(args, list):
                raise ValueError("%s: !py needs a list" % where)
        else:
            args = shlex.split(s)
        cases.append(Case(lineno, args, stdin, text))
    return cases


# ---------------------------------------------------------------------------
# Raw gRPC (for @grpc case lines and the bad-input test)
# ---------------------------------------------------------------------------

_KV_METHODS = {"Range": "RangeResponse", "Put": "PutResponse",
               "DeleteRange": "DeleteRangeResponse", "Txn": "TxnResponse",
               "Compact": "CompactionResponse"}
_channels = {}


def rpc_pb2():
    from etcd3.etcdrpc import rpc_pb2 as pb
    return pb


def channel(endpoint):
    import grpc
    ch = _channels.get(endpoint)
    if ch is None:
        ch = grpc.insecure_channel(endpoint, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)])
        _channels[endpoint] = ch
    return ch


def close_channel(endpoint):
    ch = _channels.pop(endpoint, None)
    if ch is not None:
        ch.close()


def grpc_kv(endpoint, method, expr, timeout=10):
    """Run one KV call; return (rc, out, err) like etcdctl(): rc 0 and the
    response in text format, or rc 1 and 'StatusCode.X: message'."""
    import grpc
    from google.protobuf import text_format
    pb = rpc_pb2()
    req = eval(expr, {"__builtins__": _EVAL_BUILTINS, "pb": pb})
    resp_cls = getattr(pb, _KV_METHODS[method])
    call = channel(endpoint).unary_unary(
        "/etcdserverpb.KV/" + method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=resp_cls.FromString)
    try:
        resp = call(req, timeout=timeout)
    except grpc.RpcError as e:
        return 1, b"", ("%s: %s\n" % (e.code(), e.details())).encode()
    return 0, text_format.MessageToString(resp, as_utf8=False).encode(), b""


# ---------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_VOLATILE = [
    # zap JSON log lines printed by clientv3 on retried errors
    (re.compile(rb'"ts":"[^"]*"'), b'"ts":"<TS>"'),
    (re.compile(rb'client-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'),
     b"client-<UUID>"),
    # grpclog lines under --debug: "INFO: 2026/11/23 22:21:47 [core]..."
    (re.compile(rb"^(INFO|WARNING|ERROR): \d{4}/\d\d/\d\d \d\d:\d\d:\d\d(\.\d+)?",
                re.M), rb"\1: <TIME>"),
]


def mask(data, server, ids=None):
    """Hide what may differ between two servers that behave identically:
    the ports they listen on, times, client UUIDs; ids (if given: a dict
    with cluster_id/member_id ints) in decimal, hex and protobuf varint form;
    the one --debug grpclog line whose presence is a race in etcdctl itself
    (see _drop_racy_grpclog)."""
    for port, tag in ((server.client_port, b"CLIENT_PORT"),
                      (server.peer_port, b"PEER_PORT")):
        data = re.sub(rb"(127\.0\.0\.1|localhost):%d(?![0-9])" % port,
                      rb"\1:<" + tag + b">", data)
    for rx, rep in _VOLATILE:
        data = rx.sub(rep, data)
    if ids:
        data = _pb_mask_header(data, ids)
        for field, (tag, pbtag) in (("cluster_id", (b"CLUSTER_ID", 0x08)),
                                    ("member_id", (b"MEMBER_ID", 0x10))):
            v = ids.get(field)
            if not v:
                continue
            data = re.sub(rb"(?<![0-9])%d(?![0-9])" % v, b"<" + tag + b">", data)
            data = re.sub(rb"(?<![0-9a-f])%x(?![0-9a-f])" % v, b"<" + tag + b">", data)
    return _sort_grpclog_runs(_drop_racy_grpclog(data))


def _read_varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def _pb_mask_header(data, ids):
    """-w protobuf output starts with field 1, the ResponseHeader, whose
    fields 1 and 2 are cluster_id and member_id.  Rewrite those two to 1 (and
    re-frame the header, whose length depends on the ids' varint sizes).
    Anything that does not parse that way is left alone."""
    if not data.startswith(b"\x0a"):
        return data
    try:
        n, p = _read_varint(data, 1)
        hdr, rest = data[p:p + n], data[p + n:]
        if len(hdr) != n:
            return data
        out, q = bytearray(), 0
        while q < len(hdr):
            tag, q2 = _read_varint(hdr, q)
            if tag & 7 != 0:
                return data
            v, q3 = _read_varint(hdr, q2)
            if tag >> 3 == 1 and v == ids.get("cluster_id") or \
                    tag >> 3 == 2 and v == ids.get("member_id"):
                v = 1
            out += _varint(tag) + _varint(v)
            q = q3
        return b"\x0a" + _varint(len(out)) + bytes(out) + rest
    except IndexError:
        return data


_GRPCLOG = re.compile(rb"^(INFO|WARNING|ERROR): <TIME> ")

# etcdctl --debug's last grpclog line, "Channel Connectivity change to READY",
# is a race inside etcdctl itself, whatever the server: grpc-go (1.33,
# balancer_conn_wrappers.go ccBalancerWrapper.UpdateState) first installs the
# READY picker, which releases the waiting RPC, and only then logs the
# channel's new state from the balancer goroutine.  On a loaded machine the
# RPC completes, etcdctl prints its result and exits before that line is
# written (or the line lands after the result on stderr): measured against
# one etcd 3.4 with 4 CPU burners, 2 runs in 300 lacked it, and debug.txt
# failed in 4 runs of 30 with etcd on both sides.  With one endpoint
# and pick_first, the channel is READY exactly when its one subchannel is, and
# "Subchannel Connectivity change to READY" is logged before the picker is
# installed (so it is always there and still compared); given that line the
# channel's line says nothing more, and is dropped from both sides.
_CHANNEL_READY = re.compile(rb"^INFO: <TIME> \[core\]Channel Connectivity change to READY\n",
                            re.M)
_SUBCHANNEL_READY = re.compile(
    rb"^INFO: <TIME> \[core\]Subchannel Connectivity change to READY$", re.M)


def _drop_racy_grpclog(data):
    if _SUBCHANNEL_READY.search(data):
        data = _CHANNEL_READY.sub(b"", data)
    return data


def _sort_grpclog_runs(data):
    """grpc-go's --debug log lines come from several goroutines, so their
    order varies from run to run even against the same server.  Sort each run
    of consecutive grpclog lines: their content is still compared."""
    if b"<TIME>" not in data:
        return data
    lines = data.split(b"\n")
    out, run = [], []
    for l in lines:
        if _GRPCLOG.match(l):
            run.append(l)
            continue
        out.extend(sorted(run))
        run = []
        out.append(l)
    out.extend(sorted(run))
    return b"\n".join(out)


def server_ids(server):
    """(cluster_id, member_id, raft_term) from a `-w json get` header."""
    import json
    rc, out, err = etcdctl(server.endpoint, ["-w", "json", "get", "__difftest_probe__"])
    if rc != 0:
        raise ServerError("%s: ids probe failed rc=%s: %s" % (server.label, rc, err))
    # etcd's JSON has uint64 ids that json.loads keeps exact (Python ints)
    h = json.loads(out)["header"]
    return {"cluster_id": h.get("cluster_id", 0), "member_id": h.get("member_id", 0),
            "raft_term": h.get("raft_term", 0)}


def _show(b):
    """bytes -> text lines for a diff; non-UTF-8 bytes escaped."""
    t = b.decode("utf-8", "backslashreplace")
    printable = all(ch.isprintable() or ch in "\n\t" for ch in t)
    if printable:
        return t.splitlines(keepends=True) or [""]
    # binary (e.g. -w protobuf): a hex dump, 16 bytes a line
    return ["%04x: %s  %r\n" % (o, b[o:o + 16].hex(" "), b[o:o + 16])
            for o in range(0, len(b), 16)] or [""]


def _clip(line, n=400):
    if len(line) <= n:
        return line
    return line[:n] + "...(%d more chars)\n" % (len(line) - n)


def _first_difference(x, y):
    i = 0
    while i < min(len(x), len(y)) and x[i] == y[i]:
        i += 1
    lo = max(0, i - 60)
    return ("    first difference at byte %d:\n      etcd : %r\n      cetcd: %r\n"
            % (i, x[lo:i + 60], y[lo:i + 60]))


def diff_result(a, b, label_a, label_b):
    """Unified diff of two (rc, out, err) triples; '' when identical."""
    if a == b:
        return ""
    out = []
    for name, x, y in (("exit code", [str(a[0]) + "\n"], [str(b[0]) + "\n"]),
                       ("stdout", _show(a[1]), _show(b[1])),
                       ("stderr", _show(a[2]), _show(b[2]))):
        if x != y:
            out.append("  --- %s differs:\n" % name)
            for l in difflib.unified_diff(x, y, label_a, label_b, lineterm="\n"):
                out.append("    " + _clip(l if l.endswith("\n") else l + "\n"))
            if name != "exit code":
                k = 1 if name == "stdout" else 2
                out.append(_first_difference(a[k], b[k]))
    return "".join(out)


def judge_step(n, kind, what, masked, fails):
    """One step of a step-list differential test: diffs etcd's (masked[0])
    and cetcd's (masked[1]) (rc, out, err), appends a failure to `fails`,
    prints the reference's output with DIFF_SHOW. True when identical."""
    d = diff_result(masked[0], masked[1], "etcd", "cetcd")
    if d:
        fails.append("step %d (%s %s):\n%s" % (n, kind, what, d))
    if os.environ.get("DIFF_SHOW"):
        print(">>> %d %s %s [rc=%s]\n%s%s" % (n, kind, what, masked[0][0],
                                             masked[0][1].decode(errors="replace"),
                                             masked[0][2].decode(errors="replace")))
    return not d


def fmt_args(args):
    return " ".join(shlex.quote(a) if isinstance(a, str) else repr(a) for a in args)
