/*
 * test_index.c -- the RCU B-tree: lookups at revisions, ranges, copy-on-write
 * snapshots, compaction, and readers in threads while the writer changes the
 * tree (and compacts it).
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

#include "store/index.h"

static void key_of(char *buf, int i) { snprintf(buf, 16, "k%05d", i); }

static void put_at(idx *t, int i, int64_t main, int64_t create, int64_t ver) {
  char k[16];
  key_of(k, i);
  /* the lease field carries a checksum of the change for the readers */
  idx_rev ch = {.main = main, .create = create, .version = ver, .lease = main * 3 + 1};
  CU_ASSERT(idx_append(t, (uint8_t *)k, strlen(k), &ch) != NULL);
}

static void tomb_at(idx *t, int i, int64_t main) {
  char k[16];
  key_of(k, i);
  idx_rev ch = {.main = main, .tomb = 1};
  CU_ASSERT(idx_append(t, (uint8_t *)k, strlen(k), &ch) != NULL);
}

static const idx_rev *get(const idx_node *root, int i, int64_t at) {
  char k[16];
  key_of(k, i);
  idx_key *key = idx_find(root, (uint8_t *)k, strlen(k));
  return key ? idx_key_at(key, at) : NULL;
}

typedef struct collect {
  int n;
  int64_t at;
  int keys[20000];
} collect;

static bool collect_fn(void *arg, const idx_key *k) {
  collect *c = arg;
  if (!idx_key_at(k, c->at)) return true;
  c->keys[c->n++] = atoi((const char *)k->key + 1);
  return c->n < 20000;
}

static void test_basic(void) {
  idx *t = idx_new();
  CU_ASSERT_FATAL(t != NULL);
  put_at(t, 1, 2, 2, 1);
  put_at(t, 2, 3, 3, 1);
  put_at(t, 1, 4, 2, 2);
  tomb_at(t, 2, 5);
  put_at(t, 2, 6, 6, 1);
  idx_publish(t, 6, -1);
  const idx_node *root = idx_writer_node(t);
  CU_ASSERT(get(root, 1, 1) == NULL);
  CU_ASSERT(get(root, 1, 2)->main == 2);
  CU_ASSERT(get(root, 1, 3)->main == 2);
  CU_ASSERT(get(root, 1, 4)->version == 2);
  CU_ASSERT(get(root, 2, 4)->main == 3);
  CU_ASSERT(get(root, 2, 5) == NULL);
  CU_ASSERT(get(root, 2, 6)->create == 6);
  CU_ASSERT(get(root, 3, 6) == NULL);
  CU_ASSERT(idx_key_count(t) == 2);
  /* many keys, in reverse, through several splits; ranges */
  for (int i = 2000; i >= 3; i--) put_at(t, i, 7, 7, 1);
  idx_publish(t, 7, -1);
  collect *c = calloc(1, sizeof(*c));
  c->at = 7;
  idx_range(idx_writer_node(t), (const uint8_t *)"k00010", 6, (const uint8_t *)"k00020", 6, collect_fn, c);
  CU_ASSERT(c->n == 10 && c->keys[0] == 10 && c->keys[9] == 19);
  c->n = 0;
  idx_range(idx_writer_node(t), (const uint8_t *)"k01990", 6, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 11 && c->keys[10] == 2000);
  c->n = 0;
  idx_range(idx_writer_node(t), NULL, 0, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 2000);
  bool sorted = true;
  for (int i = 0; i < c->n; i++) sorted &= c->keys[i] == i + 1;
  CU_ASSERT(sorted);
  c->n = 0;
  c->at = 6;
  idx_range(idx_writer_node(t), NULL, 0, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 2);
  c->n = 0;
  c->at = 7;
  idx_range(idx_writer_node(t), (const uint8_t *)"k00020", 6, (const uint8_t *)"k00010", 6, collect_fn, c);
  CU_ASSERT(c->n == 0);
  free(c);
  idx_free(t);
}

/* A snapshot taken before the writer changes the tree answers as before. */
static void test_cow_snapshot(void) {
  idx *t = idx_new();
  for (int i = 0; i < 3000; i += 2) put_at(t, i, 2, 2, 1);
  idx_publish(t, 2, -1);
  rcu_read_lock();
  const idx_root *old = idx_reader_root(t);
  const idx_node *old_node = old->node;
  /* new keys between the old ones, updates of old keys, a delete */
  for (int i = 1; i < 3000; i += 2) put_at(t, i, 3, 3, 1);
  for (int i = 0; i < 3000; i += 10) put_at(t, i, 3, 2, 2);
  tomb_at(t, 4, 3);
  idx_publish(t, 3, -1);
  CU_ASSERT(idx_reader_root(t)->node != old_node);
  collect *c = calloc(1, sizeof(*c));
  c->at = 2;
  idx_range(old_node, NULL, 0, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 1500);
  bool even = true;
  for (int i = 0; i < c->n; i++) even &= c->keys[i] == 2 * i;
  CU_ASSERT(even);
  CU_ASSERT(get(old_node, 1, 3) == NULL); /* not in the old tree at all */
  CU_ASSERT(get(old_node, 10, 2)->version == 1);
  CU_ASSERT(get(old_node, 4, 2) != NULL);
  c->n = 0;
  c->at = 3;
  idx_range(idx_reader_root(t)->node, NULL, 0, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 2999);
  rcu_read_unlock();
  free(c);
  idx_free(t);
}

/* Within one batch a node is copied at most once: a batch of 1000 inserts
 * copies far fewer than 1000 paths; updates of existing keys copy nothing. */
static void test_copy_once_per_batch(void) {
  idx *t = idx_new();
  for (int i = 0; i < 20000; i += 2) put_at(t, i, 2, 2, 1);
  idx_publish(t, 2, -1);
  uint64_t c0 = idx_nodes_copied(t);
  unsigned seed = 3;
  for (int j = 0; j < 1000; j++) put_at(t, (int)(rand_r(&seed) % 10000) * 2 + 1, 3, 3, 1);
  idx_publish(t, 3, -1);
  uint64_t copied = idx_nodes_copied(t) - c0;
  /* 10000 keys make ~500 leaves under ~20 inner nodes: every leaf and inner
   * node copied at most once; path copying per insert would be ~3000 */
  CU_ASSERT(copied > 0 && copied < 700);
  printf("(%llu nodes copied for 1000 inserts) ", (unsigned long long)copied);
  c0 = idx_nodes_copied(t);
  for (int i = 0; i < 20000; i += 2) put_at(t, i, 4, 2, 2);
  idx_publish(t, 4, -1);
  CU_ASSERT(idx_nodes_copied(t) == c0);
  idx_free(t);
}

static void drop_count(void *arg, const idx_key *k, const idx_rev *r) {
  (void)k, (void)r;
  (*(int *)arg)++;
}

static void test_compact(void) {
  idx *t = idx_new();
  put_at(t, 1, 2, 2, 1); /* key 1: 2, 3, 5 */
  put_at(t, 1, 3, 2, 2);
  put_at(t, 2, 4, 4, 1); /* key 2: 4, tomb 6 */
  put_at(t, 1, 5, 2, 3);
  tomb_at(t, 2, 6);
  put_at(t, 3, 7, 7, 1); /* key 3: 7, tomb 8, 9 */
  tomb_at(t, 3, 8);
  put_at(t, 3, 9, 9, 1);
  idx_publish(t, 9, 4);
  int dropped = 0;
  CU_ASSERT(idx_compact(t, 4, drop_count, &dropped) == 0);
  CU_ASSERT(dropped == 1); /* key 1 @2 */
  const idx_node *root = idx_writer_node(t);
  CU_ASSERT(get(root, 1, 4)->main == 3);
  CU_ASSERT(get(root, 2, 4)->main == 4);
  idx_publish(t, 9, 8);
  dropped = 0;
  CU_ASSERT(idx_compact(t, 8, drop_count, &dropped) == 0);
  /* key 1 keeps 5 (drops 3); key 2's newest <= 8 is a tombstone: gone (4, 6);
   * key 3's newest <= 8 is the tombstone 8: 7 and 8 go, 9 stays */
  CU_ASSERT(dropped == 1 + 2 + 2);
  root = idx_writer_node(t);
  CU_ASSERT(idx_key_count(t) == 2);
  CU_ASSERT(idx_find(root, (const uint8_t *)"k00002", 6) == NULL);
  CU_ASSERT(get(root, 1, 8)->main == 5 && get(root, 1, 8)->version == 3);
  CU_ASSERT(get(root, 3, 8) == NULL);
  CU_ASSERT(get(root, 3, 9)->main == 9);
  /* a big compaction that removes many keys rebuilds the tree */
  for (int i = 10; i < 5000; i++) put_at(t, i, 10, 10, 1);
  for (int i = 10; i < 5000; i += 2) tomb_at(t, i, 11);
  idx_publish(t, 11, 11);
  dropped = 0;
  CU_ASSERT(idx_compact(t, 11, drop_count, &dropped) == 0);
  CU_ASSERT(dropped == 2495 * 2);
  CU_ASSERT(idx_key_count(t) == 2 + 2495);
  collect *c = calloc(1, sizeof(*c));
  c->at = 11;
  idx_range(idx_writer_node(t), NULL, 0, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 2497 && c->keys[0] == 1 && c->keys[1] == 3 && c->keys[2] == 11 && c->keys[2496] == 4999);
  /* inserts still work on the rebuilt tree */
  for (int i = 10; i < 5000; i += 2) put_at(t, i, 12, 12, 1);
  idx_publish(t, 12, 11);
  c->n = 0;
  c->at = 12;
  idx_range(idx_writer_node(t), NULL, 0, NULL, 0, collect_fn, c);
  CU_ASSERT(c->n == 4992);
  free(c);
  idx_free(t);
}

/* ---- readers in threads ---------------------------------------------------- */

#define NKEYS 4000
#define NREV 200000
static idx *T;
static int live_at[NREV + 2]; /* number of live keys at each revision */
static atomic_bool stop;
static atomic_long reads, failures, seen;

static bool check_fn(void *arg, const idx_key *k) {
  collect *c = arg;
  const idx_rev *r = idx_key_at(k, c->at);
  if (!r) return true;
  if (r->main > c->at || r->lease != r->main * 3 + 1 || r->version < 1 || r->create > r->main)
    atomic_fetch_add(&failures, 1);
  c->n++;
  return true;
}

static void *reader(void *arg) {
  (void)arg;
  rcu_register_thread();
  collect *c = calloc(1, sizeof(*c));
  unsigned seed = (unsigned)(uintptr_t)c;
  while (!atomic_load(&stop)) {
    rcu_read_lock();
    const idx_root *root = idx_reader_root(T);
    cmm_smp_rmb();
    int64_t at = root->rev;
    if (rand_r(&seed) % 2 && at - 30 > root->compact_rev) at -= rand_r(&seed) % 30;
    c->n = 0;
    c->at = at;
    idx_range(root->node, NULL, 0, NULL, 0, check_fn, c);
    /* a compaction that overtook the read may have cut it: not an error */
    if (at >= idx_compact_rev(T) && c->n != live_at[at]) atomic_fetch_add(&failures, 1);
    rcu_read_unlock();
    atomic_fetch_add(&reads, 1);
    atomic_fetch_add(&seen, c->n);
  }
  free(c);
  rcu_unregister_thread();
  return NULL;
}

static void test_concurrent_readers(void) {
  T = idx_new();
  static bool alive[NKEYS];
  static int64_t created[NKEYS], version[NKEYS];
  memset(alive, 0, sizeof(alive));
  live_at[1] = 0;
  idx_publish(T, 1, -1);
  atomic_store(&stop, false);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, reader, NULL);
  unsigned seed = 7;
  int64_t rev = 1, compact = -1;
  int live = 0;
  while (rev < NREV) {
    for (int j = 0; j < 100 && rev < NREV; j++) { /* one batch */
      int i = (int)(rand_r(&seed) % NKEYS);
      rev++;
      if (alive[i] && rand_r(&seed) % 4 == 0) {
        tomb_at(T, i, rev);
        alive[i] = false, live--;
      } else {
        if (!alive[i]) created[i] = rev, version[i] = 0, live++;
        alive[i] = true;
        put_at(T, i, rev, created[i], ++version[i]);
      }
      live_at[rev] = live;
    }
    if (rev % 5000 < 100) compact = rev - 200;
    idx_publish(T, rev, compact);
    if (rev % 5000 < 100) idx_compact(T, compact, drop_count, &(int){0});
    usleep(50); /* let the readers interleave with many publishes */
  }
  atomic_store(&stop, true);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  CU_ASSERT(atomic_load(&failures) == 0);
  CU_ASSERT(atomic_load(&reads) > 10);
  printf("(%ld reads, %ld keys seen) ", atomic_load(&reads), atomic_load(&seen));
  idx_free(T);
}

int main(void) {
  rcu_register_thread();
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("index", NULL, NULL);
  CU_add_test(s, "basic", test_basic);
  CU_add_test(s, "copy-on-write snapshot", test_cow_snapshot);
  CU_add_test(s, "one copy per node per batch", test_copy_once_per_batch);
  CU_add_test(s, "compact", test_compact);
  CU_add_test(s, "concurrent readers", test_concurrent_readers);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  rcu_unregister_thread();
  return fails ? 1 : 0;
}
