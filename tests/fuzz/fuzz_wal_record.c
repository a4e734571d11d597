/*
 * fuzz_wal_record.c -- arbitrary bytes as the content of a WAL segment file,
 * fed to the replay path (wal_scan_segment -> wal_decode_record) and to the
 * single-record decoder. Must never crash, read out of bounds or hang; the
 * invariants below are checked on every input.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_wal_record.c -o fuzz_wal_record
 *   ./fuzz_wal_record tests/fuzz/corpus/wal_record
 *
 * The code under test is compiled into this file: CMake gives the fuzzer
 * flags to the harness only, and a cetcd_core built without coverage
 * instrumentation would leave libFuzzer blind. With every WAL symbol defined
 * here, the linker never pulls wal.o/crc32c.o out of libcetcd_core.a.
 */
#define _GNU_SOURCE /* before any system header: wal.c needs fallocate */
#include "store/crc32c.c"
#include "store/wal.c"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct seen {
  size_t records, bytes;
  const uint8_t *lo, *hi;
} seen;

static int on_record(void *arg, uint8_t type, uint64_t index, const uint8_t *data, size_t len) {
  seen *s = arg;
  (void)index;
  if (type < WAL_REC_ENTRY || type > WAL_REC_META)
    abort();
  if (data < s->lo || data + len > s->hi) /* points inside the input */
    abort();
  s->records++;
  s->bytes += wal_record_bytes(len);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len) {
  seen s = {.lo = buf, .hi = buf + len};
  wal_scan_result res;
  if (wal_scan_segment(buf, len, on_record, &s, &res) != 0)
    abort();
  if (res.records != s.records || res.valid_bytes != s.bytes || res.valid_bytes > len)
    abort();
  if (res.valid_after > 0 && (res.valid_after_off <= res.valid_bytes || res.valid_after_off >= len))
    abort();
  /* a re-encoded copy of each record decodes to the same bytes */
  size_t off = 0;
  for (size_t i = 0; i < res.records; i++) {
    wal_record r;
    size_t used = 0;
    if (wal_decode_record(buf + off, len - off, &r, &used) != WAL_DECODE_OK)
      abort();
    uint8_t *copy = malloc(used);
    wal_encode_record(copy, r.type, r.index, r.data, r.len);
    if (memcmp(copy, buf + off, used) != 0)
      abort();
    free(copy);
    off += used;
  }
  return 0;
}
