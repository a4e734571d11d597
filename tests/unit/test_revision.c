/*
 * test_revision.c -- the revision record key: round trip, and LevelDB's
 * bytewise order being revision order.
 */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "store/revision.h"

static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = memcmp(a, b, n);
  if (c) return c < 0 ? -1 : 1;
  return al < bl ? -1 : al > bl;
}

static void test_round_trip(void) {
  rev_pair cases[] = {{0, 0}, {1, 0}, {2, 5}, {255, 256}, {INT64_MAX, INT64_MAX}, {1LL << 40, 3}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    for (int t = 0; t < 2; t++) {
      uint8_t k[REV_KEY_BYTES_MAX];
      size_t n = rev_key_encode(k, cases[i], t);
      CU_ASSERT(n == (t ? REV_KEY_BYTES_MAX : REV_KEY_BYTES));
      CU_ASSERT(k[0] == 'k');
      rev_pair r = {-1, -1};
      bool tomb = false;
      CU_ASSERT(rev_key_decode(k, n, &r, &tomb) == 0);
      CU_ASSERT(r.main == cases[i].main && r.sub == cases[i].sub && tomb == (bool)t);
    }
  }
  /* big-endian on the wire */
  uint8_t k[REV_KEY_BYTES_MAX];
  rev_key_encode(k, (rev_pair){0x0102030405060708LL, 9}, false);
  CU_ASSERT(k[1] == 1 && k[8] == 8 && k[16] == 9);
  /* not a record key */
  rev_pair r = {-1, -1};
  bool tomb = false;
  CU_ASSERT(rev_key_decode((const uint8_t *)"mci", 3, &r, &tomb) == -1);
  k[0] = 'x';
  CU_ASSERT(rev_key_decode(k, REV_KEY_BYTES, &r, &tomb) == -1);
  k[0] = 'k';
  k[REV_KEY_BYTES] = 'q';
  CU_ASSERT(rev_key_decode(k, REV_KEY_BYTES_MAX, &r, &tomb) == -1);
}

static void test_order(void) {
  srand(42);
  for (int i = 0; i < 100000; i++) {
    rev_pair a = {rand() % 4 == 0 ? rand() % 3 : (int64_t)rand() * rand(), rand() % 3 ? rand() % 4 : rand()};
    rev_pair b = {rand() % 2 ? a.main : (int64_t)rand() * rand(), rand() % 4};
    bool ta = rand() % 2, tb = rand() % 2;
    uint8_t ka[REV_KEY_BYTES_MAX], kb[REV_KEY_BYTES_MAX];
    size_t na = rev_key_encode(ka, a, ta), nb = rev_key_encode(kb, b, tb);
    int want = rev_cmp(a, b);
    if (want == 0) want = ta == tb ? 0 : ta ? 1 : -1; /* a tombstone sorts after its put */
    if (bytes_cmp(ka, na, kb, nb) != want) {
      CU_FAIL("byte order differs from revision order");
      return;
    }
  }
  /* a tombstone at (m, s) sorts before (m, s + 1) */
  uint8_t k1[REV_KEY_BYTES_MAX], k2[REV_KEY_BYTES_MAX];
  size_t n1 = rev_key_encode(k1, (rev_pair){7, 1}, true), n2 = rev_key_encode(k2, (rev_pair){7, 2}, false);
  CU_ASSERT(bytes_cmp(k1, n1, k2, n2) < 0);
}

int main(void) {
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("revision", NULL, NULL);
  CU_add_test(s, "round trip", test_round_trip);
  CU_add_test(s, "order", test_order);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  return fails ? 1 : 0;
}
