/*
 * revision.h -- how a revision is spelled as a LevelDB key.
 *
 * A revision is (main, sub): main is the store revision a write request took,
 * sub numbers the changes inside that request (etcd's mvcc/revision.go).
 * Every change is one LevelDB record whose key is
 *
 *   offset  bytes  field
 *   0       1      'k'                       REV_KEY_PREFIX
 *   1       8      main, big-endian u64
 *   9       8      sub, big-endian u64
 *   17      1      't' for a tombstone       (absent for a put)
 *
 * Revisions are never negative, so big-endian bytes sort exactly like the
 * numbers and LevelDB's bytewise order is revision order; a tombstone key
 * sorts right after the (never present) put key of the same revision. The
 * value is a packed mvccpb.KeyValue (for a tombstone: only the key).
 *
 * Meta records live under 'm' (see store/mvcc.c) and never collide.
 */
#ifndef CETCD_STORE_REVISION_H
#define CETCD_STORE_REVISION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REV_KEY_PREFIX 'k'
#define REV_TOMB_MARK 't'
#define REV_KEY_BYTES 17      /* a put's record key */
#define REV_KEY_BYTES_MAX 18  /* a tombstone's record key */

typedef struct rev_pair {
  int64_t main;
  int64_t sub;
} rev_pair;

static inline void rev_put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)(v & 0xff);
    v >>= 8;
  }
}

static inline uint64_t rev_get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

/* Writes the record key into out (REV_KEY_BYTES_MAX bytes of room); returns
 * its length. */
static inline size_t rev_key_encode(uint8_t *out, rev_pair r, bool tombstone) {
  out[0] = REV_KEY_PREFIX;
  rev_put_be64(out + 1, (uint64_t)r.main);
  rev_put_be64(out + 9, (uint64_t)r.sub);
  if (!tombstone) return REV_KEY_BYTES;
  out[REV_KEY_BYTES] = REV_TOMB_MARK;
  return REV_KEY_BYTES_MAX;
}

/* 0 and the revision, or -1 when `p` is not a revision record key. */
static inline int rev_key_decode(const uint8_t *p, size_t len, rev_pair *r, bool *tombstone) {
  if (len != REV_KEY_BYTES && len != REV_KEY_BYTES_MAX) return -1;
  if (p[0] != REV_KEY_PREFIX) return -1;
  if (len == REV_KEY_BYTES_MAX && p[REV_KEY_BYTES] != REV_TOMB_MARK) return -1;
  r->main = (int64_t)rev_get_be64(p + 1);
  r->sub = (int64_t)rev_get_be64(p + 9);
  *tombstone = len == REV_KEY_BYTES_MAX;
  return 0;
}

/* <0, 0, >0 like memcmp. */
static inline int rev_cmp(rev_pair a, rev_pair b) {
  if (a.main != b.main) return a.main < b.main ? -1 : 1;
  if (a.sub != b.sub) return a.sub < b.sub ? -1 : 1;
  return 0;
}

#endif
