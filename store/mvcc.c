/*
 * mvcc.c -- the store's life cycle: open (index rebuild), batches, commit,
 * compaction, and record I/O. Request semantics are in mvcc_range.c and
 * mvcc_write.c.
 *
 * DESIGN
 *
 * LevelDB holds every change as a revision record (store/revision.h) plus a
 * few meta records:
 *
 *   key          value            meaning
 *   "mci"        u64 BE           consistent index (last Raft index applied)
 *   "msc"        i64 BE           scheduled compaction revision
 *   "mfc"        i64 BE           finished compaction revision
 *   "mrs"        u64 BE           a snapshot restore is in progress
 *   'x' + key    bytes            other modules' records (mvcc_meta_*)
 *
 * The current revision is not stored: on open it is the newest record's main
 * revision, or the compaction revision if that is newer (a compaction at the
 * current revision may remove the newest record, a tombstone) -- what etcd's
 * store.restore does.
 *
 * A batch: requests change the working index and append records to one
 * LevelDB write batch; mvcc_batch_commit() writes it (with "mci") in ONE
 * leveldb_write, and only then publishes the index root, so a reader never
 * finds an index entry whose record is not in LevelDB yet.
 *
 * Compaction: mvcc_compact() records "msc" in the batch and raises the
 * working compact revision (requests after it in the batch already see it).
 * After the commit has published the new compact revision, the index is cut,
 * an RCU grace period passes (no reader can still be reading a doomed record)
 * and one more LevelDB write deletes the records and stores "mfc". A crash in
 * between leaves msc > mfc, and open redoes the compaction.
 *
 * Threads: every function here runs on an RCU-registered thread (call_rcu
 * and synchronize_rcu need it); the write side on one thread only.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <urcu.h>

#include "store/mvcc_internal.h"

#define META_CI "mci"
#define META_SCHED "msc"
#define META_DONE "mfc"
#define META_RESTORING "mrs"
#define RESTORE_CHUNK 10000
#define DEFAULT_CACHE_BYTES (64u << 20)
#define DEFAULT_WRITE_BUFFER_BYTES (16u << 20)

/* --- small helpers ------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *np = realloc(*p, c * elem);
  if (!np) return -CETCD_E_NOMEM;
  *p = np;
  *cap = c;
  return 0;
}

static void put_meta(leveldb_writebatch_t *wb, const char *name, uint64_t v) {
  uint8_t b[8];
  rev_put_be64(b, v);
  leveldb_writebatch_put(wb, name, strlen(name), (const char *)b, sizeof(b));
}

/* 0 and *v, 1 if absent, <0 on error. */
static int get_meta(mvcc *m, const char *name, uint64_t *v) {
  char *err = NULL;
  size_t len = 0;
  char *val = leveldb_get(m->db, m->ropt, name, strlen(name), &len, &err);
  if (err) {
    leveldb_free(err);
    return -CETCD_E_INTERNAL;
  }
  if (!val) return 1;
  int rc = len == 8 ? 0 : -CETCD_E_CORRUPT;
  if (!rc) *v = rev_get_be64((const uint8_t *)val);
  leveldb_free(val);
  return rc;
}

static int db_write(mvcc *m, leveldb_writeoptions_t *wo, leveldb_writebatch_t *wb) {
  char *err = NULL;
  leveldb_write(m->db, wo, wb, &err);
  atomic_fetch_add(&m->nwrites, 1);
  if (err) {
    fprintf(stderr, "cetcd: mvcc: leveldb write failed: %s\n", err);
    leveldb_free(err);
    return -CETCD_E_INTERNAL;
  }
  return 0;
}

/* --- record I/O ------------------------------------------------------------ */

void wr_begin(mvcc *m) {
  m->req_main = m->wrev + 1;
  m->req_sub = 0;
}

int64_t wr_end(mvcc *m) {
  if (m->req_sub) m->wrev = m->req_main;
  m->req_sub = 0;
  return m->wrev;
}

int wr_record(mvcc *m, const Mvccpb__KeyValue *kv, bool tombstone, int64_t *sub_out) {
  size_t len = mvccpb__key_value__get_packed_size(kv);
  int rc = grow((void **)&m->pbuf, &m->pbuf_cap, m->pbuf_len + len, 1);
  if (!rc) rc = grow((void **)&m->pend, &m->cappend, m->npend + 1, sizeof(*m->pend));
  if (rc) return rc;
  uint8_t *dst = m->pbuf + m->pbuf_len;
  mvccpb__key_value__pack(kv, dst);
  rev_pair r = {m->req_main, m->req_sub};
  uint8_t key[REV_KEY_BYTES_MAX];
  size_t klen = rev_key_encode(key, r, tombstone);
  leveldb_writebatch_put(m->wb, (const char *)key, klen, (const char *)dst, len);
  m->pend[m->npend++] = (mvcc_pend){r.main, r.sub, m->pbuf_len, len};
  m->pbuf_len += len;
  *sub_out = m->req_sub++;
  return 0;
}

static const mvcc_pend *pend_find(const mvcc *m, int64_t main, int64_t sub) {
  size_t lo = 0, hi = m->npend;
  rev_pair want = {main, sub};
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = rev_cmp((rev_pair){m->pend[mid].main, m->pend[mid].sub}, want);
    if (c == 0) return &m->pend[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

idx_val *val_new(int64_t main, int64_t sub, const uint8_t *data, size_t len) {
  if (len > MVCC_CACHE_VALUE_MAX) return NULL;
  idx_val *v = malloc(sizeof(*v) + len);
  if (!v) return NULL; /* the cache is optional */
  v->main = main;
  v->sub = (uint32_t)sub;
  v->len = (uint32_t)len;
  if (len) memcpy(v->data, data, len);
  return v;
}

/* The KeyValue of change r from the index alone, if k's cached value is r's. */
static int kv_from_cache(const idx_key *k, const idx_rev *r, arena *a, Mvccpb__KeyValue **out) {
  const idx_val *v = rcu_dereference(k->val);
  if (!v || v->main != r->main || v->sub != r->sub) return 1;
  Mvccpb__KeyValue *kv = arena_alloc(a, sizeof(*kv));
  uint8_t *key = arena_alloc(a, k->len + v->len + 1);
  if (!kv || !key) return -CETCD_E_NOMEM;
  mvccpb__key_value__init(kv);
  memcpy(key, k->key, k->len);
  if (v->len) memcpy(key + k->len, v->data, v->len);
  kv->key = (ProtobufCBinaryData){k->len, key};
  kv->value = (ProtobufCBinaryData){v->len, v->len ? key + k->len : NULL};
  kv->create_revision = r->create;
  kv->mod_revision = r->main;
  kv->version = r->version;
  kv->lease = r->lease;
  *out = kv;
  return 0;
}

int read_kv(mvcc *m, const idx_key *k, const idx_rev *r, bool writer, arena *a, Mvccpb__KeyValue **out) {
  int crc = kv_from_cache(k, r, a, out);
  if (crc <= 0) return crc;
  if (writer && r->main > m->committed_rev) {
    const mvcc_pend *p = pend_find(m, r->main, r->sub);
    if (!p) return -CETCD_E_INTERNAL;
    *out = mvccpb__key_value__unpack(&a->pb, p->len, m->pbuf + p->off);
    return *out ? 0 : -CETCD_E_NOMEM;
  }
  uint8_t key[REV_KEY_BYTES_MAX];
  size_t klen = rev_key_encode(key, (rev_pair){r->main, r->sub}, r->tomb);
  char *err = NULL;
  size_t len = 0;
  char *val = leveldb_get(m->db, m->ropt, (const char *)key, klen, &len, &err);
  if (err) {
    leveldb_free(err);
    return -CETCD_E_INTERNAL;
  }
  if (!val) return -CETCD_E_COMPACTED; /* removed under us: the caller re-checks */
  *out = mvccpb__key_value__unpack(&a->pb, len, (const uint8_t *)val);
  leveldb_free(val);
  return *out ? 0 : -CETCD_E_NOMEM;
}

/* --- open / close ---------------------------------------------------------- */

static int rebuild_index(mvcc *m, int64_t *last_main) {
  leveldb_iterator_t *it = leveldb_create_iterator(m->db, m->ropt_scan);
  int rc = 0;
  char prefix = REV_KEY_PREFIX;
  for (leveldb_iter_seek(it, &prefix, 1); leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen, vlen;
    const uint8_t *kb = (const uint8_t *)leveldb_iter_key(it, &klen);
    if (klen == 0 || kb[0] != REV_KEY_PREFIX) break;
    rev_pair r;
    bool tomb;
    if (rev_key_decode(kb, klen, &r, &tomb)) {
      rc = -CETCD_E_CORRUPT;
      break;
    }
    const uint8_t *vb = (const uint8_t *)leveldb_iter_value(it, &vlen);
    Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, vlen, vb);
    if (!kv) {
      rc = -CETCD_E_CORRUPT;
      break;
    }
    idx_rev ch = {.main = r.main, .sub = (uint32_t)r.sub, .tomb = tomb};
    if (!tomb) ch.create = kv->create_revision, ch.version = kv->version, ch.lease = kv->lease;
    idx_key *k = idx_append(m->index, kv->key.data, kv->key.len, &ch);
    idx_set_val_unshared(m->index, k, tomb ? NULL : val_new(r.main, r.sub, kv->value.data, kv->value.len));
    mvccpb__key_value__free_unpacked(kv, NULL);
    *last_main = r.main;
  }
  leveldb_iter_destroy(it);
  return rc;
}

static int open_db(mvcc *m, const char *dir, const mvcc_options *opt, char *err, size_t err_len) {
  size_t cache = opt && opt->leveldb_cache_bytes ? opt->leveldb_cache_bytes : DEFAULT_CACHE_BYTES;
  size_t wbuf = opt && opt->leveldb_write_buffer_bytes ? opt->leveldb_write_buffer_bytes
                                                       : DEFAULT_WRITE_BUFFER_BYTES;
  m->opt = leveldb_options_create();
  m->cache = leveldb_cache_create_lru(cache);
  m->filter = leveldb_filterpolicy_create_bloom(10);
  leveldb_options_set_create_if_missing(m->opt, 1);
  leveldb_options_set_cache(m->opt, m->cache);
  leveldb_options_set_filter_policy(m->opt, m->filter);
  leveldb_options_set_write_buffer_size(m->opt, wbuf);
  leveldb_options_set_compression(m->opt, leveldb_no_compression);
  m->ropt = leveldb_readoptions_create();
  m->ropt_scan = leveldb_readoptions_create();
  leveldb_readoptions_set_fill_cache(m->ropt_scan, 0);
  m->wopt = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(m->wopt, 0);
  m->wopt_sync = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(m->wopt_sync, 1);
  char *lerr = NULL;
  m->db = leveldb_open(m->opt, dir, &lerr);
  if (lerr) {
    snprintf(err, err_len, "leveldb open %s: %s", dir, lerr);
    leveldb_free(lerr);
    return -CETCD_E_INTERNAL;
  }
  return 0;
}

static int run_compaction(mvcc *m, int64_t at_rev);
static void update_db_size(mvcc *m, bool force);

static int load_state(mvcc *m, char *err, size_t err_len) {
  int64_t last = 1;
  uint64_t marker;
  if (get_meta(m, META_RESTORING, &marker) == 0) {
    snprintf(err, err_len, "mvcc: a snapshot restore was interrupted; the store is incomplete");
    return -CETCD_E_CORRUPT;
  }
  int rc = rebuild_index(m, &last);
  uint64_t ci = 0, sched = 0, done = 0;
  int has_sched = 1, has_done = 1;
  if (!rc && (rc = get_meta(m, META_CI, &ci)) == 1) rc = 0;
  if (!rc && (has_sched = get_meta(m, META_SCHED, &sched)) < 0) rc = has_sched;
  if (!rc && (has_done = get_meta(m, META_DONE, &done)) < 0) rc = has_done;
  if (rc) {
    snprintf(err, err_len, "mvcc: reading the store failed: %s", cetcd_err_msg(rc));
    return rc;
  }
  int64_t compact = has_sched == 0 ? (int64_t)sched : has_done == 0 ? (int64_t)done : -1;
  if (compact > last) last = compact;
  m->wrev = m->committed_rev = last;
  m->wcompact = compact;
  atomic_store(&m->ci, ci);
  atomic_store(&m->cur_rev, last);
  atomic_store(&m->cmp_rev, compact);
  idx_publish(m->index, last, compact);
  if (has_sched == 0 && (has_done != 0 || done < sched)) {
    rc = run_compaction(m, compact); /* it was interrupted */
    if (rc) snprintf(err, err_len, "mvcc: finishing compaction failed");
  }
  return rc;
}

int mvcc_open(const char *dir, const mvcc_options *opt, mvcc **out, char *err, size_t err_len) {
  mvcc *m = calloc(1, sizeof(*m));
  if (!m) {
    snprintf(err, err_len, "out of memory");
    return -CETCD_E_NOMEM;
  }
  m->compact_todo = -1;
  arena_init(&m->tmp, 4096);
  m->wb = leveldb_writebatch_create();
  m->index = idx_new();
  m->dir = strdup(dir);
  int rc = m->index && m->dir ? open_db(m, dir, opt, err, err_len) : -CETCD_E_NOMEM;
  if (!rc) rc = load_state(m, err, err_len);
  if (!rc) update_db_size(m, true);
  if (rc) {
    mvcc_close(m);
    return rc;
  }
  *out = m;
  return 0;
}

void mvcc_close(mvcc *m) {
  if (!m) return;
  idx_free(m->index);
  if (m->db) leveldb_close(m->db);
  if (m->opt) leveldb_options_destroy(m->opt);
  if (m->cache) leveldb_cache_destroy(m->cache);
  if (m->filter) leveldb_filterpolicy_destroy(m->filter);
  if (m->ropt) leveldb_readoptions_destroy(m->ropt);
  if (m->ropt_scan) leveldb_readoptions_destroy(m->ropt_scan);
  if (m->wopt) leveldb_writeoptions_destroy(m->wopt);
  if (m->wopt_sync) leveldb_writeoptions_destroy(m->wopt_sync);
  if (m->wb) leveldb_writebatch_destroy(m->wb);
  arena_free(&m->tmp);
  free(m->pend);
  free(m->pbuf);
  free(m->scratch);
  free(m->dir);
  free(m);
}

void mvcc_set_event_fn(mvcc *m, mvcc_event_fn fn, void *arg) {
  m->ev = fn;
  m->ev_arg = arg;
}

void mvcc_set_event_want(mvcc *m, mvcc_event_want_fn want) { m->ev_want = want; }

void mvcc_set_lease_hooks(mvcc *m, const mvcc_lease_hooks *hooks) {
  m->has_hooks = hooks != NULL;
  if (hooks) m->hooks = *hooks;
}

uint64_t mvcc_consistent_index(const mvcc *m) { return atomic_load(&((mvcc *)m)->ci); }
int64_t mvcc_current_rev(const mvcc *m) { return atomic_load(&((mvcc *)m)->cur_rev); }
int64_t mvcc_compact_rev(const mvcc *m) { return atomic_load(&((mvcc *)m)->cmp_rev); }
uint64_t mvcc_leveldb_writes(const mvcc *m) { return atomic_load(&((mvcc *)m)->nwrites); }

/* Any thread: a reader (the quota check) refreshes a stale figure itself,
 * so the size after the last commit does not stay stale until the next. */
uint64_t mvcc_db_size_bytes(const mvcc *m) {
  update_db_size((mvcc *)m, false);
  return atomic_load(&((mvcc *)m)->db_bytes);
}

/* The size of the LevelDB directory (tables, log, manifest), like etcd's
 * bbolt file size. A directory scan, so at most every DB_SIZE_EVERY_MS
 * (whichever thread gets there first does it; the others keep the old
 * figure). */
#define DB_SIZE_EVERY_MS 100
static void update_db_size(mvcc *m, bool force) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int64_t last = atomic_load(&m->db_bytes_ms);
  if (!force && now_ms - last < DB_SIZE_EVERY_MS) return;
  if (!atomic_compare_exchange_strong(&m->db_bytes_ms, &last, now_ms) && !force) return;
  DIR *d = opendir(m->dir);
  if (!d) return;
  uint64_t total = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode)) total += (uint64_t)st.st_size;
  }
  closedir(d);
  atomic_store(&m->db_bytes, total);
}

/* --- batches ------------------------------------------------------------- */

void mvcc_batch_begin(mvcc *m) {
  leveldb_writebatch_clear(m->wb);
  m->npend = 0;
  m->pbuf_len = 0;
  m->req_sub = 0;
  m->wrev = m->committed_rev;
}

int mvcc_batch_commit(mvcc *m, uint64_t consistent_index) {
  put_meta(m->wb, META_CI, consistent_index);
  int rc = db_write(m, m->wopt, m->wb);
  leveldb_writebatch_clear(m->wb);
  m->npend = 0;
  m->pbuf_len = 0;
  if (rc) return rc;
  idx_publish(m->index, m->wrev, m->wcompact);
  m->committed_rev = m->wrev;
  atomic_store(&m->ci, consistent_index);
  atomic_store(&m->cur_rev, m->wrev);
  atomic_store(&m->cmp_rev, m->wcompact);
  if (m->compact_todo >= 0) {
    int64_t at = m->compact_todo;
    m->compact_todo = -1;
    rc = run_compaction(m, at);
  }
  update_db_size(m, false);
  return rc;
}

int mvcc_sync(mvcc *m) {
  leveldb_writebatch_t *wb = leveldb_writebatch_create();
  put_meta(wb, META_CI, atomic_load(&m->ci));
  int rc = db_write(m, m->wopt_sync, wb);
  leveldb_writebatch_destroy(wb);
  return rc;
}

/* --- compaction ------------------------------------------------------------ */

int mvcc_compact(mvcc *m, const Etcdserverpb__CompactionRequest *req,
                 Etcdserverpb__CompactionResponse *resp, arena *a) {
  (void)a;
  /* etcd store.updateCompactRev: "<=" the compact revision is compacted. */
  if (req->revision <= m->wcompact) return -CETCD_E_COMPACTED;
  if (req->revision > m->wrev) return -CETCD_E_FUTURE_REV;
  m->wcompact = req->revision;
  m->compact_todo = req->revision;
  put_meta(m->wb, META_SCHED, (uint64_t)req->revision);
  if (resp->header) resp->header->revision = m->wrev;
  return 0;
}

static void drop_record(void *arg, const idx_key *k, const idx_rev *r) {
  (void)k;
  uint8_t key[REV_KEY_BYTES_MAX];
  size_t klen = rev_key_encode(key, (rev_pair){r->main, r->sub}, r->tomb);
  leveldb_writebatch_delete(arg, (const char *)key, klen);
}

/* Runs between batches, after the compact revision was published. */
static int run_compaction(mvcc *m, int64_t at_rev) {
  leveldb_writebatch_t *wb = leveldb_writebatch_create();
  idx_compact(m->index, at_rev, drop_record, wb); /* returns after a grace period */
  put_meta(wb, META_DONE, (uint64_t)at_rev);
  int rc = db_write(m, m->wopt, wb);
  leveldb_writebatch_destroy(wb);
  return rc;
}

/* --- reads ------------------------------------------------------------------ */

int mvcc_range(mvcc *m, const Etcdserverpb__RangeRequest *req, Etcdserverpb__RangeResponse *resp,
               arena *a) {
  for (int attempt = 0;; attempt++) {
    rcu_read_lock();
    if (atomic_load(&m->restoring)) {
      rcu_read_unlock();
      return -CETCD_E_STOPPED;
    }
    const idx_root *root = idx_reader_root(m->index);
    range_view v = {root->node, root->rev, root->compact_rev, false};
    int rc = range_run(m, &v, req, resp, a);
    rcu_read_unlock();
    /* A compaction past the snapshot's revision overtook a read of "the
     * current revision": read again from the newer snapshot, as etcd would
     * have served it (etcd never answers "compacted" to a current read). */
    if (rc == -CETCD_E_COMPACTED && req->revision <= 0 && attempt < 16) continue;
    return rc;
  }
}

int mvcc_range_in_batch(mvcc *m, const Etcdserverpb__RangeRequest *req,
                        Etcdserverpb__RangeResponse *resp, arena *a) {
  range_view v = {idx_writer_node(m->index), m->wrev, m->wcompact, true};
  return range_run(m, &v, req, resp, a);
}

/* --- history ------------------------------------------------------------ */

int mvcc_changes(mvcc *m, int64_t from_rev, int64_t to_rev, mvcc_change_fn fn, void *arg) {
  rcu_read_lock();
  if (atomic_load(&m->restoring)) {
    rcu_read_unlock();
    return -CETCD_E_STOPPED;
  }
  const idx_root *root = idx_reader_root(m->index);
  int64_t last = to_rev <= 0 || to_rev > root->rev ? root->rev : to_rev;
  int rc = from_rev < root->compact_rev ? -CETCD_E_COMPACTED : 0;
  leveldb_iterator_t *it = rc ? NULL : leveldb_create_iterator(m->db, m->ropt_scan);
  uint8_t start[REV_KEY_BYTES_MAX];
  size_t slen = rev_key_encode(start, (rev_pair){from_rev > 0 ? from_rev : 0, 0}, false);
  for (it ? leveldb_iter_seek(it, (const char *)start, slen) : (void)0; it && leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t klen, vlen;
    const uint8_t *kb = (const uint8_t *)leveldb_iter_key(it, &klen);
    rev_pair r;
    bool tomb;
    if (rev_key_decode(kb, klen, &r, &tomb) || r.main > last) break;
    const uint8_t *vb = (const uint8_t *)leveldb_iter_value(it, &vlen);
    Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, vlen, vb);
    if (!kv) {
      rc = -CETCD_E_CORRUPT;
      break;
    }
    if (tomb) kv->mod_revision = r.main;
    bool more = fn(arg, tomb ? MVCCPB__EVENT__EVENT_TYPE__DELETE : MVCCPB__EVENT__EVENT_TYPE__PUT, kv);
    mvccpb__key_value__free_unpacked(kv, NULL);
    if (!more) break;
  }
  if (it) leveldb_iter_destroy(it);
  /* records below a compaction that overtook the walk may be missing */
  if (!rc && from_rev < idx_compact_rev(m->index)) rc = -CETCD_E_COMPACTED;
  rcu_read_unlock();
  return rc;
}

typedef struct leased_ctx {
  int64_t at;
  mvcc_leased_key_fn fn;
  void *arg;
} leased_ctx;

static bool leased_one(void *arg, const idx_key *k) {
  leased_ctx *c = arg;
  const idx_rev *r = idx_key_at(k, c->at);
  if (r && r->lease) c->fn(c->arg, r->lease, k->key, k->len);
  return true;
}

void mvcc_for_each_leased_key(mvcc *m, mvcc_leased_key_fn fn, void *arg) {
  leased_ctx c = {m->wrev, fn, arg};
  idx_range(idx_writer_node(m->index), NULL, 0, NULL, 0, leased_one, &c);
}

/* --- other modules' records ------------------------------------------------ */

#define META_X 'x'
#define META_KEY_MAX 1024

static size_t xkey(uint8_t *out, const void *key, size_t len) {
  out[0] = META_X;
  memcpy(out + 1, key, len);
  return len + 1;
}

int mvcc_meta_put(mvcc *m, const void *key, size_t key_len, const void *val, size_t val_len) {
  uint8_t k[META_KEY_MAX + 1];
  if (key_len > META_KEY_MAX) return -CETCD_E_INTERNAL;
  size_t n = xkey(k, key, key_len);
  leveldb_writebatch_put(m->wb, (const char *)k, n, val, val_len);
  return 0;
}

int mvcc_meta_delete(mvcc *m, const void *key, size_t key_len) {
  uint8_t k[META_KEY_MAX + 1];
  if (key_len > META_KEY_MAX) return -CETCD_E_INTERNAL;
  size_t n = xkey(k, key, key_len);
  leveldb_writebatch_delete(m->wb, (const char *)k, n);
  return 0;
}

int mvcc_meta_get(mvcc *m, const void *key, size_t key_len, void **val, size_t *val_len) {
  uint8_t k[META_KEY_MAX + 1];
  if (key_len > META_KEY_MAX) return -CETCD_E_INTERNAL;
  size_t n = xkey(k, key, key_len);
  char *err = NULL;
  size_t len = 0;
  char *v = leveldb_get(m->db, m->ropt, (const char *)k, n, &len, &err);
  if (err) {
    leveldb_free(err);
    return -CETCD_E_INTERNAL;
  }
  if (!v) return 1;
  *val = malloc(len ? len : 1);
  if (*val && len) memcpy(*val, v, len);
  leveldb_free(v);
  if (!*val) return -CETCD_E_NOMEM;
  *val_len = len;
  return 0;
}

int mvcc_meta_scan(mvcc *m, const void *prefix, size_t prefix_len, mvcc_meta_fn fn, void *arg) {
  uint8_t p[META_KEY_MAX + 1];
  if (prefix_len > META_KEY_MAX) return -CETCD_E_INTERNAL;
  size_t n = xkey(p, prefix, prefix_len);
  leveldb_iterator_t *it = leveldb_create_iterator(m->db, m->ropt_scan);
  for (leveldb_iter_seek(it, (const char *)p, n); leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen < n || memcmp(k, p, n) != 0) break;
    const char *v = leveldb_iter_value(it, &vlen);
    if (!fn(arg, k + 1, klen - 1, v, vlen)) break;
  }
  leveldb_iter_destroy(it);
  return 0;
}

/* --- snapshots ---------------------------------------------------------- */

int mvcc_snapshot_save(mvcc *m, mvcc_meta_fn fn, void *arg, uint64_t *ci) {
  const leveldb_snapshot_t *snap = leveldb_create_snapshot(m->db);
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_readoptions_set_fill_cache(ro, 0);
  leveldb_readoptions_set_snapshot(ro, snap);
  leveldb_iterator_t *it = leveldb_create_iterator(m->db, ro);
  *ci = 0;
  for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *k = leveldb_iter_key(it, &klen);
    const char *v = leveldb_iter_value(it, &vlen);
    if (klen == strlen(META_CI) && memcmp(k, META_CI, klen) == 0 && vlen == 8) *ci = rev_get_be64((const uint8_t *)v);
    if (!fn(arg, k, klen, v, vlen)) break;
  }
  leveldb_iter_destroy(it);
  leveldb_readoptions_destroy(ro);
  leveldb_release_snapshot(m->db, snap);
  return 0;
}

static int flush_restore(mvcc *m, bool sync) {
  int rc = db_write(m, sync ? m->wopt_sync : m->wopt, m->wb);
  leveldb_writebatch_clear(m->wb);
  m->npend = 0;
  return rc;
}

int mvcc_restore_begin(mvcc *m) {
  atomic_store(&m->restoring, 1);
  synchronize_rcu(); /* no reader is inside the store any more */
  leveldb_writebatch_clear(m->wb);
  m->npend = m->pbuf_len = 0;
  m->compact_todo = -1;
  put_meta(m->wb, META_RESTORING, 1);
  int rc = flush_restore(m, true);
  leveldb_iterator_t *it = leveldb_create_iterator(m->db, m->ropt_scan);
  size_t n = 0;
  for (leveldb_iter_seek_to_first(it); !rc && leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen == strlen(META_RESTORING) && memcmp(k, META_RESTORING, klen) == 0) continue;
    leveldb_writebatch_delete(m->wb, k, klen);
    if (++n % RESTORE_CHUNK == 0) rc = flush_restore(m, false);
  }
  leveldb_iter_destroy(it);
  if (!rc) rc = flush_restore(m, false);
  idx_free(m->index);
  m->index = idx_new();
  return rc ? rc : m->index ? 0 : -CETCD_E_NOMEM;
}

int mvcc_restore_add(mvcc *m, const void *key, size_t key_len, const void *val, size_t val_len) {
  if (key_len == strlen(META_RESTORING) && memcmp(key, META_RESTORING, key_len) == 0) return 0;
  leveldb_writebatch_put(m->wb, key, key_len, val, val_len);
  if (++m->restore_n % RESTORE_CHUNK == 0) return flush_restore(m, false);
  return 0;
}

int mvcc_restore_end(mvcc *m) {
  leveldb_writebatch_delete(m->wb, META_RESTORING, strlen(META_RESTORING));
  int rc = flush_restore(m, true);
  char err[256] = "";
  if (!rc) rc = load_state(m, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "cetcd: mvcc: restore failed: %s\n", err);
    return rc; /* reads stay off: the store is not usable */
  }
  update_db_size(m, true);
  atomic_store(&m->restoring, 0);
  return 0;
}

int64_t mvcc_batch_rev(const mvcc *m) { return m->wrev; }
