/*
 * client.h -- cetcd's gRPC client: HTTP/2 over nghttp2 (cleartext h2c, or
 * TLS with ALPN h2), messages encoded with protobuf-c. Used by cetcd-bench
 * and cetcdctl.
 *
 * DESIGN
 *
 * A cc_loop is one epoll event loop and everything attached to it: its
 * connections, their nghttp2 sessions and the calls in flight on them. A
 * loop is driven by exactly one thread at a time (the caller of
 * cc_loop_run_once / cc_unary_sync); nothing in this library takes a lock,
 * and no object may be touched from another thread while a loop runs. To use
 * several cores, make one loop per thread and give each its own connections.
 *
 * A connection speaks HTTP/2 with prior knowledge (no Upgrade), which is
 * what grpc-go servers (etcd) accept on an http:// URL; https:// adds TLS
 * (OpenSSL, ALPN h2) underneath (see cc_conn_open_tls). Any number of
 * calls share one connection as HTTP/2 streams; a call never waits for
 * another one to finish (nghttp2 queues streams beyond the server's
 * SETTINGS_MAX_CONCURRENT_STREAMS). The receive windows are large (stream
 * 16 MiB, connection 1 GiB) so that flow control never paces a benchmark.
 *
 * One loop turn: epoll_wait; read every readable socket and feed nghttp2;
 * deliver the messages and completions that this produced (callbacks run
 * here, outside nghttp2's own callbacks, so they may start new calls
 * freely); then, for every connection with something to send, gather all
 * pending frames into the connection's output buffer and write it with one
 * send(2) (MSG_NOSIGNAL: a vanished server never raises SIGPIPE). Requests
 * submitted in a callback therefore leave in the same turn, batched.
 *
 * Calls are pooled per loop: a finished call's struct and its send/receive
 * buffers are kept for the next call, so a steady stream of requests does no
 * malloc in this library (nghttp2 still allocates its per-stream state).
 * Requests are packed by protobuf-c directly into the call's buffer.
 *
 * A broken connection fails every call on it with UNAVAILABLE and refuses
 * new ones the same way; there is no automatic reconnect (yet).
 *
 * OWNERSHIP
 *
 * - cc_loop_new / cc_loop_free: the caller owns the loop; freeing it closes
 *   its connections and fails nothing (callbacks of calls still in flight
 *   are not called).
 * - cc_conn_open returns a connection owned by the loop; cc_conn_close may
 *   be called to close it early (its calls complete with CANCELLED).
 * - Request messages are only read during the call that takes them; the
 *   caller keeps ownership.
 * - Data and message pointers handed to callbacks (cc_reply) are valid only
 *   until the callback returns; copy what must be kept.
 * - Calls in flight are bounded by the caller (each holds a pooled struct
 *   and buffers until it completes); the library does not queue beyond
 *   what nghttp2 queues for the server's stream limit.
 * - A cc_stream handle is valid from cc_stream_open until its on_close
 *   callback returns.
 */
#ifndef CETCD_CLI_CLIENT_H
#define CETCD_CLI_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* gRPC status codes this library produces itself (the server's codes are
 * passed through unchanged). */
enum {
  CC_STATUS_OK = 0,
  CC_STATUS_CANCELLED = 1,
  CC_STATUS_UNKNOWN = 2,
  CC_STATUS_DEADLINE_EXCEEDED = 4,
  CC_STATUS_RESOURCE_EXHAUSTED = 8,
  CC_STATUS_UNIMPLEMENTED = 12,
  CC_STATUS_INTERNAL = 13,
  CC_STATUS_UNAVAILABLE = 14,
};

/* Paths of etcd's v3 methods (":path" of the HTTP/2 request). */
#define CC_PATH_RANGE "/etcdserverpb.KV/Range"
#define CC_PATH_PUT "/etcdserverpb.KV/Put"
#define CC_PATH_DELETE_RANGE "/etcdserverpb.KV/DeleteRange"
#define CC_PATH_TXN "/etcdserverpb.KV/Txn"
#define CC_PATH_COMPACT "/etcdserverpb.KV/Compact"
#define CC_PATH_WATCH "/etcdserverpb.Watch/Watch"
#define CC_PATH_LEASE_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define CC_PATH_LEASE_REVOKE "/etcdserverpb.Lease/LeaseRevoke"
#define CC_PATH_LEASE_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define CC_PATH_LEASE_TTL "/etcdserverpb.Lease/LeaseTimeToLive"
#define CC_PATH_LEASE_LEASES "/etcdserverpb.Lease/LeaseLeases"

typedef struct cc_loop cc_loop;
typedef struct cc_conn cc_conn;
typedef struct cc_call cc_stream; /* a bidirectional streaming call */

/* The outcome of a unary call, or the close of a stream. */
typedef struct cc_reply {
  int status;          /* gRPC status code (0 = OK) */
  const char *message; /* grpc-message, percent-decoded, NUL-terminated; "" if none */
  const uint8_t *data; /* the response message (unary, OK only), else NULL */
  size_t len;          /* its length in bytes */
} cc_reply;

/* Called once per unary call, from the loop's thread, during a loop turn. */
typedef void (*cc_unary_cb)(void *ud, const cc_reply *reply);
/* Called for each message a stream receives (data valid during the call). */
typedef void (*cc_stream_msg_cb)(void *ud, const uint8_t *data, size_t len);
/* Called once when a stream ends (reply->data is NULL). */
typedef void (*cc_stream_close_cb)(void *ud, const cc_reply *reply);

/* ---- loop ---------------------------------------------------------------- */

/* Returns NULL on failure (errno set). */
cc_loop *cc_loop_new(void);
void cc_loop_free(cc_loop *loop);

/* One loop turn, waiting at most timeout_ms for I/O (-1: until something
 * happens; 0: poll). Returns the number of callbacks delivered, or -1 if
 * epoll failed. Must not be called from inside a callback. */
int cc_loop_run_once(cc_loop *loop, int timeout_ms);

/* Calls (unary and streams) in flight on the loop. */
size_t cc_loop_inflight(const cc_loop *loop);

/* ---- connections ----------------------------------------------------------- */

/* Starts a non-blocking connect to `endpoint` ("http://host:port",
 * "https://host:port" or "host:port"). Calls may be started at once; they
 * are sent when the connection is up (after the TLS handshake for https).
 * Returns NULL, with a reason in err (if err != NULL), when the endpoint
 * does not parse or resolve, or the TLS files cannot be loaded. */
cc_conn *cc_conn_open(cc_loop *loop, const char *endpoint, char *err, size_t err_len);

/* TLS settings, as etcdctl's --cacert, --cert, --key,
 * --insecure-skip-tls-verify. The strings are only read during the call. */
typedef struct cc_tls_opts {
  const char *ca_file;      /* PEM CA bundle to trust; NULL: the system's */
  const char *cert_file;    /* client certificate chain (PEM), optional */
  const char *key_file;     /* its private key (PEM) */
  const char *server_name;  /* name to verify instead of the endpoint's host */
  int insecure_skip_verify; /* do not verify the server's certificate */
} cc_tls_opts;

/* As cc_conn_open, with TLS settings. With tls != NULL a "host:port"
 * endpoint uses TLS too; "http://" always means cleartext. TLS negotiates
 * ALPN h2 (grpc-go requires it) and verifies the certificate and host name
 * (an IP endpoint against the certificate's IP SANs). Because OpenSSL writes
 * with write(2), the first TLS connection sets SIGPIPE to SIG_IGN if it was
 * SIG_DFL. */
cc_conn *cc_conn_open_tls(cc_loop *loop, const char *endpoint, const cc_tls_opts *tls,
                          char *err, size_t err_len);

/* Closes the connection; its calls complete with CANCELLED during the next
 * loop turn. The handle is invalid afterwards. */
void cc_conn_close(cc_conn *conn);

/* 1 while the connection is usable (connecting or connected), 0 once it has
 * failed, was closed, or the server sent GOAWAY. */
int cc_conn_ok(const cc_conn *conn);

enum { CC_CONN_CONNECTING = 0, CC_CONN_READY = 1, CC_CONN_FAILED = 2 };
/* CC_CONN_READY once the TCP connection is established. */
int cc_conn_state(const cc_conn *conn);

/* ---- unary calls ------------------------------------------------------------ */

/* Starts a unary call of `path` with the request `req` (packed by protobuf-c
 * into a pooled buffer). `cb` runs exactly once, in a later loop turn, also
 * when the call fails locally. Returns 0, or -1 if memory ran out (cb is not
 * called then). */
int cc_unary(cc_conn *conn, const char *path, const ProtobufCMessage *req, cc_unary_cb cb, void *ud);

/* The same with an already encoded request message. */
int cc_unary_raw(cc_conn *conn, const char *path, const void *req, size_t len, cc_unary_cb cb,
                 void *ud);

/* Blocking convenience for command-line tools: runs the connection's loop
 * until the call completes or timeout_ms passes (<= 0: no limit; on timeout
 * the stream is reset and the status is DEADLINE_EXCEEDED). On OK the
 * response is unpacked with `resp_desc` into *resp_out (free it with
 * protobuf_c_message_free_unpacked); an undecodable response gives INTERNAL.
 * If msg_buf is given, the grpc-message is copied there. Returns the gRPC
 * status. Must not be called from a callback. */
int cc_unary_sync(cc_conn *conn, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp_out,
                  int timeout_ms, char *msg_buf, size_t msg_buf_len);

/* ---- bidirectional streams -------------------------------------------------- */

/* Opens a streaming call (Watch, LeaseKeepAlive). on_msg runs for each
 * received message, on_close once at the end. Returns NULL if memory ran
 * out; a failure afterwards is reported through on_close. */
cc_stream *cc_stream_open(cc_conn *conn, const char *path, cc_stream_msg_cb on_msg,
                          cc_stream_close_cb on_close, void *ud);

/* Queues one message on the stream (sent in this loop turn). Returns 0, or
 * -1 if the stream's sending side is closed or memory ran out. */
int cc_stream_send(cc_stream *st, const ProtobufCMessage *msg);
int cc_stream_send_raw(cc_stream *st, const void *msg, size_t len);

/* Half-closes the stream (END_STREAM after the queued messages). */
int cc_stream_close_send(cc_stream *st);

/* Resets the stream; on_close follows with CANCELLED. */
void cc_stream_cancel(cc_stream *st);

/* ---- helpers ------------------------------------------------------------------ */

/* Name of a gRPC status code ("OK", "Unavailable", ...). */
const char *cc_status_name(int status);

#endif /* CETCD_CLI_CLIENT_H */
