/*
 * test_watch_filter.c -- the watched-key filter (actors/watch_filter.c)
 * against brute force: random single keys, ranges and from-key watches over
 * a small alphabet (so ranges overlap, touch and nest), and every short key
 * of that alphabet asked. A filter may say yes without cause (hash
 * collisions), never no to a watched key; with this few keys a 64-bit hash
 * collides with negligible odds, so here it must agree exactly.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "actors/watch_filter.h"

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static bool brute(const watch_filter_src *src, size_t n, const uint8_t *k, size_t kl) {
  for (size_t i = 0; i < n; i++) {
    const watch_filter_src *s = &src[i];
    if (!s->end && !s->from_key) {
      if (key_cmp(s->key, s->key_len, k, kl) == 0) return true;
    } else if (key_cmp(s->key, s->key_len, k, kl) <= 0 &&
               (s->from_key || key_cmp(k, kl, s->end, s->end_len) < 0)) {
      return true;
    }
  }
  return false;
}

/* A random key of 1..3 bytes from "abcd". */
static size_t rand_key(uint64_t *rng, uint8_t *k) {
  *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
  size_t len = 1 + *rng % 3;
  for (size_t i = 0; i < len; i++) k[i] = (uint8_t)('a' + (*rng >> (8 + 2 * i)) % 4);
  return len;
}

static void test_empty(void) {
  CU_ASSERT(!watch_filter_match(NULL, (const uint8_t *)"a", 1));
  watch_filter *f = watch_filter_build(5, NULL, 0);
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT(f->gen == 5);
  CU_ASSERT(!watch_filter_match(f, (const uint8_t *)"a", 1));
  CU_ASSERT(!watch_filter_match(f, (const uint8_t *)"", 0));
  watch_filter_free(f);
}

static void test_against_brute_force(void) {
  uint64_t rng = 0x9e3779b97f4a7c15ULL;
  static uint8_t keys[64][2][3];
  watch_filter_src src[64];
  for (int round = 0; round < 300; round++) {
    size_t n = (size_t)round % 40;
    for (size_t i = 0; i < n; i++) {
      watch_filter_src *s = &src[i];
      memset(s, 0, sizeof(*s));
      s->key = keys[i][0];
      s->key_len = rand_key(&rng, keys[i][0]);
      int kind = (int)(rng % (round % 3 == 0 ? 10 : 3)); /* some rounds mostly ranges */
      if (kind == 1) s->from_key = true;
      if (kind >= 2) {
        s->end = keys[i][1];
        s->end_len = rand_key(&rng, keys[i][1]);
        if (key_cmp(s->key, s->key_len, s->end, s->end_len) >= 0) s->end = NULL, s->end_len = 0;
      }
    }
    watch_filter *f = watch_filter_build((uint64_t)round, src, n);
    CU_ASSERT_FATAL(f != NULL);
    uint8_t k[3];
    for (size_t len = 0; len <= 3; len++) {
      size_t total = 1;
      for (size_t i = 0; i < len; i++) total *= 5;
      for (size_t v = 0; v < total; v++) { /* every key over "abcde" */
        size_t x = v;
        for (size_t i = 0; i < len; i++) k[i] = (uint8_t)('a' + x % 5), x /= 5;
        CU_ASSERT(watch_filter_match(f, k, len) == brute(src, n, k, len));
      }
    }
    watch_filter_free(f);
  }
}

int main(void) {
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("watch_filter", NULL, NULL);
  CU_add_test(s, "empty and NULL match nothing", test_empty);
  CU_add_test(s, "keys and ranges = brute force", test_against_brute_force);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
