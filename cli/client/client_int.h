/*
 * client_int.h -- the client library's internal structures, shared by
 * loop.c (sockets, epoll, nghttp2 sessions), call.c (calls and streams) and
 * grpc_frame.c (pure gRPC framing helpers). Not part of the public API.
 */
#ifndef CETCD_CLI_CLIENT_INT_H
#define CETCD_CLI_CLIENT_INT_H

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <sys/types.h>

#include "cli/client/client.h"

typedef struct cc_call cc_call;

/* A growable byte buffer that is kept (not freed) between uses. */
typedef struct cc_buf {
  uint8_t *p;
  size_t len; /* bytes in use */
  size_t cap; /* bytes allocated */
} cc_buf;

int cc_buf_reserve(cc_buf *b, size_t extra);
int cc_buf_append(cc_buf *b, const void *data, size_t len);
void cc_buf_free(cc_buf *b);

/* ---- gRPC framing (grpc_frame.c, pure) ----------------------------------- */

#define CC_GRPC_PREFIX_BYTES 5
/* Refuse a received message larger than this (grpc-go's default limit on
 * the receive side is 4 MiB; etcd raises it for its clients to 2 GiB, but
 * a bench or CLI never needs more than this). */
#define CC_GRPC_MSG_MAX (64u << 20)

/* Writes the 5-byte prefix: flag 0 (uncompressed), big-endian length. */
void cc_grpc_put_prefix(uint8_t *dst, uint32_t len);

/* Looks at buf[0..len): returns 1 and sets *msg, *msg_len and *consumed when a
 * whole message is there, 0 when more bytes are needed, -1 when the frame is
 * compressed or larger than CC_GRPC_MSG_MAX. */
int cc_grpc_next_msg(const uint8_t *buf, size_t len, const uint8_t **msg, size_t *msg_len,
                     size_t *consumed);

/* Percent-decodes a grpc-message value into dst (NUL-terminated, truncated
 * to dst_len - 1). Returns the decoded length. */
size_t cc_grpc_percent_decode(const uint8_t *src, size_t len, char *dst, size_t dst_len);

/* ---- calls ------------------------------------------------------------------ */

#define CC_MSG_MAX 512 /* grpc-message bytes kept */

struct cc_call {
  cc_loop *loop;
  cc_conn *conn;
  int32_t stream_id;    /* 0 until submitted */
  int is_stream;        /* bidi stream (else unary) */
  cc_unary_cb unary_cb; /* unary: completion (NULL once abandoned) */
  cc_stream_msg_cb msg_cb;
  cc_stream_close_cb close_cb;
  void *ud;

  cc_buf out;     /* framed messages waiting for nghttp2 to take them */
  size_t out_off; /* bytes of `out` already handed to nghttp2 */
  int send_eof;   /* end the request after `out` drains */
  int deferred;   /* the data provider said DEFERRED: resume on send */

  cc_buf in;           /* received gRPC frames not yet delivered */
  int http_status;     /* ":status", 0 if none */
  int grpc_status;     /* "grpc-status", -1 if none */
  uint32_t rst_code;   /* HTTP/2 error code the stream closed with */
  int closed;          /* nghttp2 has closed the stream */
  int local_status;    /* >= 0: fail with this status (set locally) */
  int cancelled;       /* reset by the caller */
  int on_ready;        /* linked on loop->ready */
  char msg[CC_MSG_MAX]; /* grpc-message, decoded */

  cc_call *ready_next;       /* loop->ready list */
  cc_call *prev, *next;      /* conn->calls (active) or loop->free_calls */
};

/* ---- connections and the loop --------------------------------------------- */

#define CC_WBUF_MAX (256u << 10) /* bytes gathered for one send(2) */
#define CC_RBUF_BYTES (256u << 10)
#define CC_READS_PER_TURN 4      /* fairness between connections */

struct cc_conn {
  cc_loop *loop;
  int fd;
  int connecting;  /* non-blocking connect not finished */
  int failed;      /* closed for good */
  int fail_status; /* why: status and message given to later calls */
  char fail_msg[256];
  int dirty;       /* on loop->dirty: has something to send */
  uint32_t events; /* epoll mask currently registered */
  nghttp2_session *h2;
  char authority[280];
  struct ssl_st *ssl; /* TLS session (https), else NULL */
  int handshaking;    /* TCP is up, TLS handshake under way */
  char tls_err[200];  /* OpenSSL's reason for the last EPROTO */
  cc_buf wbuf;     /* frames gathered from nghttp2 */
  size_t wbuf_off; /* bytes of wbuf already written */
  cc_call *calls;  /* active calls, doubly linked */
  cc_conn *dirty_next;
  cc_conn *all_next; /* loop->conns */
};

struct cc_loop {
  int epfd;
  uint8_t *rbuf; /* shared read buffer (one thread) */
  cc_conn *conns;
  cc_conn *dirty;
  cc_call *ready, *ready_tail;
  cc_call *free_calls;
  size_t inflight;
};

/* call.c */
cc_call *cc_call_get(cc_loop *loop, cc_conn *conn);
void cc_call_ready(cc_call *c);
int cc_loop_deliver(cc_loop *loop);
int cc_call_submit(cc_call *c, const char *path);
void cc_call_fail(cc_call *c, int status, const char *msg);

/* tls.c: OpenSSL on the non-blocking socket */
int cc_tls_setup(cc_conn *conn, const cc_tls_opts *o, const char *host, char *err,
                 size_t err_len);
/* 1 done, 0 in progress (*events: what to wait for), -1 failed (err set) */
int cc_tls_handshake(cc_conn *conn, uint32_t *events, char *err, size_t err_len);
ssize_t cc_tls_read(cc_conn *conn, void *buf, size_t len);
ssize_t cc_tls_write(cc_conn *conn, const void *buf, size_t len);
int cc_tls_has_pending(cc_conn *conn); /* decrypted or buffered bytes left */
void cc_tls_free(cc_conn *conn);

/* loop.c */
void cc_conn_mark_dirty(cc_conn *conn);
void cc_conn_fail(cc_conn *conn, int status, const char *msg);

#endif /* CETCD_CLI_CLIENT_INT_H */
