#include "net/http1.h"

#include <string.h>
#include <strings.h>

static const unsigned char *find_crlfcrlf(const unsigned char *b, size_t len) {
  for (size_t i = 0; i + 3 < len; i++) {
    if (b[i] == '\r' && b[i + 1] == '\n' && b[i + 2] == '\r' && b[i + 3] == '\n') return b + i;
  }
  return NULL;
}

static bool is_tchar(unsigned char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 'A' && c <= 'Z') return true;
  if (c >= '0' && c <= '9') return true;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool hdr_is(const net_http_header *h, const char *name) {
  return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

static bool value_has_token(const net_http_header *h, const char *tok) {
  size_t tl = strlen(tok);
  const char *v = h->value, *end = h->value + h->value_len;
  while (v < end) {
    while (v < end && (*v == ' ' || *v == ',' || *v == '\t')) v++;
    const char *s = v;
    while (v < end && *v != ',') v++;
    const char *e = v;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if ((size_t)(e - s) == tl && strncasecmp(s, tok, tl) == 0) return true;
  }
  return false;
}

/* "METHOD SP target SP HTTP/1.x" */
static http1_status parse_request_line(const char *p, const char *end, http1_req *req) {
  const char *sp1 = memchr(p, ' ', (size_t)(end - p));
  if (!sp1 || sp1 == p || (size_t)(sp1 - p) >= sizeof(req->method)) return HTTP1_ERR_BAD;
  for (const char *c = p; c < sp1; c++) {
    if (!is_tchar((unsigned char)*c)) return HTTP1_ERR_BAD;
  }
  const char *t = sp1 + 1;
  const char *sp2 = memchr(t, ' ', (size_t)(end - t));
  if (!sp2 || sp2 == t) return HTTP1_ERR_BAD;
  if ((size_t)(sp2 - t) >= sizeof(req->target)) return HTTP1_ERR_HEAD_TOO_LARGE;
  for (const char *c = t; c < sp2; c++) {
    if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f) return HTTP1_ERR_BAD;
  }
  const char *v = sp2 + 1;
  if (end - v != 8 || memcmp(v, "HTTP/1.", 7) != 0) {
    return (end - v >= 5 && memcmp(v, "HTTP/", 5) == 0) ? HTTP1_ERR_VERSION : HTTP1_ERR_BAD;
  }
  if (v[7] != '0' && v[7] != '1') return HTTP1_ERR_VERSION;
  memcpy(req->method, p, (size_t)(sp1 - p));
  req->method[sp1 - p] = '\0';
  memcpy(req->target, t, (size_t)(sp2 - t));
  req->target[sp2 - t] = '\0';
  req->minor_version = v[7] - '0';
  return HTTP1_OK;
}

static http1_status parse_header_line(const char *p, const char *end, http1_req *req) {
  const char *colon = memchr(p, ':', (size_t)(end - p));
  if (!colon || colon == p) return HTTP1_ERR_BAD;
  for (const char *c = p; c < colon; c++) {
    if (!is_tchar((unsigned char)*c)) return HTTP1_ERR_BAD;
  }
  if (req->n_headers == HTTP1_MAX_HEADERS) return HTTP1_ERR_HEAD_TOO_LARGE;
  const char *v = colon + 1, *ve = end;
  while (v < ve && (*v == ' ' || *v == '\t')) v++;
  while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
  net_http_header *h = &req->headers[req->n_headers++];
  h->name = p;
  h->name_len = (size_t)(colon - p);
  h->value = v;
  h->value_len = (size_t)(ve - v);
  return HTTP1_OK;
}

static http1_status parse_content_length(const net_http_header *h, size_t *out) {
  size_t n = 0;
  if (h->value_len == 0 || h->value_len > 18) return HTTP1_ERR_BAD;
  for (size_t i = 0; i < h->value_len; i++) {
    if (h->value[i] < '0' || h->value[i] > '9') return HTTP1_ERR_BAD;
    n = n * 10 + (size_t)(h->value[i] - '0');
  }
  *out = n;
  return HTTP1_OK;
}

/* Content-Length, Transfer-Encoding and Connection semantics. */
static http1_status apply_framing_headers(http1_req *req, size_t *body_len) {
  bool have_cl = false;
  req->keep_alive = req->minor_version >= 1;
  *body_len = 0;
  for (size_t i = 0; i < req->n_headers; i++) {
    const net_http_header *h = &req->headers[i];
    if (hdr_is(h, "content-length")) {
      size_t n;
      if (parse_content_length(h, &n) != HTTP1_OK) return HTTP1_ERR_BAD;
      if (have_cl && n != *body_len) return HTTP1_ERR_BAD;
      have_cl = true;
      *body_len = n;
    } else if (hdr_is(h, "transfer-encoding")) {
      return HTTP1_ERR_LENGTH;
    } else if (hdr_is(h, "expect")) {
      if (value_has_token(h, "100-continue")) req->expect_continue = true;
    } else if (hdr_is(h, "connection")) {
      if (value_has_token(h, "close")) req->keep_alive = false;
      if (value_has_token(h, "keep-alive")) req->keep_alive = true;
    }
  }
  return HTTP1_OK;
}

http1_status http1_parse(const unsigned char *buf, size_t len, size_t max_body, http1_req *req) {
  /* Tolerate empty lines before a request (RFC 9112 section 2.2). */
  size_t skip = 0;
  req->expect_continue = false;
  while (skip + 1 < len && buf[skip] == '\r' && buf[skip + 1] == '\n') skip += 2;
  const unsigned char *b = buf + skip;
  size_t blen = len - skip;
  const unsigned char *eoh = find_crlfcrlf(b, blen < HTTP1_MAX_HEAD_BYTES ? blen : HTTP1_MAX_HEAD_BYTES);
  if (!eoh) return blen >= HTTP1_MAX_HEAD_BYTES ? HTTP1_ERR_HEAD_TOO_LARGE : HTTP1_NEED_MORE;
  req->n_headers = 0;
  const char *p = (const char *)b, *end = (const char *)eoh;
  const char *nl = memchr(p, '\n', (size_t)(end - p) + 1);
  const char *le = nl && nl > p && nl[-1] == '\r' ? nl - 1 : end;
  http1_status st = parse_request_line(p, le, req);
  if (st != HTTP1_OK) return st;
  p = le + 2;
  while (p < end) {
    nl = memchr(p, '\r', (size_t)(end - p));
    le = nl ? nl : end;
    if (le + 1 < end + 2 && le < end && le[1] != '\n') return HTTP1_ERR_BAD;
    st = parse_header_line(p, le, req);
    if (st != HTTP1_OK) return st;
    p = le + 2;
  }
  size_t body_len;
  st = apply_framing_headers(req, &body_len);
  if (st != HTTP1_OK) return st;
  if (body_len > max_body) return HTTP1_ERR_TOO_LARGE;
  size_t head = (size_t)(eoh - b) + 4;
  if (blen - head < body_len) return HTTP1_NEED_MORE;
  req->body = b + head;
  req->body_len = body_len;
  req->consumed = skip + head + body_len;
  return HTTP1_OK;
}

const char *http1_reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 201: return "Created";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 307: return "Temporary Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 411: return "Length Required";
  case 413: return "Payload Too Large";
  case 415: return "Unsupported Media Type";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}
