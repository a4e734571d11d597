/*
 * mvcc.h -- etcd's multi-version key-value store, on LevelDB with an RCU index.
 *
 * Semantics are etcd 3.4's mvcc + etcdserver apply, as a client sees them:
 * main/sub revisions, create/mod revision, version, tombstones, reads at a past
 * revision, compaction, limit/more/count, sort, keys-only, count-only, the
 * min/max revision filters, range_end rules, Put prev_kv/ignore_value/
 * ignore_lease, DeleteRange prev_kv, Txn compares (every target and result,
 * ranged compares) and nested txns.
 *
 * Threads. One writer: the apply actor calls the write functions, between
 * mvcc_batch_begin() and mvcc_batch_commit(). Readers: any thread registered
 * with liburcu (rcu_register_thread) may call mvcc_range() at any time; it
 * never blocks on the writer and sees only committed batches. The writer, and
 * the thread that calls mvcc_open/mvcc_close, must be registered with liburcu
 * too (call_rcu/synchronize_rcu need it) and must not hold rcu_read_lock
 * when calling in.
 *
 * Durability. LevelDB writes are not synced: the WAL is the durability point.
 * mvcc_batch_commit() writes the batch's records and the consistent index in
 * ONE LevelDB write, so after a crash the store is exactly at some batch
 * boundary and reports (mvcc_consistent_index) where Raft must replay from.
 *
 * Memory. Response structs are allocated from the caller's arena (msg/arena.h)
 * and point into it; the caller packs them, then resets the arena.
 * Functions return 0 or a negative cetcd_err (msg/errors.h).
 */
#ifndef CETCD_STORE_MVCC_H
#define CETCD_STORE_MVCC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.pb-c.h"
#include "rpc.pb-c.h"
#include "msg/arena.h"

typedef struct mvcc mvcc;

/* Called by the writer for every change, in revision order, during a batch:
 * the future source of watch events. kv and prev_kv (NULL if none) are valid
 * only during the call. type is MVCCPB__EVENT__EVENT_TYPE__PUT or __DELETE. */
typedef void (*mvcc_event_fn)(void *arg, int type, const Mvccpb__KeyValue *kv,
                              const Mvccpb__KeyValue *prev_kv);
/* Optional, asked first with the event fn's arg: false = the consumer has
 * no use for this key's event; it is not built (no prev_kv read) nor sent. */
typedef bool (*mvcc_event_want_fn)(void *arg, const uint8_t *key, size_t len);

/* Lease hooks (the lease issue fills them in). NULL = no leases exist:
 * a Put with lease != 0 fails with CETCD_E_LEASE_NOT_FOUND. */
typedef struct mvcc_lease_hooks {
  void *arg;
  bool (*exists)(void *arg, int64_t lease_id);
  void (*attach)(void *arg, int64_t lease_id, const uint8_t *key, size_t key_len);
  void (*detach)(void *arg, int64_t lease_id, const uint8_t *key, size_t key_len);
} mvcc_lease_hooks;

typedef struct mvcc_options {
  size_t leveldb_cache_bytes;   /* 0 = a sensible default */
  size_t leveldb_write_buffer_bytes;
} mvcc_options;

/* Opens (creating if needed) the store in `dir`, rebuilds the in-memory index
 * from LevelDB. On failure returns <0 and writes a message into err. */
int mvcc_open(const char *dir, const mvcc_options *opt, mvcc **out, char *err, size_t err_len);
void mvcc_close(mvcc *m);

void mvcc_set_event_fn(mvcc *m, mvcc_event_fn fn, void *arg);
void mvcc_set_event_want(mvcc *m, mvcc_event_want_fn want);
void mvcc_set_lease_hooks(mvcc *m, const mvcc_lease_hooks *hooks);

/* Any thread. */
uint64_t mvcc_consistent_index(const mvcc *m); /* last Raft index applied */
int64_t mvcc_current_rev(const mvcc *m);       /* newest committed revision */
int64_t mvcc_compact_rev(const mvcc *m);       /* -1 before any compaction */
uint64_t mvcc_db_size_bytes(const mvcc *m);    /* LevelDB dir size; refreshed
                                                  at most every 100 ms at commits */

/* --- write side: the apply thread only -------------------------------------
 * Each write request that changes something takes the next main revision;
 * its changes get sub revisions 0,1,2,... A request that changes nothing
 * (e.g. a delete that matches no key, a read-only txn) takes no revision.
 * resp->header must point to a header struct; these set header->revision. */
void mvcc_batch_begin(mvcc *m);
int mvcc_put(mvcc *m, const Etcdserverpb__PutRequest *req, Etcdserverpb__PutResponse *resp, arena *a);
int mvcc_delete_range(mvcc *m, const Etcdserverpb__DeleteRangeRequest *req,
                      Etcdserverpb__DeleteRangeResponse *resp, arena *a);
int mvcc_txn(mvcc *m, const Etcdserverpb__TxnRequest *req, Etcdserverpb__TxnResponse *resp, arena *a);
/* Records the compaction; physical removal of old revisions happens after the
 * batch commits (readers that started earlier still see their data). */
int mvcc_compact(mvcc *m, const Etcdserverpb__CompactionRequest *req,
                 Etcdserverpb__CompactionResponse *resp, arena *a);
/* A Range run by the writer: sees the batch's uncommitted changes. */
int mvcc_range_in_batch(mvcc *m, const Etcdserverpb__RangeRequest *req,
                        Etcdserverpb__RangeResponse *resp, arena *a);
/* The revision a response header written now carries: the open batch's
 * working revision (etcd's KV().Rev() inside apply). */
int64_t mvcc_batch_rev(const mvcc *m);
/* One LevelDB write for everything since mvcc_batch_begin, plus the
 * consistent index; then publishes the new index root to readers; then, if
 * the batch compacted, removes the old revisions (index first, then after an
 * RCU grace period one more LevelDB write). If the LevelDB write fails the
 * in-memory index is ahead of the disk: the store must be closed (the WAL
 * replays from mvcc_consistent_index() on the next open). */
int mvcc_batch_commit(mvcc *m, uint64_t consistent_index);
/* Makes everything committed so far durable in LevelDB itself (a synced
 * write), so the WAL before mvcc_consistent_index() may be released. */
int mvcc_sync(mvcc *m);

/* Number of leveldb_write calls made so far (one per batch commit, plus one
 * per compaction and per mvcc_sync): for tests and metrics. Any thread. */
uint64_t mvcc_leveldb_writes(const mvcc *m);

/* --- read side: any RCU-registered thread ----------------------------------- */
int mvcc_range(mvcc *m, const Etcdserverpb__RangeRequest *req, Etcdserverpb__RangeResponse *resp, arena *a);

/* History, for watchers catching up: calls fn for every committed change
 * with from_rev <= mod revision <= to_rev (to_rev <= 0: up to the current
 * revision), in revision order, until fn returns false. A put's kv is the
 * stored KeyValue; a delete's kv has only key and mod_revision, as in etcd's
 * watch events. kv is valid during the call only. prev_kv is not provided:
 * read it with mvcc_range at mod_revision - 1. Returns CETCD_E_COMPACTED if
 * from_rev < the compact revision (etcd's rule for a watch start revision),
 * else 0. The whole walk holds rcu_read_lock, and a compaction's commit
 * waits for it: fn must not block (e.g. on a full ring the apply thread
 * drains), or the apply thread stalls. Walk in chunks (to_rev) instead. */
typedef bool (*mvcc_change_fn)(void *arg, int type, const Mvccpb__KeyValue *kv);
int mvcc_changes(mvcc *m, int64_t from_rev, int64_t to_rev, mvcc_change_fn fn, void *arg);

/* --- other modules' records (leases, members, auth, ...) ---------------------
 * Stored in the same LevelDB under their own prefix byte 'x', so that they
 * commit atomically with the batch and the consistent index.
 * put/delete: the writer, inside a batch; visible to get/scan after commit.
 * get: 0 and a malloc'd copy in *val (free()), 1 if absent, <0 on error.
 * scan: every committed record whose key starts with prefix, in key order,
 * until fn returns false. */
int mvcc_meta_put(mvcc *m, const void *key, size_t key_len, const void *val, size_t val_len);
int mvcc_meta_delete(mvcc *m, const void *key, size_t key_len);
int mvcc_meta_get(mvcc *m, const void *key, size_t key_len, void **val, size_t *val_len);
typedef bool (*mvcc_meta_fn)(void *arg, const void *key, size_t key_len, const void *val, size_t val_len);
int mvcc_meta_scan(mvcc *m, const void *prefix, size_t prefix_len, mvcc_meta_fn fn, void *arg);

/* --- snapshots (Raft InstallSnapshot) -----------------------------------------
 * save: any thread; streams every record of a consistent LevelDB snapshot
 * (revision records, meta, other modules' records), in key order, through
 * fn; *ci = the consistent index the copy reflects.
 * restore: the writer, between batches. begin wipes the store; from then
 * until end succeeds, mvcc_range/mvcc_changes answer CETCD_E_STOPPED
 * (UNAVAILABLE: clients retry). add takes the pairs save produced; end
 * rebuilds the index from them. A crash between begin and end leaves a
 * marker, and mvcc_open then fails ("snapshot restore was interrupted"). */
int mvcc_snapshot_save(mvcc *m, mvcc_meta_fn fn, void *arg, uint64_t *ci);
int mvcc_restore_begin(mvcc *m);
int mvcc_restore_add(mvcc *m, const void *key, size_t key_len, const void *val, size_t val_len);
int mvcc_restore_end(mvcc *m);

/* Writer thread (e.g. right after mvcc_open, to rebuild lease attachments):
 * calls fn for every existing key that has a lease. */
typedef void (*mvcc_leased_key_fn)(void *arg, int64_t lease, const uint8_t *key, size_t key_len);
void mvcc_for_each_leased_key(mvcc *m, mvcc_leased_key_fn fn, void *arg);

/* --- request validation, as etcd's gRPC layer does it before proposing -------
 * Pure functions; max_txn_ops is --max-txn-ops. */
int kv_validate_range(const Etcdserverpb__RangeRequest *req);
int kv_validate_put(const Etcdserverpb__PutRequest *req);
int kv_validate_delete_range(const Etcdserverpb__DeleteRangeRequest *req);
int kv_validate_txn(const Etcdserverpb__TxnRequest *req, int max_txn_ops);

#endif
