/*
 * crc32c.c -- CRC-32C, software (slicing-by-8) and SSE4.2.
 *
 * The table version does ~1 byte/cycle per table lookup chain; the SSE4.2
 * `crc32` instruction does 8 bytes per instruction (latency 3 cycles), which
 * matters because every WAL record is checksummed twice (on write and on
 * read) and replay checksums the whole log.
 */
#include "store/crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
    crc_table[0][n] = c;
  }
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = crc_table[0][n];
    for (int t = 1; t < 8; t++) {
      c = crc_table[0][c & 0xff] ^ (c >> 8);
      crc_table[t][n] = c;
    }
  }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
}

static uint32_t crc_sw_raw(uint32_t crc, const uint8_t *p, size_t len) {
  while (len && ((uintptr_t)p & 7)) {
    crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    len--;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= crc; /* little-endian: the low 4 bytes take the running crc */
    crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
          crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
          crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
          crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc_hw_raw(uint32_t crc, const uint8_t *p,
                                                            size_t len) {
  uint64_t c = crc;
  while (len && ((uintptr_t)p & 7)) {
    c = _mm_crc32_u8((uint32_t)c, *p++);
    len--;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    len -= 8;
  }
  while (len--)
    c = _mm_crc32_u8((uint32_t)c, *p++);
  return (uint32_t)c;
}
#else
static uint32_t crc_hw_raw(uint32_t crc, const uint8_t *p, size_t len) {
  return crc_sw_raw(crc, p, len);
}
#endif

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&crc_once, crc_init);
  return ~crc_sw_raw(~crc, buf, len);
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&crc_once, crc_init);
  if (crc_hw)
    return ~crc_hw_raw(~crc, buf, len);
  return ~crc_sw_raw(~crc, buf, len);
}

int crc32c_hw_available(void) {
  pthread_once(&crc_once, crc_init);
  return crc_hw;
}
