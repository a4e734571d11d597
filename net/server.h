/*
 * server.h -- the net actor's transport: an application-agnostic gRPC server
 * (HTTP/2 over cleartext TCP, nghttp2 server sessions) with HTTP/1.1 on the
 * same port, run by N event-loop threads.
 *
 * THREADS AND OWNERSHIP
 *   Every connection, stream and call belongs to exactly one event loop
 *   (thread). All callbacks in net_handlers run on that loop's thread, and
 *   every function below marked "loop thread" must be called only from the
 *   thread of the loop passed in (normally from inside a callback). The only
 *   functions callable from any thread are net_post(), net_loop_count() and
 *   net_server_port(). To answer a call from another thread, post a message to
 *   the call's loop (call.loop) with net_post() and reply from on_post.
 *
 * CALL IDS
 *   A net_call names one gRPC call (or one HTTP/1.1 request) and is a plain
 *   value, copyable across threads. Connections are kept in per-loop slots
 *   with generation counters and HTTP/2 stream ids are never reused within a
 *   connection, so a stale id (connection closed, slot reused, stream reset
 *   or already finished) is detected: replies to it are silently dropped.
 *
 * BATCHING
 *   One loop turn = epoll_wait, read every readable socket (feeding nghttp2,
 *   which invokes on_message ...), drain the loop's mailbox (on_post),
 *   on_tick (when due), on_turn_end, then serialize each dirty connection's
 *   nghttp2 output into its buffer and write it with one write() per
 *   connection. Replies made during the turn therefore leave together.
 *
 * LIMITS
 *   max_conns (split evenly across loops), max_concurrent_streams per
 *   connection (sent in SETTINGS and enforced by nghttp2), max_recv_msg_bytes
 *   per gRPC message, a cap on buffered output per connection (a connection
 *   whose socket does not take its output is not read until it drains),
 *   HTTP/1.1 header and body caps, HTTP/2 header list size. Output queued on
 *   a stream behind HTTP/2 flow control is the app's to bound: see
 *   net_stream_pending_bytes().
 *
 * gRPC ANSWERS THE TRANSPORT GIVES ITSELF (worded as grpc-go 1.33, etcd 3.4's)
 *   path without a '/' after the service  RESOURCE_EXHAUSTED "malformed method name: \"<path>\""
 *   service in unimplemented_services     UNIMPLEMENTED "method <M> not implemented"
 *   method unknown, service known         UNIMPLEMENTED "unknown method <M> for service <S>"
 *   service unknown                       UNIMPLEMENTED "unknown service <S>"
 *   grpc-encoding other than identity     UNIMPLEMENTED "grpc: Decompressor is not installed for grpc-encoding \"<e>\""
 *   message over max_recv_msg_bytes       RESOURCE_EXHAUSTED "grpc: received message larger than max (<n> vs. <max>)"
 *   compressed flag set                   INTERNAL "grpc: compressed flag set with identity or empty encoding"
 *   unary/server-stream half-closed with  UNKNOWN "EOF" (no message) / UNKNOWN "unexpected EOF" (partial;
 *     no complete request                   INTERNAL for server streams)
 *   client/bidi stream ends mid-message   INTERNAL "unexpected EOF"
 *   :method not POST, content-type not    on_http (plain HTTP), or RST_STREAM(PROTOCOL_ERROR)
 *     application/grpc[+x|;x]               without on_http
 *   A unary call is handed to the app as soon as its first message is whole;
 *   further request messages are ignored (grpc-go reads only one). Errors
 *   before any response DATA are Trailers-Only. After our END_STREAM on a
 *   stream the client has not half-closed, RST_STREAM(NO_ERROR) follows.
 *   Malformed HTTP/2 (frames, HPACK, flow control) ends that connection with
 *   GOAWAY; a bad preface or junk closes it; HTTP/1.1 junk gets 400 + close.
 *
 * TLS: net_config.tls (OpenSSL, net/tls.c) under the same HTTP code, through
 * the net_io_ops seam in net_internal.h; without it, cleartext h2c (prior
 * knowledge) and HTTP/1.1.
 */
#ifndef CETCD_NET_SERVER_H
#define CETCD_NET_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct net_server net_server;
typedef struct net_loop net_loop;

/* One call (unary), stream, or HTTP/1.1 request (stream_id == 0). */
typedef struct net_call {
  uint32_t loop;      /* index of the owning loop: net_post() target */
  uint32_t conn_slot; /* connection slot within that loop */
  uint32_t conn_gen;  /* generation of the slot when the call began */
  int32_t stream_id;  /* HTTP/2 stream id; 0 = the HTTP/1.1 request */
} net_call;

typedef enum {
  NET_UNARY,         /* one request message, one reply */
  NET_CLIENT_STREAM, /* many request messages, one reply */
  NET_SERVER_STREAM, /* one request message, many replies */
  NET_BIDI_STREAM    /* many both ways */
} net_method_kind;

typedef struct net_method {
  const char *path;     /* "/etcdserverpb.KV/Range"; must outlive the server */
  net_method_kind kind;
  int id;               /* application's id, passed back in callbacks */
} net_method;

/* Why a stream's on_stream_end fired. */
typedef enum {
  /* The client half-closed (END_STREAM) a client/bidi stream. The call is
   * STILL ALIVE: the app may keep sending and must end it with
   * net_stream_finish() (etcd's servers return OK on EOF). */
  NET_END_HALF_CLOSE,
  /* RST_STREAM from the client, a stream error, or the connection died. The
   * call id is dead; replies to it are dropped. */
  NET_END_GONE
} net_end_reason;

typedef struct net_http_header {
  const char *name;  /* as received (not NUL-terminated); compare case-insensitively */
  size_t name_len;
  const char *value;
  size_t value_len;
} net_http_header;

/* One plain HTTP request. Every pointer is valid only during on_http; copy
 * what is needed. Answer exactly once, now or later, with net_http_reply()
 * or the net_http_stream_* trio on req->call; an HTTP/1.1 connection reads
 * no further request until then. Over HTTP/2, header names arrive lower
 * case and keep_alive is always true. */
typedef struct net_http_req {
  net_call call;
  const char *method;   /* NUL-terminated, e.g. "GET" */
  const char *target;   /* NUL-terminated request target, e.g. "/v3/kv/range?x=1" */
  const net_http_header *headers;
  size_t n_headers;
  const uint8_t *body;  /* Content-Length bytes (chunked bodies are refused, 411) */
  size_t body_len;
  bool keep_alive;      /* false after the reply when the client asked to close */
} net_http_req;

typedef struct net_handlers {
  void *app;
  /* On the loop thread, before it serves anything (e.g. rcu_register_thread). */
  void (*on_loop_start)(void *app, net_loop *loop, uint32_t loop_index);
  /* On the loop thread, after it stopped serving (e.g. rcu_unregister_thread). */
  void (*on_loop_stop)(void *app, net_loop *loop);
  /* One complete gRPC message: the unary/server-stream request, or one
   * message of a client/bidi stream. `msg` is valid only during the call.
   * For NET_UNARY / NET_SERVER_STREAM it fires once, as soon as the message
   * is complete (as grpc-go does: it does not wait for the half-close). */
  void (*on_message)(void *app, net_loop *loop, net_call call, int method_id,
                     const uint8_t *msg, size_t len);
  /* The app knows a call from its first on_message on; the two callbacks
   * below fire only for such calls, and never after the app itself ended
   * the call (net_reply / net_reply_error / net_stream_finish). A client or
   * bidi stream half-closed before any message is finished by the transport
   * with status OK (what etcd's Watch and LeaseKeepAlive do on io.EOF).
   *
   * Unary calls: the call ended before the app replied (client reset,
   * connection gone, server stopping). Optional. The call id is dead. */
  void (*on_call_cancel)(void *app, net_loop *loop, net_call call, int method_id);
  /* Client/bidi/server streams: see net_end_reason. NET_END_HALF_CLOSE
   * fires at most once; NET_END_GONE is the last callback for the call. */
  void (*on_stream_end)(void *app, net_loop *loop, net_call call, int method_id,
                        net_end_reason why);
  /* After each loop turn's input and posts are processed, before output is
   * flushed: lets the app batch work. */
  void (*on_turn_end)(void *app, net_loop *loop);
  /* Every net_config.tick_ms (roughly; never early), on each loop thread:
   * timeouts, periodic flushes. Optional. */
  void (*on_tick)(void *app, net_loop *loop);
  /* A message posted to this loop with net_post(); ownership passes here. */
  void (*on_post)(void *app, net_loop *loop, void *msg);
  /* A plain HTTP request: HTTP/1.1 (told apart from HTTP/2 by the
   * connection preface; call.stream_id == 0), or an HTTP/2 request that is
   * not gRPC (not POST + application/grpc; call.stream_id > 0). Answer with
   * the net_http_* functions either way. NULL = HTTP/1.1 requests get 404,
   * HTTP/2 ones RST_STREAM(PROTOCOL_ERROR) as grpc-go does. */
  void (*on_http)(void *app, net_loop *loop, const net_http_req *req);
  /* The connection of an HTTP/1.1 request still being answered closed (or
   * the server is stopping): the call id is dead. Optional. */
  void (*on_http_cancel)(void *app, net_loop *loop, net_call call);
} net_handlers;

typedef struct net_config {
  const char *const *listen;  /* "host:port" (IPv4, [IPv6] or name); port 0 = ephemeral */
  size_t n_listen;
  uint32_t loops;                  /* event-loop threads; 0 = 1 */
  size_t max_recv_msg_bytes;       /* gRPC receive limit; 0 = 4 MiB (grpc-go default).
                                    * etcd: max-request-bytes + 512 KiB */
  uint32_t max_concurrent_streams; /* per connection; 0 = 1000 */
  size_t max_conns;                /* whole server; 0 = 10000 */
  size_t max_conn_out_bytes;       /* serialized output the socket has not taken, per conn,
                                    * at which reading pauses and serializing stops (the
                                    * rest waits on its streams); 0 = 1 MiB: the kernel's
                                    * socket buffer holds more, and at 16 MiB ten watch
                                    * connections held 160 MB that no stream's measure saw */
  size_t max_http1_body_bytes;     /* 0 = max_recv_msg_bytes */
  /* Output sent with net_stream_send_counted() and not yet written to a
   * socket, in bytes (gRPC framing included): the loops add and subtract,
   * the app reads it (the watch actor's server-wide budget). NULL: no
   * counting. Must outlive the loops. */
  _Atomic int64_t *counted_out_bytes;
  uint32_t mailbox_slots;          /* per-loop net_post capacity; 0 = 65536 */
  uint32_t tick_ms;                /* on_tick period; 0 = no ticks */
  const net_method *methods;
  size_t n_methods;
  /* Service names ("etcdserverpb.Watch") whose methods are all answered
   * UNIMPLEMENTED "method <Method> not implemented" (grpc-go's text for a
   * registered service whose implementation embeds Unimplemented...Server). */
  const char *const *unimplemented_services;
  size_t n_unimplemented;
  /* Request metadata (HTTP/2 header names, lower case) kept per call for
   * net_call_metadata(), e.g. {"token", "hasleader"} for etcd's auth and
   * require-leader. At most NET_MAX_CAPTURE names; others are not kept. */
  const char *const *capture_headers;
  size_t n_capture;
  const struct net_tls_config *tls; /* NULL = cleartext (h2c) */
} net_config;

/* TLS on every listen address (etcd's --cert-file, --key-file,
 * --client-cert-auth, --trusted-ca-file). ALPN: h2 if offered, else
 * http/1.1; plain HTTP requests reach on_http over either. */
typedef struct net_tls_config {
  const char *cert_file;       /* PEM certificate chain */
  const char *key_file;        /* PEM private key */
  bool client_cert_auth;       /* require a client certificate ... */
  const char *trusted_ca_file; /* ... signed by this CA (PEM) */
} net_tls_config;

enum { NET_MAX_CAPTURE = 8 };

/* Binds every listen address (SO_REUSEPORT, one listening socket per loop
 * and address; a port already taken fails like etcd: "listen tcp
 * 127.0.0.1:2379: bind: address already in use"), loads TLS files, starts
 * the loops, returns 0. On error returns -1 with a message in err. `cfg`
 * arrays and strings must outlive the server; *out is NULL on error. */
int net_server_start(const net_config *cfg, const net_handlers *h,
                     net_server **out, char *err, size_t err_len);
/* Stops the server: refuses further posts (net_post returns -1, a producer
 * blocked on a full mailbox is released with -1) and waits for posts under
 * way; then each loop closes its connections (live calls get
 * on_call_cancel / on_stream_end(NET_END_GONE); replies are dropped),
 * hands every message left in its mailbox to on_post, runs on_loop_stop,
 * and exits; all are joined. on_post never runs after on_loop_stop. Not
 * from a loop thread; no net_post after it returns. NULL is a no-op. */
void net_server_stop(net_server *s);
/* The first half of net_server_stop: refuse posts, stop and join the loops,
 * but keep the server's memory, so threads that may still call net_post
 * (and get -1) can be stopped before net_server_stop frees it. */
void net_server_halt(net_server *s);

/* --- any thread ----------------------------------------------------------- */
/* Posts msg to loop loop_index's mailbox; on_post receives it (in a later
 * turn, FIFO per producer). Waits with backoff while the mailbox is full,
 * except when called on that loop's own thread: then a full mailbox returns
 * -1 at once (waiting would deadlock). Returns 0, or -1 if loop_index is out
 * of range, the server is stopping, or (own loop) the mailbox is full; on -1
 * the caller still owns msg. Safe to call concurrently with net_server_stop,
 * not after it returned. */
int net_post(net_server *s, uint32_t loop_index, void *msg);
uint32_t net_loop_count(const net_server *s);
/* Port actually bound for cfg->listen[listen_index] (useful with port 0). */
uint16_t net_server_port(const net_server *s, size_t listen_index);

/* --- loop thread ---------------------------------------------------------- */
uint32_t net_loop_index(const net_loop *loop);
net_server *net_loop_server(const net_loop *loop);

/* Unary / client-stream call: one message then trailers grpc-status 0. */
void net_reply(net_loop *loop, net_call call, const uint8_t *msg, size_t len);
/* Any call: grpc-status `grpc_code` with grpc-message (percent-encoded on
 * the wire). Trailers-Only when nothing was sent yet. message may be NULL. */
void net_reply_error(net_loop *loop, net_call call, int grpc_code, const char *message);
/* Server/bidi stream: one message. Returns 0, or -1 if the call is dead. */
int net_stream_send(net_loop *loop, net_call call, const uint8_t *msg, size_t len);
/* The same, and the bytes count in net_config.counted_out_bytes until they
 * are written to the socket (or the stream or connection goes away). */
int net_stream_send_counted(net_loop *loop, net_call call, const uint8_t *msg, size_t len);
/* Server/bidi stream: trailers and END_STREAM. The call is dead afterwards. */
void net_stream_finish(net_loop *loop, net_call call, int grpc_code, const char *message);
/* Response bytes queued on the stream and not yet framed onto the
 * connection (held by HTTP/2 flow control, or until the turn's flush): the
 * slow-consumer measure for watch streams. 0 if dead. */
size_t net_stream_pending_bytes(net_loop *loop, net_call call);
/* True while the call can still be answered. */
bool net_call_alive(net_loop *loop, net_call call);
/* Value of a captured request header (see net_config.capture_headers) of a
 * live gRPC call, NUL-terminated, valid while the call is; NULL if absent,
 * not captured, or the call is dead. *len may be NULL. */
const char *net_call_metadata(net_loop *loop, net_call call, const char *name, size_t *len);

/* Answers the HTTP/1.1 request `call` (from net_http_req.call) with a
 * Content-Length body (none on the wire for HEAD).
 * extra_headers: NULL or "Name: value\r\n..." lines appended verbatim. */
void net_http_reply(net_loop *loop, net_call call, int status, const char *content_type,
                    const char *extra_headers, const void *body, size_t len);
/* Or a streamed answer (Transfer-Encoding: chunked), e.g. the gateway's
 * watch: start, any number of sends (one chunk each; empty ones are
 * skipped), end. Return 0, or -1 if the call is dead / not in that state.
 * A client that hangs up meanwhile gets on_http_cancel. */
int net_http_stream_start(net_loop *loop, net_call call, int status, const char *content_type,
                          const char *extra_headers);
int net_http_stream_send(net_loop *loop, net_call call, const void *data, size_t len);
void net_http_stream_end(net_loop *loop, net_call call);
/* Answer bytes of the request's connection the socket has not taken yet
 * (slow-consumer detection for streamed answers); 0 if dead. */
size_t net_http_pending_bytes(net_loop *loop, net_call call);

#endif
