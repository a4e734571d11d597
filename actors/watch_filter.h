/*
 * watch_filter.h -- what is watched, as a compact read-only set that the
 * apply thread tests each event's key against (actors/watch_filter.c).
 *
 * The watch actor builds one from its registry and publishes it with RCU
 * (watch_actor.c, "The filter"); apply skips the events no watcher can
 * match: it neither reads their prev_kv nor encodes them, and a batch left
 * with no event does not wake the watch actor. A filter may say yes to a
 * key no watcher wants (hash collisions, watchers removed since it was
 * built): that only costs an encoding. It never says no to a key that a
 * watcher alive when it was built matches.
 *
 * Immutable once built: any number of readers, no locks.
 */
#ifndef CETCD_ACTORS_WATCH_FILTER_H
#define CETCD_ACTORS_WATCH_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <urcu.h>

/* One watched key or range, as the registry holds it: a single key
 * (end NULL, from_key false), [key, end), or [key, +inf) (from_key). */
typedef struct watch_filter_src {
  const uint8_t *key, *end;
  size_t key_len, end_len;
  bool from_key;
} watch_filter_src;

typedef struct watch_filter_range {
  uint32_t start_off, start_len; /* in bytes */
  uint32_t end_off, end_len;
  bool open;                     /* no end: [start, +inf) */
} watch_filter_range;

typedef struct watch_filter {
  uint64_t gen;               /* the builder's generation (watch_actor.c) */
  uint64_t *slots;            /* key hashes, open addressing; 0 = empty */
  size_t mask;                /* slots - 1 (slots a power of two) */
  size_t nkeys;
  watch_filter_range *rg;     /* disjoint, sorted by start, not adjacent */
  size_t nrg;
  uint8_t *bytes;             /* the ranges' keys */
  struct rcu_head rcu;        /* for the publisher's call_rcu */
} watch_filter;

/* Builds a filter of n sources (single keys and ranges mixed); the sources
 * are copied. Returns NULL when out of memory. */
watch_filter *watch_filter_build(uint64_t gen, const watch_filter_src *src, size_t n);
void watch_filter_free(watch_filter *f);
/* Could a watcher of the filter match this key? NULL matches nothing. */
bool watch_filter_match(const watch_filter *f, const uint8_t *key, size_t len);

#endif
