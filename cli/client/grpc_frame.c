/*
 * grpc_frame.c -- gRPC's length-prefixed message framing and the
 * grpc-message percent-encoding (grpc/doc/PROTOCOL-HTTP2.md). Pure
 * functions of their inputs, plus the reusable byte buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/client/client_int.h"

int cc_buf_reserve(cc_buf *b, size_t extra) {
  if (b->cap - b->len >= extra) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra) cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

int cc_buf_append(cc_buf *b, const void *data, size_t len) {
  if (cc_buf_reserve(b, len) != 0) return -1;
  memcpy(b->p + b->len, data, len);
  b->len += len;
  return 0;
}

void cc_buf_free(cc_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void cc_grpc_put_prefix(uint8_t *dst, uint32_t len) {
  dst[0] = 0;
  dst[1] = (uint8_t)(len >> 24);
  dst[2] = (uint8_t)(len >> 16);
  dst[3] = (uint8_t)(len >> 8);
  dst[4] = (uint8_t)len;
}

int cc_grpc_next_msg(const uint8_t *buf, size_t len, const uint8_t **msg, size_t *msg_len,
                     size_t *consumed) {
  if (len < CC_GRPC_PREFIX_BYTES) return 0;
  /* We never send grpc-accept-encoding, so a compressed message is a
   * protocol violation by the server. */
  if (buf[0] != 0) return -1;
  uint32_t n = ((uint32_t)buf[1] << 24) | ((uint32_t)buf[2] << 16) | ((uint32_t)buf[3] << 8) |
               (uint32_t)buf[4];
  if (n > CC_GRPC_MSG_MAX) return -1;
  if (len - CC_GRPC_PREFIX_BYTES < n) return 0;
  *msg = buf + CC_GRPC_PREFIX_BYTES;
  *msg_len = n;
  *consumed = CC_GRPC_PREFIX_BYTES + (size_t)n;
  return 1;
}

static int hexval(uint8_t ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

size_t cc_grpc_percent_decode(const uint8_t *src, size_t len, char *dst, size_t dst_len) {
  size_t o = 0;
  if (dst_len == 0) return 0;
  for (size_t i = 0; i < len && o + 1 < dst_len; i++) {
    uint8_t ch = src[i];
    /* A malformed escape is kept literally, as grpc-go does. */
    if (ch == '%' && i + 2 < len && hexval(src[i + 1]) >= 0 && hexval(src[i + 2]) >= 0) {
      ch = (uint8_t)(hexval(src[i + 1]) * 16 + hexval(src[i + 2]));
      i += 2;
    }
    dst[o++] = (char)ch;
  }
  dst[o] = '\0';
  return o;
}
