/*
 * mvcc_history.h -- reading the store's change history in bounded chunks,
 * for watchers that start in the past or fell behind (the watch actor's
 * catch-up; etcd's watchableStore.syncWatchers reads the same records).
 *
 * Threads. Any thread registered with liburcu, concurrently with the apply
 * thread's writes: it reads committed LevelDB records only (LevelDB reads
 * are thread-safe) through mvcc_changes(), which holds rcu_read_lock for
 * one chunk. A chunk is bounded (max_events), so a compaction's commit,
 * which waits for such readers, waits for one chunk at most.
 *
 * Compaction. A start revision below the compact revision cannot be served
 * (the records are gone or going): the read returns CETCD_E_COMPACTED and
 * the watcher must be canceled with compact_revision = mvcc_compact_rev().
 */
#ifndef CETCD_STORE_MVCC_HISTORY_H
#define CETCD_STORE_MVCC_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/mvcc.h"

typedef struct mvcc_hist_query {
  /* Keys, with etcd's watch rules: range_end empty = just key; range_end
   * "\0" = every key >= key; else [key, range_end). key empty + range_end
   * "\0" = every key. */
  const uint8_t *key;
  size_t key_len;
  const uint8_t *range_end;
  size_t range_end_len;
  int64_t from_rev;  /* first revision wanted (>= 1) */
  int64_t to_rev;    /* last revision wanted; <= 0: the current revision */
  size_t max_events; /* records examined per call (0 = 1024); the chunk
                      * always ends on a revision boundary, so one revision
                      * with more changes than this is read whole */
  size_t max_bytes;  /* keys + values read per call (0 = no bound); also
                      * ends the chunk on a revision boundary */
  bool prev_kv;      /* also read each event's previous KeyValue */
} mvcc_hist_query;

/* One change. kv and prev_kv (NULL when not asked, or when the key did not
 * exist at mod_revision - 1, or that revision is compacted) are valid only
 * during the call. type is MVCCPB__EVENT__EVENT_TYPE__PUT or __DELETE; a
 * delete's kv has only key and mod_revision, as in etcd's watch events. */
typedef void (*mvcc_hist_fn)(void *arg, int type, const Mvccpb__KeyValue *kv,
                             const Mvccpb__KeyValue *prev_kv);

/* Calls fn for each change in the key range with from_rev <= revision <=
 * to_rev, in revision order, examining at most about max_events records.
 * *next_rev gets the first revision not yet read: to_rev + 1 when the chunk
 * reached to_rev (the caller is done), else where the next call starts.
 * Returns 0, -CETCD_E_COMPACTED (from_rev below the compact revision;
 * nothing is reported), or another negative cetcd_err. */
int mvcc_history_read(mvcc *m, const mvcc_hist_query *q, mvcc_hist_fn fn, void *arg, int64_t *next_rev);

/* The key's KeyValue at revision rev (NULL in *out when it did not exist
 * or rev is compacted), allocated from a. Any RCU-registered thread. */
int mvcc_history_kv_at(mvcc *m, const uint8_t *key, size_t key_len, int64_t rev, arena *a,
                       Mvccpb__KeyValue **out);

/* Whether key is in the query's range (etcd's watch range rules above). */
bool mvcc_history_in_range(const uint8_t *key, size_t key_len, const uint8_t *start, size_t start_len,
                           const uint8_t *end, size_t end_len);

#endif
