/*
 * fuzz_http1.c -- libFuzzer target for the HTTP/1.1 request parser: any
 * input must yield NEED_MORE, an error, or a request whose pointers all lie
 * inside the input and whose `consumed` covers its head and body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http1.h"

#define CHECK(x) \
  do {           \
    if (!(x)) abort(); \
  } while (0)

static int inside(const void *p, size_t n, const uint8_t *b, size_t len) {
  const uint8_t *q = p;
  return q >= b && q + n <= b + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static http1_req r;
  http1_status st = http1_parse(data, size, 1024, &r);
  if (st != HTTP1_OK) return 0;
  CHECK(r.consumed <= size);
  CHECK(strlen(r.method) > 0 && strlen(r.target) > 0);
  CHECK(r.body_len <= 1024 && inside(r.body, r.body_len, data, r.consumed));
  for (size_t i = 0; i < r.n_headers; i++) {
    CHECK(inside(r.headers[i].name, r.headers[i].name_len, data, size));
    CHECK(inside(r.headers[i].value, r.headers[i].value_len, data, size));
  }
  return 0;
}
