/*
 * index.h -- the in-memory index: key -> that key's revision history.
 *
 * DESIGN
 *
 * A B-tree of keys (idx_key), ordered bytewise. Each key holds its history as
 * a newest-first singly linked list of changes (idx_rev): a put carries the
 * key's create revision, version and lease at that change; a tombstone ends a
 * generation. "The key at revision R" is the first change with main <= R,
 * unless that change is a tombstone (then the key does not exist at R).
 *
 * One writer (the apply thread), any number of lock-free readers (liburcu,
 * default flavour: rcu_read_lock around every use of a root).
 *
 *  - The writer prepends a change to an existing key in place: the new node
 *    points at the old head and is published with rcu_assign_pointer. A reader
 *    with an older snapshot skips it because its main revision is newer than
 *    the snapshot's revision. So a put to an existing key copies nothing.
 *  - A new key changes the tree: the writer copies the path it changes
 *    (copy-on-write) and the copy becomes visible only when idx_publish()
 *    installs a new root. Nodes created since the last publish are tagged with
 *    the current epoch and are mutated in place: a batch of 1000 inserts does
 *    not copy 1000 paths. Replaced nodes are freed with call_rcu after the
 *    publish that made them unreachable.
 *  - The published root (idx_root) carries the committed revision and the
 *    compact revision, so a reader has a consistent snapshot in one load.
 *  - Compaction cuts list tails (rcu_assign_pointer(next, NULL)) and, when
 *    keys vanish, rebuilds the tree; freed memory waits for a grace period.
 *    A reader that read at a revision below the (new) compact revision may
 *    have seen a cut list: it must re-check idx_compact_rev() after reading
 *    and answer "compacted" (see store/mvcc.c).
 *
 * The writer must be a registered RCU thread (call_rcu needs it) and must not
 * hold rcu_read_lock while calling idx_compact (it waits for a grace period).
 */
#ifndef CETCD_STORE_INDEX_H
#define CETCD_STORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One change of one key. 48 bytes. Immutable once published, except `next`,
 * which compaction may cut to NULL. */
typedef struct idx_rev {
  struct idx_rev *next; /* the previous (older) change; RCU-protected */
  int64_t main;         /* revision of this change */
  int64_t create;       /* create revision of the generation; 0 = tombstone */
  int64_t version;      /* version after this change; 0 = tombstone */
  int64_t lease;        /* lease attached by this put; 0 = none */
  uint32_t sub;         /* sub revision within `main` */
  uint32_t tomb;        /* 1 = this change deleted the key */
} idx_rev;

/* A copy of one change's value, cached on its key so that a read of the
 * newest revision needs no LevelDB read. Immutable; replaced, never edited. */
typedef struct idx_val {
  int64_t main; /* the change it belongs to */
  uint32_t sub;
  uint32_t len;
  uint8_t data[];
} idx_val;

typedef struct idx_key {
  idx_rev *head; /* newest change; RCU-protected */
  idx_val *val;  /* cached value of some change (normally the newest put) or
                    NULL; RCU-protected. Check main/sub before using it. */
  uint32_t len;
  uint8_t key[];
} idx_key;

typedef struct idx_node idx_node;

/* A published snapshot. */
typedef struct idx_root {
  idx_node *node;      /* tree root; NULL = no keys */
  int64_t rev;         /* newest committed revision */
  int64_t compact_rev; /* -1 before any compaction */
} idx_root;

typedef struct idx idx;

idx *idx_new(void);
/* No reader may be running. Waits for pending call_rcu callbacks. */
void idx_free(idx *t);

/* --- any thread, inside rcu_read_lock (the writer may skip the lock) ------ */
const idx_root *idx_reader_root(idx *t);
/* The newest compact revision published, for the re-check after a read. */
int64_t idx_compact_rev(idx *t);
/* NULL if the key has never been in the tree (or was compacted away). */
idx_key *idx_find(const idx_node *root, const uint8_t *key, size_t len);
/* The key's change visible at revision at_rev, or NULL if the key does not
 * exist at at_rev (never created, deleted, or only newer changes). */
const idx_rev *idx_key_at(const idx_key *k, int64_t at_rev);
/* Calls fn for each key k with key <= k < end, in order, until fn returns
 * false. end_len == 0 means no upper bound. */
typedef bool (*idx_visit_fn)(void *arg, const idx_key *k);
void idx_range(const idx_node *root, const uint8_t *key, size_t key_len, const uint8_t *end,
               size_t end_len, idx_visit_fn fn, void *arg);

/* --- the writer ----------------------------------------------------------- */
/* The writer's working tree (includes unpublished changes). */
const idx_node *idx_writer_node(const idx *t);
/* Prepends a change to `key` (inserting the key if it is new). The new
 * change's `next` is set here. Returns the key. */
idx_key *idx_append(idx *t, const uint8_t *key, size_t len, const idx_rev *change);
/* idx_append for a key already in the tree (k from idx_find on the
 * writer's tree): saves the lookup. */
void idx_prepend(idx *t, idx_key *k, const idx_rev *change);
/* Replaces k's cached value with v (malloc'd, owned by the index from now
 * on; NULL = no cache). The old one is freed after the next publish and a
 * grace period. */
void idx_set_val(idx *t, idx_key *k, idx_val *v);
/* The same, freeing the old value at once: only while no reader can reach
 * the index (rebuilding it in mvcc_open). */
void idx_set_val_unshared(idx *t, idx_key *k, idx_val *v);
/* Makes every change so far visible to readers, with these revisions. */
int idx_publish(idx *t, int64_t rev, int64_t compact_rev);
/* Number of keys in the working tree. */
uint64_t idx_key_count(const idx *t);
/* Nodes copied (copy-on-write) since idx_new: for tests and metrics. */
uint64_t idx_nodes_copied(const idx *t);

/* Compaction at at_rev: keeps, per key, the newest change <= at_rev unless it
 * is a tombstone (then that and all older changes go; a key left with nothing
 * leaves the tree) and every newer change. Must run between batches, after a
 * publish that set compact_rev >= at_rev. Calls drop(arg, key, change) for each
 * removed change (before it is freed), then waits for an RCU grace period, so
 * when this returns no reader can still be using a removed change and the
 * caller may delete the records. Returns 0 or -1 on out of memory. */
typedef void (*idx_drop_fn)(void *arg, const idx_key *k, const idx_rev *change);
int idx_compact(idx *t, int64_t at_rev, idx_drop_fn drop, void *arg);

#endif
