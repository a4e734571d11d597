/*
 * mvcc_internal.h -- what store/mvcc*.c share; not for other modules.
 *
 * The files: mvcc.c (open/close, batches, commit, compaction, record I/O,
 * history), mvcc_range.c (Range: collect, fetch, filter, sort), mvcc_sort.c
 * (Go's sort.Sort), mvcc_write.c (Put, DeleteRange, Txn), kv_validate.c.
 *
 * A write request in a batch: wr_begin() fixes its main revision (one more
 * than the working revision), each change takes the next sub revision,
 * wr_end() makes the working revision the request's if it changed anything.
 * The batch's records go to a LevelDB write batch and, so that later requests
 * of the same batch can read them, to the pending table (revision-ordered,
 * binary-searched) until commit.
 */
#ifndef CETCD_STORE_MVCC_INTERNAL_H
#define CETCD_STORE_MVCC_INTERNAL_H

#include <leveldb/c.h>
#include <stdatomic.h>

#include "msg/errors.h"
#include "store/index.h"
#include "store/mvcc.h"
#include "store/revision.h"

/* One record written in the open batch. */
typedef struct mvcc_pend {
  int64_t main;
  int64_t sub;
  size_t off, len; /* packed KeyValue in mvcc.pbuf */
} mvcc_pend;

struct mvcc {
  leveldb_t *db;
  leveldb_options_t *opt;
  leveldb_cache_t *cache;
  leveldb_filterpolicy_t *filter;
  leveldb_readoptions_t *ropt;
  leveldb_readoptions_t *ropt_scan;  /* bulk scans: do not fill the cache */
  leveldb_writeoptions_t *wopt;      /* not synced: the WAL is durable */
  leveldb_writeoptions_t *wopt_sync; /* mvcc_sync */
  idx *index;

  /* Readable from any thread. */
  _Atomic uint64_t ci;       /* consistent index committed */
  _Atomic int64_t cur_rev;   /* committed revision */
  _Atomic int64_t cmp_rev;   /* committed compact revision */
  _Atomic uint64_t nwrites;  /* leveldb_write calls made */
  _Atomic int restoring;     /* a snapshot restore runs: readers stay out */
  size_t restore_n;          /* records added by mvcc_restore_add */
  _Atomic uint64_t db_bytes; /* size of the LevelDB directory, refreshed at commits */
  _Atomic int64_t db_bytes_ms; /* when db_bytes was last computed (monotonic) */
  char *dir;

  /* Writer (apply thread) state. */
  leveldb_writebatch_t *wb;
  int64_t committed_rev; /* revision of the last published batch */
  int64_t wrev;          /* working revision: includes the open batch */
  int64_t wcompact;      /* working compact revision */
  int64_t compact_todo;  /* compaction to carry out after commit; -1 none */
  int64_t req_main;      /* open write request: its main revision */
  int64_t req_sub;       /* ... and the number of changes it made so far */
  mvcc_pend *pend;
  size_t npend, cappend;
  uint8_t *pbuf; /* pending records' bytes */
  size_t pbuf_len, pbuf_cap;
  uint8_t *scratch; /* packing buffer */
  size_t scratch_cap;
  arena tmp; /* prev_kv of events; reset after each event */

  mvcc_event_fn ev;
  void *ev_arg;
  mvcc_event_want_fn ev_want; /* NULL: every event */
  mvcc_lease_hooks hooks;
  bool has_hooks;
};

/* Values up to this size are cached on their key (idx_val) for reads of the
 * newest revision. Measured (1 key, 16-byte value): serializable gets went
 * from ~0.39M/s (LevelDB get + unpack, LevelDB's mutex shared by readers) to
 * ~3.4M/s on one thread; the cost is 16 bytes + the value + malloc overhead
 * per key (~48 bytes for a 16-byte value). */
#define MVCC_CACHE_VALUE_MAX 1024

/* --- mvcc.c --- */
/* A cache entry for change (main, sub), or NULL if too big / no memory. */
idx_val *val_new(int64_t main, int64_t sub, const uint8_t *data, size_t len);
void wr_begin(mvcc *m);
int64_t wr_end(mvcc *m);
/* The revision a read inside the open write request sees (etcd:
 * storeTxnWrite.Range): the request's own revision once it changed
 * something. */
static inline int64_t wr_read_rev(const mvcc *m) { return m->req_sub ? m->req_main : m->wrev; }
/* Appends one change record to the batch. kv is packed as the value. */
int wr_record(mvcc *m, const Mvccpb__KeyValue *kv, bool tombstone, int64_t *sub_out);
/* Reads change r of key k into a KeyValue allocated from a. writer: may be
 * an uncommitted record of the open batch. */
int read_kv(mvcc *m, const idx_key *k, const idx_rev *r, bool writer, arena *a, Mvccpb__KeyValue **out);

/* --- mvcc_range.c --- */
typedef struct range_view {
  const idx_node *root;
  int64_t rev;         /* the view's current revision (header.revision) */
  int64_t compact_rev; /* the view's compact revision */
  bool writer;         /* the apply thread's working view */
} range_view;
/* etcd's applierV3backend.Range on a view. */
int range_run(mvcc *m, const range_view *v, const Etcdserverpb__RangeRequest *req,
              Etcdserverpb__RangeResponse *resp, arena *a);
/* A growable list of (key, change) visible at a revision. */
typedef struct kv_ref {
  const idx_key *k;
  const idx_rev *r;
} kv_ref;
typedef struct kv_refs {
  kv_ref *p;
  size_t n, cap;
  int oom;
} kv_refs;
/* Collects the keys in [key, range_end) (etcd's rules for range_end) that
 * exist at at_rev. Caller frees refs->p. */
void collect_refs(const idx_node *root, const ProtobufCBinaryData *key,
                  const ProtobufCBinaryData *range_end, int64_t at_rev, kv_refs *refs);

/* --- mvcc_sort.c --- */
/* Go 1.19 sort.Sort (or sort.Sort(sort.Reverse)) with etcd's Less. */
void mvcc_sort_kvs(Mvccpb__KeyValue **kvs, size_t n, int target, bool descend);

#endif
