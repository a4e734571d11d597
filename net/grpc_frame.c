#include "net/grpc_frame.h"

#include <stdlib.h>
#include <string.h>

void grpc_frame_dec_init(grpc_frame_dec *d, size_t max_msg_bytes) {
  memset(d, 0, sizeof(*d));
  d->max_msg_bytes = max_msg_bytes;
}

void grpc_frame_dec_reset(grpc_frame_dec *d) {
  d->hdr_have = 0;
  d->have = 0;
  d->need = 0;
  d->err = GRPC_DEC_NEED_MORE;
  d->err_len = 0;
}

void grpc_frame_dec_free(grpc_frame_dec *d) {
  free(d->buf);
  d->buf = NULL;
  d->cap = 0;
}

int grpc_frame_dec_partial(const grpc_frame_dec *d) { return d->hdr_have > 0; }

static grpc_dec_status dec_fail(grpc_frame_dec *d, grpc_dec_status st, uint32_t v) {
  d->err = st;
  d->err_len = v;
  return st;
}

/* Validates a complete prefix, in grpc-go's order: the length check comes
 * first (recvMsg), the payload format after (checkRecvPayload). */
static grpc_dec_status dec_check_prefix(grpc_frame_dec *d) {
  d->flag = d->hdr[0];
  d->need = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
            (uint32_t)d->hdr[3] << 8 | (uint32_t)d->hdr[4];
  d->have = 0;
  if (d->need > d->max_msg_bytes) return dec_fail(d, GRPC_DEC_ERR_TOO_LARGE, d->need);
  if (d->flag == 1) return dec_fail(d, GRPC_DEC_ERR_COMPRESSED, 1);
  if (d->flag > 1) return dec_fail(d, GRPC_DEC_ERR_FORMAT, d->flag);
  return GRPC_DEC_NEED_MORE;
}

static int dec_reserve(grpc_frame_dec *d, size_t n) {
  if (n <= d->cap) return 0;
  size_t cap = d->cap ? d->cap : 256;
  while (cap < n) cap *= 2;
  if (cap > d->max_msg_bytes && n <= d->max_msg_bytes) cap = d->max_msg_bytes;
  uint8_t *p = realloc(d->buf, cap);
  if (!p) return -1;
  d->buf = p;
  d->cap = cap;
  return 0;
}

static grpc_dec_status dec_done(grpc_frame_dec *d, const uint8_t *p, size_t n,
                                const uint8_t **msg, size_t *msg_len) {
  *msg = n ? p : (const uint8_t *)"";
  *msg_len = n;
  d->hdr_have = 0;
  d->have = 0;
  d->n_msgs++;
  return GRPC_DEC_MSG;
}

grpc_dec_status grpc_frame_dec_feed(grpc_frame_dec *d, const uint8_t *data, size_t len,
                                    size_t *consumed, const uint8_t **msg, size_t *msg_len) {
  size_t off = 0;
  *consumed = 0;
  *msg = NULL;
  *msg_len = 0;
  if (d->err != GRPC_DEC_NEED_MORE) return d->err;
  while (off < len || (d->hdr_have == 5 && d->have == d->need)) {
    if (d->hdr_have < 5) {
      size_t take = 5u - d->hdr_have;
      if (take > len - off) take = len - off;
      memcpy(d->hdr + d->hdr_have, data + off, take);
      d->hdr_have = (uint8_t)(d->hdr_have + take);
      off += take;
      if (d->hdr_have < 5) break;
      grpc_dec_status st = dec_check_prefix(d);
      if (st != GRPC_DEC_NEED_MORE) {
        *consumed = off;
        return st;
      }
      /* Whole message inside this chunk: hand out a pointer, no copy. */
      if (len - off >= d->need) {
        const uint8_t *p = data + off;
        off += d->need;
        *consumed = off;
        return dec_done(d, p, d->need, msg, msg_len);
      }
      continue;
    }
    size_t take = d->need - d->have;
    if (take > len - off) take = len - off;
    if (take) {
      if (dec_reserve(d, d->need) != 0) return dec_fail(d, GRPC_DEC_ERR_NOMEM, d->need);
      memcpy(d->buf + d->have, data + off, take);
      d->have += take;
      off += take;
    }
    if (d->have == d->need) {
      *consumed = off;
      return dec_done(d, d->buf, d->need, msg, msg_len);
    }
  }
  *consumed = off;
  return GRPC_DEC_NEED_MORE;
}

void grpc_frame_put_prefix(uint8_t out[5], uint32_t len) {
  out[0] = 0;
  out[1] = (uint8_t)(len >> 24);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 8);
  out[4] = (uint8_t)len;
}

size_t grpc_percent_encode(const char *in, char *out, size_t out_cap) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  if (out_cap == 0) return 0;
  for (const unsigned char *p = (const unsigned char *)in; in && *p; p++) {
    int plain = *p >= 0x20 && *p <= 0x7E && *p != '%';
    size_t need = plain ? 1 : 3;
    if (o + need >= out_cap) break;
    if (plain) {
      out[o++] = (char)*p;
    } else {
      out[o++] = '%';
      out[o++] = hex[*p >> 4];
      out[o++] = hex[*p & 15];
    }
  }
  out[o] = '\0';
  return o;
}
