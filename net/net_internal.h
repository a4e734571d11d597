/*
 * net_internal.h -- the transport's private structures, shared by server.c
 * (loops, sockets, connections, HTTP/1.1) and h2.c (nghttp2 sessions, gRPC
 * calls). Nothing here is part of the API.
 *
 * Ownership: a net_loop owns its connection slots; a net_conn owns its
 * nghttp2 session, its buffers and (through nghttp2 stream user data) its
 * net_stream structs, which are recycled through the loop's free list.
 */
#ifndef CETCD_NET_INTERNAL_H
#define CETCD_NET_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "msg/mailbox.h"
#include "net/grpc_frame.h"
#include "net/server.h"

enum {
  NET_READ_CHUNK = 256 * 1024,            /* one read() into the loop's buffer */
  NET_READS_PER_TURN = 4,                 /* per connection, for fairness */
  NET_H2_STREAM_WINDOW = 4 * 1024 * 1024, /* SETTINGS_INITIAL_WINDOW_SIZE we send */
  NET_H2_CONN_WINDOW = 16 * 1024 * 1024,  /* connection receive window */
  NET_H2_MAX_HEADER_LIST = 64 * 1024,     /* per request header block */
  NET_PATH_MAX = 1024,
  NET_EPOLL_EVENTS = 256,
  NET_ACCEPT_PAUSE_MS = 100                /* listeners unwatched after EMFILE & co */
};

/* A growable byte buffer with a read offset (data is p[off..len)). */
typedef struct net_buf {
  uint8_t *p;
  size_t len;
  size_t off;
  size_t cap;
} net_buf;

int net_buf_reserve(net_buf *b, size_t extra);
int net_buf_append(net_buf *b, const void *data, size_t n);
static inline size_t net_buf_pending(const net_buf *b) { return b->len - b->off; }
void net_buf_consume(net_buf *b, size_t n);
void net_buf_free(net_buf *b);

typedef struct net_method_ent {
  const char *path;
  size_t path_len;
  uint32_t hash;
  net_method_kind kind;
  int id;
} net_method_ent;

typedef enum { CONN_FREE = 0, CONN_DETECT, CONN_H2, CONN_HTTP1 } conn_proto;

typedef struct net_conn net_conn;

/* The byte-stream seam under HTTP: plain sockets now, TLS (OpenSSL, ALPN h2)
 * later without touching the HTTP code. Semantics of read(2)/write(2) on a
 * nonblocking fd: >0 bytes, 0 = EOF (read), -1 with errno (EAGAIN = retry
 * when the fd is ready). */
typedef struct net_io_ops {
  ssize_t (*read)(net_conn *c, void *buf, size_t len);
  ssize_t (*write)(net_conn *c, const void *buf, size_t len);
} net_io_ops;

/* One HTTP/2 stream carrying a gRPC call. */
typedef struct net_stream {
  net_conn *conn;
  struct net_stream *next_free;  /* loop's free list */
  struct net_stream *prev, *next; /* the connection's live streams */
  int32_t id;
  const net_method_ent *m;   /* NULL until dispatched / when rejected */
  grpc_frame_dec dec;        /* request message framing */
  net_buf out;               /* framed response bytes not yet given to nghttp2 */
  size_t counted;            /* of out: bytes in net_config.counted_out_bytes */
  net_buf meta;              /* captured header values, each NUL-terminated */
  uint32_t meta_off[NET_MAX_CAPTURE]; /* offset+1 into meta per capture name; 0 = absent */
  uint32_t meta_len[NET_MAX_CAPTURE];
  size_t hdr_bytes;          /* request header block size so far */
  char path[NET_PATH_MAX];   /* :path, NUL-terminated (truncated if longer) */
  size_t path_len;
  char encoding[64];         /* grpc-encoding, "" if absent */
  char method[16];           /* :method (plain HTTP requests) */
  net_buf hdrs;              /* regular request headers, "name\0value\0"... (plain HTTP) */
  net_buf body;              /* request body (plain HTTP) */
  bool http;                 /* a plain HTTP request for on_http, not gRPC */
  bool post;                 /* :method was POST */
  bool grpc_ct;              /* content-type application/grpc[+...] */
  bool bad_header;           /* header over limits */
  bool dispatched;           /* app knows the call (on_message may have fired) */
  bool delivered;            /* a message went to the app: it knows the call */
  bool remote_closed;        /* client sent END_STREAM */
  bool resp_started;         /* response HEADERS submitted (with a data provider) */
  bool deferred;             /* data provider returned DEFERRED */
  bool finished;             /* final status decided; no more app output */
  bool trailers_sent;        /* trailers submitted */
  bool app_gone;             /* NET_END_GONE / on_call_cancel delivered or not due */
  int status;                /* grpc-status when finished */
  char *status_msg;          /* percent-encoded grpc-message (malloc'd) or NULL */
} net_stream;

struct net_conn {
  net_loop *loop;
  uint32_t slot;
  uint32_t gen;
  int fd;
  const net_io_ops *io;      /* plain, or TLS over `ssl` */
  struct ssl_st *ssl;        /* OpenSSL SSL*, NULL when cleartext */
  bool reread;               /* TLS holds decrypted input epoll cannot see */
  conn_proto proto;
  nghttp2_session *h2;
  net_stream *streams;       /* live streams (nghttp2 user data), for teardown */
  net_buf wbuf;              /* bytes serialized, not yet written */
  net_buf rbuf;              /* preface detection / HTTP/1.1 input */
  size_t stream_out_bytes;   /* sum of streams' out buffers */
  size_t counted_wbuf;       /* of wbuf: counted bytes, at most (see conn_write) */
  bool dirty;                /* on the loop's dirty list */
  bool want_out;             /* EPOLLOUT registered */
  bool more_out;             /* the last flush left nghttp2 output for the next turn */
  bool reading_paused;       /* EPOLLIN removed: output backlog too large */
  bool close_after_write;    /* close once wbuf drains */
  bool closing;              /* close at the end of the turn */
  bool h1_busy;              /* an HTTP/1.1 request awaits its reply */
  bool h1_keep_alive;
  bool h1_head;              /* the pending request is HEAD: reply without body */
  bool h1_streaming;         /* a chunked reply is under way */
  bool h1_continue_sent;     /* "100 Continue" sent for the request being read */
  net_conn *next_dirty;
};

struct net_loop {
  net_server *srv;
  uint32_t index;
  pthread_t thread;
  int epfd;
  int *lfds;                 /* one listening socket per listen address */
  mailbox mb;
  net_conn *conns;           /* max_conns_per_loop slots */
  uint32_t n_slots;
  uint32_t *free_slots;      /* stack of free slot indexes */
  uint32_t n_free;
  uint64_t next_tick_ns;     /* CLOCK_MONOTONIC deadline of the next on_tick */
  bool accept_paused;        /* listeners out of epoll (EMFILE); see loop_pause_accept */
  net_conn *dirty;           /* connections to flush this turn */
  net_stream *free_streams;  /* recycled stream structs */
  uint32_t n_free_streams;
  uint8_t *rdbuf;            /* NET_READ_CHUNK bytes */
  struct http1_req *h1req;   /* parse scratch (big: not on the stack) */
  nghttp2_session_callbacks *h2cbs;
  nghttp2_option *h2opt;
};

struct net_server {
  net_config cfg;
  net_handlers h;
  net_method_ent *methods;
  uint32_t n_methods;
  uint32_t method_mask;      /* open-addressing table of methods */
  int32_t *method_table;     /* index into methods, -1 empty */
  void *tls_ctx;             /* SSL_CTX*, NULL when cleartext */
  net_loop *loops;
  uint32_t n_loops;
  uint16_t *ports;           /* per listen address */
  int stopping;              /* set once by net_server_halt: net_post refuses */
  int halted;                /* loops joined; the struct stays valid until net_server_stop */
  int posting;               /* producers inside net_post */
  int loops_exit;            /* set after `stopping` once posts have landed */
  uint32_t conns_per_loop;
};

/* server.c */
void net_conn_mark_dirty(net_conn *c);
void net_conn_close(net_conn *c);
net_conn *net_conn_lookup(net_loop *loop, net_call call);

/* h2.c: plain HTTP requests over HTTP/2 (stream_id != 0 in the call) */
void net_h2_http_reply(net_loop *loop, net_call call, int status, const char *content_type,
                       const char *extra_headers, const void *body, size_t len);
int net_h2_http_stream_start(net_loop *loop, net_call call, int status, const char *content_type,
                             const char *extra_headers);
int net_h2_http_stream_send(net_loop *loop, net_call call, const void *data, size_t len);
void net_h2_http_stream_end(net_loop *loop, net_call call);
size_t net_h2_http_pending(net_loop *loop, net_call call);
bool net_h2_http_alive(net_loop *loop, net_call call);

/* h2.c */
int net_h2_loop_init(net_loop *loop);
void net_h2_loop_free(net_loop *loop);
int net_h2_conn_init(net_conn *c);
/* Feeds received bytes; returns -1 when the connection must close. */
int net_h2_recv(net_conn *c, const uint8_t *data, size_t len);
/* Serializes pending frames into c->wbuf (bounded by max_conn_out_bytes).
 * Returns -1 when the connection is finished (nothing more to do). */
int net_h2_send(net_conn *c);
/* Connection ending: tell the app about live calls, free the session. */
void net_h2_conn_free(net_conn *c);
const net_method_ent *net_method_find(const net_server *s, const char *path, size_t len);

/* net_config.counted_out_bytes += delta (see net_stream_send_counted). */
static inline void net_count_out(const net_server *srv, int64_t delta) {
  if (srv->cfg.counted_out_bytes && delta) atomic_fetch_add(srv->cfg.counted_out_bytes, delta);
}

#endif
