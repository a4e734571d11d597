/*
 * fuzz_grpc_frame.c -- libFuzzer target for the gRPC message decoder.
 *
 * Input layout: byte 0 picks the receive limit (0..255 -> 16 << (b % 12)
 * bytes), byte 1 seeds the chunking; the rest is the DATA stream, fed in
 * chunks whose sizes come from a tiny LCG. Every decoded message must lie
 * inside the stream, be within the limit, and equal the bytes a one-shot
 * decode of the same stream yields (chunking must not change the result).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/grpc_frame.h"

#define CHECK(x) \
  do {           \
    if (!(x)) abort(); \
  } while (0)

typedef struct out {
  uint8_t *p;
  size_t len;
  size_t n_msgs;
  int err;
} out;

static void run(const uint8_t *data, size_t len, size_t limit, uint32_t seed, int chunked, out *o) {
  grpc_frame_dec d;
  grpc_frame_dec_init(&d, limit);
  size_t off = 0;
  o->p = malloc(len + 1);
  o->len = 0;
  o->n_msgs = 0;
  o->err = 0;
  while (off < len) {
    size_t chunk = len - off;
    if (chunked) {
      seed = seed * 1103515245u + 12345u;
      size_t c = 1 + (seed >> 16) % 64;
      if (c < chunk) chunk = c;
    }
    size_t pos = 0;
    while (pos < chunk) {
      size_t used, ml;
      const uint8_t *m;
      grpc_dec_status st = grpc_frame_dec_feed(&d, data + off + pos, chunk - pos, &used, &m, &ml);
      CHECK(used <= chunk - pos);
      pos += used;
      if (st == GRPC_DEC_MSG) {
        CHECK(ml <= limit);
        memcpy(o->p + o->len, m, ml); /* total message bytes never exceed input */
        o->len += ml;
        o->n_msgs++;
        continue;
      }
      if (st != GRPC_DEC_NEED_MORE) {
        o->err = (int)st;
        grpc_frame_dec_free(&d);
        return;
      }
      CHECK(pos == chunk);
    }
    off += chunk;
  }
  grpc_frame_dec_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t limit = (size_t)16 << (data[0] % 12);
  uint32_t seed = data[1];
  out a, b;
  run(data + 2, size - 2, limit, seed, 0, &a);
  run(data + 2, size - 2, limit, seed, 1, &b);
  CHECK(a.err == b.err && a.n_msgs == b.n_msgs && a.len == b.len);
  CHECK(a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
  free(a.p);
  free(b.p);
  return 0;
}
