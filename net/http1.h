/*
 * http1.h -- a bounded HTTP/1.1 request parser (pure: buffer in, request or
 * error out). Handles the request line, header fields and a Content-Length
 * body; no chunked bodies (the JSON gateway's clients send Content-Length).
 */
#ifndef CETCD_NET_HTTP1_H
#define CETCD_NET_HTTP1_H

#include <stdbool.h>
#include <stddef.h>

#include "net/server.h"

enum {
  HTTP1_MAX_HEADERS = 64,          /* header fields per request */
  HTTP1_MAX_HEAD_BYTES = 16 * 1024 /* request line + headers */
};

typedef enum {
  HTTP1_NEED_MORE = 0,
  HTTP1_OK = 1,           /* a whole request: see http1_req; it used `consumed` bytes */
  HTTP1_ERR_BAD = -400,   /* malformed */
  HTTP1_ERR_LENGTH = -411,/* chunked / unsupported transfer-encoding */
  HTTP1_ERR_TOO_LARGE = -413,
  HTTP1_ERR_HEAD_TOO_LARGE = -431,
  HTTP1_ERR_VERSION = -505
} http1_status;

typedef struct http1_req {
  char method[16];
  char target[2048];
  int minor_version;   /* HTTP/1.<minor> */
  net_http_header headers[HTTP1_MAX_HEADERS]; /* point into the input buffer */
  size_t n_headers;
  const unsigned char *body; /* points into the input buffer */
  size_t body_len;
  bool keep_alive;
  bool expect_continue; /* "Expect: 100-continue" (also set with NEED_MORE once
                         * the head is complete and the body is not) */
  size_t consumed;     /* bytes of input this request occupies */
} http1_req;

/* Parses one request from buf[0..len). max_body caps Content-Length. */
http1_status http1_parse(const unsigned char *buf, size_t len, size_t max_body, http1_req *req);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http1_reason(int status);

#endif
