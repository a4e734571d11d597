/*
 * watch_actor.c -- the watch actor: etcd's watchableStore as one thread.
 *
 * Contract
 *   Thread:   one, "watch". Owns the watcher registry (the hub below); no
 *             other thread touches it.
 *   Drains:   s->watch_mb: MSG_WATCH_EVENTS from apply (one per applied
 *             batch that took a revision, after its LevelDB commit, so the
 *             records are readable as history), MSG_WATCH_REQ from the net
 *             loops (create, cancel, progress, stream gone).
 *   Produces: MSG_WATCH_OUT to the loop that owns each stream: that stream's
 *             packed WatchResponses, one message per stream per batch.
 *   Ordering: everything a stream receives leaves this thread, in order, and
 *             net_post is FIFO per producer: "created" precedes the watch's
 *             events, its events come in revision order, "canceled" follows
 *             the last of them.
 *   Never blocks apply: apply uses mailbox_try_push. A batch that does not
 *             fit is dropped and flagged (server.watch_dropped); one apply
 *             could not encode (memory) carries no events (omitted).
 *             Either way the synced watchers that needed it become unsynced
 *             and are fed from LevelDB history: nothing is lost, nothing is
 *             buffered without bound. Apply encodes only the events some
 *             watcher can match (the filter, below), wakes this thread after
 *             the batch's replies, and not at all for a batch left without
 *             events (watch_apply_notify).
 *   Slow streams: a bounded queue per stream. The loop reports how much it
 *             has taken and what the socket has not (watch_feedback). A
 *             stream above WATCH_STREAM_HIGH_BYTES gets no more live events:
 *             its watchers become unsynced at the first revision it did not
 *             get, and catch up from history once it is below
 *             WATCH_STREAM_LOW_BYTES. History that gets compacted meanwhile
 *             cancels them with compact_revision, as etcd does.
 *   The budget: one count of the output not yet written to a socket, for
 *             all streams (server.watch_unsent: this thread adds what it
 *             produces, the loops subtract what the sockets took). Over
 *             the budget (watch.h) a stream above LOW stalls as a slow one
 *             does, and catch-up waits, but for one chunk per
 *             WATCH_BUDGET_TRICKLE_MS: streams that never read cannot hold
 *             the others back for good. The unsynced/catch-up path is the
 *             only way back, so nothing is lost or sent twice.
 *   Catch-up: in chunks of WATCH_CATCHUP_EVENTS records (and about
 *             WATCH_CATCHUP_BYTES of output in all) for at most
 *             WATCH_CATCHUP_WATCHERS watchers, who take turns; one chunk
 *             per loop turn between mailbox drains, so synced watchers
 *             keep flowing while unsynced ones read history (etcd's
 *             syncWatchersLoop, without its 100 ms sleep). Each catch-up
 *             response carries the store's current revision in its header,
 *             as etcd's syncWatchers does.
 *   Progress: a ticker per stream, as etcd 3.4's sendLoop has
 *             (watch_hub_progress); the actor sleeps until the next tick
 *             that is due.
 *
 * The registry (etcd's watcherGroup): per group (synced, unsynced), watchers
 * of a single key sit in a hash table on the key; range and from-key
 * watchers in an interval tree: the watchers sorted by start key, as an
 * implicit balanced tree where each node knows the greatest end below it.
 * A stabbing query visits O(log n + matches) nodes. The tree is rebuilt
 * (O(n log n)) at the first query after its set of range watchers changed.
 *
 * The filter. This thread publishes (RCU) a read-only set of what is
 * watched (actors/watch_filter.h): the keys of single-key watchers, the
 * union of the ranges. Apply tests each change's key against it and skips
 * the rest: no prev_kv read, no encoding. 10,000 idle watchers cost a put
 * one hash probe instead of an encoding and a wake-up of this thread per
 * batch. Filters are numbered (gen); a batch names the gen it loaded when it
 * began (filter_gen; later events may have met a newer filter, which only
 * covers more) and whether it left anything out (filtered).
 *   Why no watcher misses an event. Watcher w is created at hub revision R
 *   and is "fresh" with fgen = the gen of the next filter built (which
 *   holds w, as does every later one while w lives). (1) A batch of revisions
 *   <= R precedes w's create in this mailbox (apply pushes a batch before
 *   its replies leave, so before any request that follows them), and w
 *   never needs it: its history up to R comes from LevelDB. (2) A batch of
 *   revisions > R is handled after w exists. If its filter_gen >= fgen,
 *   every event w can match is in it. If not, the batch may lack w's events:
 *   fresh_sweep moves w, if synced and in need of those revisions, to the
 *   unsynced group from the batch's first revision, and w reads them from
 *   history, like a watcher whose stream was slow. w stops being fresh at
 *   the first batch with filter_gen >= fgen; batches come in revision order
 *   with nondecreasing filter_gen, so none behind it can be older.
 *   Why no event is left waiting. A batch without events is pushed quietly
 *   and apply wakes this thread only if the published gen moved since the
 *   batch began. This thread publishes before it sleeps (the rate limit
 *   below wakes it for that); the publish (seq_cst store of the gen) and
 *   mailbox_prepare_sleep's fence pair with apply's push + mailbox_fence +
 *   load of the gen: either apply sees the new gen and wakes us, or our
 *   re-check of the mailbox after announcing sleep sees its batch. A fresh
 *   watcher thus gets its skipped events through catch-up at once.
 *   Cost. A filter is rebuilt from the registry (O(watchers)) after
 *   watchers came or went, at most once per 1 + watchers/1000 ms: a few
 *   per cent of this thread while 100,000 watchers are being created.
 *   Until then a removed watcher's key stays in (a false yes is allowed)
 *   and a new one is fresh (history serves it).
 *
 * Encoding: apply packs each event once (mvccpb.Event without prev_kv, and
 * the previous KeyValue apart). A WatchResponse is assembled from those
 * bytes: header, watch_id, then each event as field 11, with prev_kv
 * appended as field 3 for watchers that asked for it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <urcu.h>

#include "actors/log.h"
#include "actors/server.h"
#include "actors/watch.h"
#include "actors/watch_filter.h"
#include "msg/errors.h"
#include "store/mvcc_history.h"

/* ===== u64 -> pointer map (open addressing, backward-shift deletion) ====== */

typedef struct u64map {
  uint64_t *k;
  void **v; /* NULL = empty slot */
  size_t cap, n;
} u64map;

static size_t map_mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static void *map_get(const u64map *m, uint64_t k) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = map_mix(k) & mask;; i = (i + 1) & mask) {
    if (!m->v[i]) return NULL;
    if (m->k[i] == k) return m->v[i];
  }
}

static int map_put(u64map *m, uint64_t k, void *v);

static int map_grow(u64map *m) {
  u64map g = {.cap = m->cap ? m->cap * 2 : 16};
  g.k = calloc(g.cap, sizeof(*g.k));
  g.v = calloc(g.cap, sizeof(*g.v));
  if (!g.k || !g.v) {
    free(g.k), free(g.v);
    return -ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++)
    if (m->v[i]) map_put(&g, m->k[i], m->v[i]);
  free(m->k), free(m->v);
  *m = g;
  return 0;
}

/* k must not be present. */
static int map_put(u64map *m, uint64_t k, void *v) {
  if ((m->n + 1) * 2 > m->cap && map_grow(m)) return -ENOMEM;
  size_t mask = m->cap - 1, i = map_mix(k) & mask;
  while (m->v[i]) i = (i + 1) & mask;
  m->k[i] = k, m->v[i] = v, m->n++;
  return 0;
}

static void map_del(u64map *m, uint64_t k) {
  if (!m->cap) return;
  size_t mask = m->cap - 1, i = map_mix(k) & mask;
  while (m->v[i] && m->k[i] != k) i = (i + 1) & mask;
  if (!m->v[i]) return;
  for (size_t j = i;;) {
    j = (j + 1) & mask;
    if (!m->v[j]) break;
    size_t h = map_mix(m->k[j]) & mask;
    /* move j back to i unless its home lies cyclically in (i, j] */
    bool stay = i <= j ? (h > i && h <= j) : (h > i || h <= j);
    if (stay) continue;
    m->k[i] = m->k[j], m->v[i] = m->v[j];
    i = j;
  }
  m->v[i] = NULL;
  m->n--;
}

static void map_free(u64map *m) {
  free(m->k), free(m->v);
  *m = (u64map){0};
}

/* ===== keys ================================================================ */

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static uint64_t key_hash(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

/* ===== watchers, streams, groups ========================================== */

typedef struct wstream wstream;

typedef enum { W_KEY, W_RANGE, W_FROM_KEY } w_kind;

typedef struct watcher {
  int64_t id;
  wstream *st;
  size_t st_idx;        /* index in st->w */
  uint8_t *key, *end;   /* one allocation; end is NULL unless W_RANGE */
  size_t key_len, end_len;
  w_kind kind;
  int64_t next_rev;     /* first revision not yet delivered (etcd's minRev);
                         * for a synced watcher, max(this, hub cur_rev + 1) */
  bool prev_kv, noput, nodelete, progress, fragment;
  bool synced;
  bool fresh;           /* in the hub's fresh list: a filter that holds it
                         * may not have reached every batch yet */
  uint64_t fgen;        /* the first filter generation that holds it */
  struct watcher *fnext, *fprev; /* the fresh list */
  bool eligible;        /* catch-up: its stream has room this round */
  bool got_events;      /* since the last progress notification */
  int64_t redo_rev;     /* out of memory while sending it this revision: it
                         * reads history again from there (0: none) */
  /* group membership */
  struct watcher *gnext, *gprev;   /* all members of the group */
  struct watcher *hnext, **hprev;  /* W_KEY: hash bucket chain */
  size_t ridx;                     /* W_RANGE/W_FROM_KEY: index in rg */
  /* delivery in progress */
  uint32_t *pend;
  size_t npend, cappend;
  struct watcher *tnext;
  bool touched;
} watcher;

struct wstream {
  net_call call;
  uint64_t skey;
  watch_feedback *fb;
  uint64_t posted;      /* bytes posted to the loop so far */
  uint64_t probes_sent;
  u64map ids;           /* watch id -> watcher */
  watcher **w;
  size_t nw, capw;
  int64_t next_auto;    /* etcd's watchStream.nextID */
  uint8_t *out;         /* records not posted yet */
  size_t out_len, out_cap;
  wstream *tnext;
  bool touched;
  size_t elig_n;        /* catch-up: its watchers in this chunk */
  uint64_t tick_ms;     /* progress ticker: next tick, */
  uint64_t period_ms;   /* its period (interval + this stream's jitter), */
  size_t tick_idx;      /* and its place in the hub's tick heap */
};

typedef struct wgroup {
  watcher *all, *last;  /* list of every member, and its last */
  size_t n;
  watcher **bk;         /* W_KEY hash buckets (power of two) */
  size_t nbk, nkey;
  watcher **rg;         /* range watchers; sorted by start when !dirty */
  watcher **sub;        /* sub[mid]: greatest end in the implicit subtree at mid */
  size_t nrg, caprg;
  bool dirty;
} wgroup;

struct watch_hub {
  watch_hub_env env;
  int64_t cur_rev;      /* events up to here were handed to synced watchers */
  wgroup synced, unsynced;
  u64map streams;
  size_t nwatchers;
  watcher *touched_w;
  wstream *touched_s;
  watch_batch hist;     /* catch-up chunk */
  watcher *elig[WATCH_CATCHUP_WATCHERS]; /* the watchers it is for */
  size_t nelig;
  bool hist_failed;     /* out of memory while reading it */
  uint64_t *loop_posted; /* [env.n_loops]: MSG_WATCH_OUTs posted per loop */
  bool deferred;        /* some stream holds records its loop had no room for */
  uint64_t now_ms;      /* the driver's clock (watch_hub_clock) */
  wstream **ticks;      /* streams, a min-heap on tick_ms */
  size_t nticks, capticks;
  uint64_t rng;         /* xorshift state for the tick jitter */
  uint64_t filter_gen;  /* the last filter built */
  bool filter_dirty;    /* watchers came or went since */
  uint64_t filter_ms;   /* when it was built */
  watcher *fresh, *fresh_last; /* watchers by fgen (see "The filter") */
  _Atomic int64_t *unsent; /* env.unsent, or own_unsent */
  _Atomic int64_t own_unsent;
  uint64_t trickle_ms;  /* over the budget: when the next catch-up chunk may go */
  int64_t hdr_rev;      /* header cache */
  uint8_t hdr[64];
  size_t hdr_len;
  watch_hub_stats stats;
};

/* ===== packing helpers ===================================================== */

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, n++;
  return n;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) p[n++] = (uint8_t)(v | 0x80), v >>= 7;
  p[n++] = (uint8_t)v;
  return n;
}

static void fill_header(const watch_hub *h, Etcdserverpb__ResponseHeader *hd, int64_t rev) {
  hd->cluster_id = h->env.cluster_id;
  hd->member_id = h->env.member_id;
  hd->revision = rev;
  hd->raft_term = h->env.term ? atomic_load(h->env.term) : 0;
}

/* The packed header for rev (cached: one batch shares it). */
static void header_bytes(watch_hub *h, int64_t rev) {
  Etcdserverpb__ResponseHeader hd = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  fill_header(h, &hd, rev);
  h->hdr_len = protobuf_c_message_pack(&hd.base, h->hdr);
  h->hdr_rev = rev;
}

/* ===== batches ============================================================= */

static int batch_reserve(watch_batch *b, size_t more) {
  if (b->len + more > b->buf_cap) {
    size_t cap = b->buf_cap ? b->buf_cap * 2 : 4096;
    while (cap < b->len + more) cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p) return -ENOMEM;
    b->buf = p, b->buf_cap = cap;
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    watch_event *e = realloc(b->ev, cap * sizeof(*e));
    if (!e) return -ENOMEM;
    b->ev = e, b->cap = cap;
  }
  return 0;
}

int watch_batch_add(watch_batch *b, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev) {
  Mvccpb__KeyValue del = MVCCPB__KEY_VALUE__INIT;
  if (type == MVCCPB__EVENT__EVENT_TYPE__DELETE) {
    /* etcd's delete event: the key and the deleting revision, nothing else */
    del.key = kv->key;
    del.mod_revision = kv->mod_revision;
    kv = &del;
  }
  Mvccpb__Event e = MVCCPB__EVENT__INIT;
  e.type = (Mvccpb__Event__EventType)type;
  e.kv = (Mvccpb__KeyValue *)kv;
  size_t elen = protobuf_c_message_get_packed_size(&e.base);
  size_t plen = prev ? protobuf_c_message_get_packed_size(&prev->base) : 0;
  if (batch_reserve(b, kv->key.len + elen + plen)) return -ENOMEM;
  watch_event *w = &b->ev[b->n++];
  w->rev = kv->mod_revision;
  w->type = (uint8_t)type;
  w->is_create = type == MVCCPB__EVENT__EVENT_TYPE__PUT && kv->create_revision == kv->mod_revision;
  w->key_off = (uint32_t)b->len, w->key_len = (uint32_t)kv->key.len;
  if (kv->key.len) memcpy(b->buf + b->len, kv->key.data, kv->key.len);
  b->len += kv->key.len;
  w->ev_off = (uint32_t)b->len, w->ev_len = (uint32_t)elen;
  b->len += protobuf_c_message_pack(&e.base, b->buf + b->len);
  w->prev_off = (uint32_t)b->len, w->prev_len = (uint32_t)plen;
  if (prev) b->len += protobuf_c_message_pack(&prev->base, b->buf + b->len);
  return 0;
}

void watch_batch_reset(watch_batch *b) { b->n = 0, b->len = 0; }

void watch_batch_free(watch_batch *b) {
  free(b->ev), free(b->buf);
  *b = (watch_batch){0};
}

void watch_feedback_release(watch_feedback *fb) {
  if (fb && atomic_fetch_sub(&fb->refs, 1) == 1) free(fb);
}

void watch_out_free(msg_watch_out *m) {
  watch_feedback_release(m->fb);
  free(m->buf);
  free(m);
}

/* ===== groups ============================================================== */

/* >0 when a's end is beyond b's (from-key is beyond everything). */
static int end_cmp(const watcher *a, const watcher *b) {
  if (a->kind == W_FROM_KEY || b->kind == W_FROM_KEY) return (a->kind == W_FROM_KEY) - (b->kind == W_FROM_KEY);
  return key_cmp(a->end, a->end_len, b->end, b->end_len);
}

static bool end_after(const watcher *w, const uint8_t *k, size_t kl) {
  return w->kind == W_FROM_KEY || key_cmp(w->end, w->end_len, k, kl) > 0;
}

static int bk_grow(wgroup *g) {
  size_t nbk = g->nbk ? g->nbk * 2 : 64;
  watcher **bk = calloc(nbk, sizeof(*bk));
  if (!bk) return -ENOMEM;
  for (size_t i = 0; i < g->nbk; i++) {
    for (watcher *w = g->bk[i], *nx; w; w = nx) {
      nx = w->hnext;
      watcher **head = &bk[key_hash(w->key, w->key_len) & (nbk - 1)];
      w->hnext = *head, w->hprev = head;
      if (*head) (*head)->hprev = &w->hnext;
      *head = w;
    }
  }
  free(g->bk);
  g->bk = bk, g->nbk = nbk;
  return 0;
}

static int group_add(wgroup *g, watcher *w) {
  if (w->kind == W_KEY) {
    if (g->nkey >= g->nbk && bk_grow(g)) return -ENOMEM;
    watcher **head = &g->bk[key_hash(w->key, w->key_len) & (g->nbk - 1)];
    w->hnext = *head, w->hprev = head;
    if (*head) (*head)->hprev = &w->hnext;
    *head = w;
    g->nkey++;
  } else {
    if (g->nrg == g->caprg) {
      size_t cap = g->caprg ? g->caprg * 2 : 64;
      watcher **rg = realloc(g->rg, cap * sizeof(*rg));
      if (!rg) return -ENOMEM;
      g->rg = rg;
      watcher **sub = realloc(g->sub, cap * sizeof(*sub));
      if (!sub) return -ENOMEM;
      g->sub = sub, g->caprg = cap;
    }
    w->ridx = g->nrg;
    g->rg[g->nrg++] = w;
    g->dirty = true;
  }
  w->gprev = NULL, w->gnext = g->all;
  if (g->all) g->all->gprev = w;
  else g->last = w;
  g->all = w;
  g->n++;
  return 0;
}

static void group_del(wgroup *g, watcher *w) {
  if (w->kind == W_KEY) {
    *w->hprev = w->hnext;
    if (w->hnext) w->hnext->hprev = w->hprev;
    g->nkey--;
  } else {
    watcher *last = g->rg[--g->nrg];
    g->rg[w->ridx] = last;
    last->ridx = w->ridx;
    g->dirty = true;
  }
  if (w->gprev) w->gprev->gnext = w->gnext;
  else g->all = w->gnext;
  if (w->gnext) w->gnext->gprev = w->gprev;
  else g->last = w->gprev;
  g->n--;
}

/* Moves w to the end of the group's list (catch-up takes turns). */
static void group_to_last(wgroup *g, watcher *w) {
  if (g->last == w) return;
  if (w->gprev) w->gprev->gnext = w->gnext;
  else g->all = w->gnext;
  w->gnext->gprev = w->gprev;
  w->gprev = g->last, w->gnext = NULL;
  g->last->gnext = w;
  g->last = w;
}

static int rg_start_cmp(const void *a, const void *b) {
  const watcher *x = *(watcher *const *)a, *y = *(watcher *const *)b;
  return key_cmp(x->key, x->key_len, y->key, y->key_len);
}

static watcher *tree_build(wgroup *g, size_t lo, size_t hi) {
  if (lo >= hi) return NULL;
  size_t mid = lo + (hi - lo) / 2;
  watcher *best = g->rg[mid];
  watcher *l = tree_build(g, lo, mid), *r = tree_build(g, mid + 1, hi);
  if (l && end_cmp(l, best) > 0) best = l;
  if (r && end_cmp(r, best) > 0) best = r;
  g->sub[mid] = best;
  return best;
}

static void tree_rebuild(wgroup *g) {
  qsort(g->rg, g->nrg, sizeof(*g->rg), rg_start_cmp);
  for (size_t i = 0; i < g->nrg; i++) g->rg[i]->ridx = i;
  tree_build(g, 0, g->nrg);
  g->dirty = false;
}

typedef void (*match_fn)(void *arg, watcher *w);

/* Range watchers in rg[lo, hi) with start <= k < end. */
static void tree_query(const wgroup *g, size_t lo, size_t hi, const uint8_t *k, size_t kl, match_fn fn, void *arg) {
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (!end_after(g->sub[mid], k, kl)) return; /* nothing below ends past k */
    tree_query(g, lo, mid, k, kl, fn, arg);
    watcher *w = g->rg[mid];
    if (key_cmp(w->key, w->key_len, k, kl) > 0) return; /* the right side starts later still */
    if (end_after(w, k, kl)) fn(arg, w);
    lo = mid + 1;
  }
}

static void group_match(wgroup *g, const uint8_t *k, size_t kl, match_fn fn, void *arg) {
  if (g->nkey) {
    for (watcher *w = g->bk[key_hash(k, kl) & (g->nbk - 1)]; w; w = w->hnext)
      if (w->key_len == kl && (kl == 0 || memcmp(w->key, k, kl) == 0)) fn(arg, w);
  }
  if (g->nrg) {
    if (g->dirty) tree_rebuild(g);
    tree_query(g, 0, g->nrg, k, kl, fn, arg);
  }
}

static void group_free(wgroup *g) {
  free(g->bk), free(g->rg), free(g->sub);
  *g = (wgroup){0};
}

/* Moves w to the other group. */
static void w_move(watch_hub *h, watcher *w, bool synced) {
  if (w->synced == synced) return;
  group_del(w->synced ? &h->synced : &h->unsynced, w);
  if (group_add(synced ? &h->synced : &h->unsynced, w)) {
    /* out of memory: keep it where it was (unsynced is always safe) */
    group_add(w->synced ? &h->synced : &h->unsynced, w);
    return;
  }
  w->synced = synced;
}

/* ===== output ============================================================== */

/* Bytes the stream has not taken: posted and not handled, handled and not
 * written to the socket, and records not posted yet. */
static uint64_t stream_backlog(const wstream *st) {
  uint64_t delivered = atomic_load(&st->fb->delivered);
  return (st->posted - delivered) + atomic_load(&st->fb->pending) + st->out_len;
}

static bool loop_congested(const watch_hub *h, uint32_t loop) {
  if (!h->env.loop_handled || loop >= h->env.n_loops) return false;
  uint64_t posted = h->loop_posted[loop], handled = atomic_load(&h->env.loop_handled[loop]);
  return posted > handled && posted - handled >= WATCH_LOOP_MAX_MSGS;
}

/* Output produced (n > 0) or gone without reaching a socket (n < 0). */
static void unsent_add(watch_hub *h, int64_t n) {
  int64_t v = atomic_fetch_add(h->unsent, n) + n;
  if (v > h->stats.unsent_peak) h->stats.unsent_peak = v;
}

static bool over_budget(const watch_hub *h) {
  return h->env.budget_bytes && atomic_load(h->unsent) >= (int64_t)h->env.budget_bytes;
}

/* Room for one record of len bytes; returns where its bytes go, or NULL. */
static uint8_t *out_record(watch_hub *h, wstream *st, size_t len) {
  size_t need = st->out_len + 4 + len;
  if (need > st->out_cap) {
    size_t cap = st->out_cap ? st->out_cap * 2 : 1024;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(st->out, cap);
    if (!p) return NULL;
    st->out = p, st->out_cap = cap;
  }
  uint32_t l = (uint32_t)len;
  memcpy(st->out + st->out_len, &l, 4);
  uint8_t *r = st->out + st->out_len + 4;
  st->out_len = need;
  unsent_add(h, (int64_t)(4 + len));
  return r;
}

/* Posts the stream's records. When its loop is congested (or memory is
 * short) they stay in st->out, count as backlog, and watch_hub_tick retries. */
static void stream_post(watch_hub *h, wstream *st, bool probe) {
  if (!st->out_len && !probe) return;
  if (loop_congested(h, st->call.loop)) {
    h->deferred = true;
    return;
  }
  msg_watch_out *m = malloc(sizeof(*m));
  if (!m) return;
  if (st->out_cap - st->out_len > st->out_cap / 4) { /* it grew by doubling: the slack stays here */
    uint8_t *p = realloc(st->out, st->out_len ? st->out_len : 1);
    if (p) st->out = p, st->out_cap = st->out_len;
  }
  atomic_fetch_add(&st->fb->refs, 1);
  *m = (msg_watch_out){.hdr = {MSG_WATCH_OUT}, .call = st->call, .fb = st->fb, .buf = st->out, .len = st->out_len};
  if (h->env.loop_handled && st->call.loop < h->env.n_loops) {
    m->loop_handled = &h->env.loop_handled[st->call.loop];
    h->loop_posted[st->call.loop]++;
  }
  m->unsent = h->unsent;
  st->posted += st->out_len;
  if (probe) st->probes_sent++;
  size_t len = st->out_len;
  st->out = NULL, st->out_len = st->out_cap = 0;
  if (h->env.post(h->env.post_arg, m) < 0) unsent_add(h, -(int64_t)len);
}

static void touch_stream(watch_hub *h, wstream *st) {
  if (st->touched) return;
  st->touched = true;
  st->tnext = h->touched_s;
  h->touched_s = st;
}

/* A control response (created / canceled / progress), posted at once. */
static void send_ctl(watch_hub *h, wstream *st, int64_t id, bool created, bool canceled, int64_t compact_rev,
                     const char *reason, int64_t hdr_rev) {
  Etcdserverpb__ResponseHeader hd = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
  fill_header(h, &hd, hdr_rev);
  r.header = &hd;
  r.watch_id = id;
  r.created = created;
  r.canceled = canceled;
  r.compact_revision = compact_rev;
  r.cancel_reason = (char *)(reason ? reason : "");
  size_t len = protobuf_c_message_get_packed_size(&r.base);
  uint8_t *p = out_record(h, st, len);
  if (p) protobuf_c_message_pack(&r.base, p);
  stream_post(h, st, false);
}

static size_t event_size(const watcher *w, const watch_event *e) {
  size_t n = e->ev_len;
  if (w->prev_kv && !e->is_create && e->prev_len) n += 1 + varint_len(e->prev_len) + e->prev_len;
  return n;
}

static uint8_t *put_event(uint8_t *p, const watcher *w, const watch_batch *b, const watch_event *e) {
  size_t n = event_size(w, e);
  *p++ = 0x5a; /* field 11, length-delimited */
  p += put_varint(p, n);
  memcpy(p, b->buf + e->ev_off, e->ev_len);
  p += e->ev_len;
  if (n == e->ev_len) return p;
  *p++ = 0x1a; /* Event.prev_kv, field 3 */
  p += put_varint(p, e->prev_len);
  memcpy(p, b->buf + e->prev_off, e->prev_len);
  return p + e->prev_len;
}

/* One WatchResponse with events pend[from, to) of w. */
static void put_response(watch_hub *h, watcher *w, const watch_batch *b, size_t from, size_t to, bool frag) {
  size_t len = 1 + varint_len(h->hdr_len) + h->hdr_len;
  if (w->id) len += 1 + varint_len((uint64_t)w->id);
  if (frag) len += 2;
  for (size_t i = from; i < to; i++) {
    size_t n = event_size(w, &b->ev[w->pend[i]]);
    len += 1 + varint_len(n) + n;
  }
  uint8_t *p = out_record(h, w->st, len);
  if (!p) {
    int64_t r = b->ev[w->pend[from]].rev;
    if (!w->redo_rev || r < w->redo_rev) w->redo_rev = r; /* memory: re-read from history */
    return;
  }
  *p++ = 0x0a;
  p += put_varint(p, h->hdr_len);
  memcpy(p, h->hdr, h->hdr_len);
  p += h->hdr_len;
  if (w->id) *p++ = 0x10, p += put_varint(p, (uint64_t)w->id);
  if (frag) *p++ = 0x38, *p++ = 1;
  for (size_t i = from; i < to; i++) p = put_event(p, w, b, &b->ev[w->pend[i]]);
}

/* etcd's sendFragments: a response of max-request-bytes or more with two or
 * more events goes in pieces, each below the limit unless one event alone
 * exceeds it; all but the last carry fragment = true. */
static void put_fragments(watch_hub *h, watcher *w, const watch_batch *b) {
  size_t base = 1 + varint_len(h->hdr_len) + h->hdr_len + 2;
  if (w->id) base += 1 + varint_len((uint64_t)w->id);
  size_t total = base - 2, max = h->env.max_request_bytes;
  for (size_t i = 0; i < w->npend; i++) {
    size_t n = event_size(w, &b->ev[w->pend[i]]);
    total += 1 + varint_len(n) + n;
  }
  if (!w->fragment || total < max || w->npend < 2) {
    put_response(h, w, b, 0, w->npend, false);
    return;
  }
  size_t i = 0;
  while (i < w->npend) {
    size_t size = base, j = i;
    while (j < w->npend) {
      size_t n = event_size(w, &b->ev[w->pend[j]]);
      size_t add = 1 + varint_len(n) + n;
      if (j > i && size + add >= max) break;
      size += add, j++;
    }
    put_response(h, w, b, i, j, j < w->npend);
    i = j;
  }
}

typedef struct match_ctx {
  watch_hub *h;
  const watch_batch *b;
  uint32_t idx;
  bool catchup;
} match_ctx;

static void on_match(void *arg, watcher *w) {
  match_ctx *c = arg;
  const watch_event *e = &c->b->ev[c->idx];
  if (w->next_rev > e->rev) return; /* starts later, or already has it */
  if (c->catchup && !w->eligible) return;
  if (e->type == MVCCPB__EVENT__EVENT_TYPE__PUT ? w->noput : w->nodelete) return;
  if (w->npend == w->cappend) {
    size_t cap = w->cappend ? w->cappend * 2 : 8;
    uint32_t *p = realloc(w->pend, cap * sizeof(*p));
    if (p) w->pend = p, w->cappend = cap;
    else if (!w->redo_rev) w->redo_rev = e->rev; /* memory: re-read from history */
  }
  if (!w->redo_rev && w->npend < w->cappend) w->pend[w->npend++] = c->idx;
  if (!w->touched) {
    w->touched = true;
    w->tnext = c->h->touched_w;
    c->h->touched_w = w;
  }
}

/* Turns every touched watcher's pending events into responses. */
static void flush_watchers(watch_hub *h, const watch_batch *b, int64_t hdr_rev) {
  if (!h->touched_w) return;
  header_bytes(h, hdr_rev);
  for (watcher *w = h->touched_w, *nx; w; w = nx) {
    nx = w->tnext;
    while (w->redo_rev && w->npend && b->ev[w->pend[w->npend - 1]].rev >= w->redo_rev) w->npend--;
    if (w->npend) put_fragments(h, w, b);
    w->npend = 0;
    if (w->cappend > 64) { /* a catch-up chunk's worth: 100,000 watchers would keep MBs */
      free(w->pend);
      w->pend = NULL, w->cappend = 0;
    }
    w->touched = false;
    w->got_events = true;
    touch_stream(h, w->st);
    if (w->redo_rev && w->synced) {
      w->next_rev = w->redo_rev;
      w->redo_rev = 0;
      w_move(h, w, false);
    }
  }
  h->touched_w = NULL;
}

/* The stream cannot keep up: its synced watchers stop getting live events
 * and will read history from `from` on. */
static void stream_stall(watch_hub *h, wstream *st, int64_t from) {
  stream_post(h, st, false);
  for (size_t i = 0; i < st->nw; i++) {
    watcher *w = st->w[i];
    if (!w->synced) continue;
    if (w->next_rev < from) w->next_rev = from;
    w_move(h, w, false);
  }
  h->stats.stalls++;
}

/* Live events (stall_from: the next revision) stop for a stream above HIGH,
 * or above LOW while the server is over its budget (watch.h). */
static void flush_streams(watch_hub *h, int64_t stall_from) {
  for (wstream *st = h->touched_s, *nx; st; st = nx) {
    nx = st->tnext;
    st->touched = false;
    uint64_t backlog = stall_from ? stream_backlog(st) : 0;
    bool high = backlog > WATCH_STREAM_HIGH_BYTES;
    bool budget = !high && backlog > WATCH_STREAM_LOW_BYTES && over_budget(h);
    if (high || budget) {
      h->stats.budget_stalls += budget;
      stream_stall(h, st, stall_from);
    } else {
      stream_post(h, st, false);
    }
  }
  h->touched_s = NULL;
}

/* ===== streams and watchers ================================================ */

/* --- the progress tick heap (min on tick_ms) --- */

static void tick_set(watch_hub *h, size_t i, wstream *st) {
  h->ticks[i] = st;
  st->tick_idx = i;
}

static void tick_up(watch_hub *h, size_t i) {
  wstream *st = h->ticks[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (h->ticks[parent]->tick_ms <= st->tick_ms) break;
    tick_set(h, i, h->ticks[parent]);
    i = parent;
  }
  tick_set(h, i, st);
}

static void tick_down(watch_hub *h, size_t i) {
  wstream *st = h->ticks[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->nticks) break;
    if (c + 1 < h->nticks && h->ticks[c + 1]->tick_ms < h->ticks[c]->tick_ms) c++;
    if (h->ticks[c]->tick_ms >= st->tick_ms) break;
    tick_set(h, i, h->ticks[c]);
    i = c;
  }
  tick_set(h, i, st);
}

/* etcd's GetProgressReportInterval: the interval plus rand(interval / 10),
 * drawn when the stream's ticker starts. */
static int tick_add(watch_hub *h, wstream *st) {
  if (h->nticks == h->capticks) {
    size_t cap = h->capticks ? h->capticks * 2 : 64;
    wstream **t = realloc(h->ticks, cap * sizeof(*t));
    if (!t) return -ENOMEM;
    h->ticks = t, h->capticks = cap;
  }
  h->rng ^= h->rng << 13, h->rng ^= h->rng >> 7, h->rng ^= h->rng << 17;
  uint64_t tenth = h->env.progress_ms / 10;
  st->period_ms = h->env.progress_ms + (tenth ? h->rng % tenth : 0);
  st->tick_ms = h->now_ms + st->period_ms;
  h->ticks[h->nticks] = st;
  tick_up(h, h->nticks++);
  return 0;
}

static void tick_del(watch_hub *h, wstream *st) {
  size_t i = st->tick_idx;
  wstream *last = h->ticks[--h->nticks];
  if (last == st) return;
  tick_set(h, i, last);
  tick_up(h, i);
  tick_down(h, last->tick_idx);
}

static uint64_t stream_key(net_call c) {
  return (uint64_t)(c.loop & 0xff) << 55 | (uint64_t)(c.conn_slot & 0xffffff) << 31 | ((uint32_t)c.stream_id & 0x7fffffff);
}

static wstream *stream_find(watch_hub *h, net_call c) {
  wstream *st = map_get(&h->streams, stream_key(c));
  if (st && (st->call.conn_gen != c.conn_gen || st->call.loop != c.loop)) return NULL;
  return st;
}

static wstream *stream_get(watch_hub *h, net_call c) {
  wstream *st = stream_find(h, c);
  if (st) return st;
  st = calloc(1, sizeof(*st));
  watch_feedback *fb = calloc(1, sizeof(*fb));
  if (!st || !fb || map_put(&h->streams, stream_key(c), st)) {
    free(st), free(fb);
    return NULL;
  }
  atomic_store(&fb->refs, 1);
  st->fb = fb;
  st->call = c;
  st->skey = stream_key(c);
  if (h->env.progress_ms && tick_add(h, st)) {
    map_del(&h->streams, st->skey);
    free(st), free(fb);
    return NULL;
  }
  return st;
}

static void set_count(watch_hub *h) {
  if (h->env.count) atomic_store(h->env.count, (uint32_t)h->nwatchers);
}

static void fresh_del(watch_hub *h, watcher *w) {
  if (!w->fresh) return;
  if (w->fprev) w->fprev->fnext = w->fnext;
  else h->fresh = w->fnext;
  if (w->fnext) w->fnext->fprev = w->fprev;
  else h->fresh_last = w->fprev;
  w->fresh = false;
}

/* w is new: the next filter built holds it. */
static void fresh_add(watch_hub *h, watcher *w) {
  w->fgen = h->filter_gen + 1;
  w->fresh = true;
  w->fnext = NULL, w->fprev = h->fresh_last;
  if (h->fresh_last) h->fresh_last->fnext = w;
  else h->fresh = w;
  h->fresh_last = w;
  h->filter_dirty = true;
}

static void watcher_remove(watch_hub *h, watcher *w) {
  wstream *st = w->st;
  fresh_del(h, w);
  h->filter_dirty = true; /* a smaller filter, when it is due */
  group_del(w->synced ? &h->synced : &h->unsynced, w);
  map_del(&st->ids, (uint64_t)w->id);
  st->w[w->st_idx] = st->w[--st->nw];
  st->w[w->st_idx]->st_idx = w->st_idx;
  h->nwatchers--;
  set_count(h);
  free(w->key);
  free(w->pend);
  free(w);
}

static void stream_remove(watch_hub *h, wstream *st) {
  if (h->env.progress_ms) tick_del(h, st);
  while (st->nw) watcher_remove(h, st->w[st->nw - 1]);
  map_del(&h->streams, st->skey);
  map_free(&st->ids);
  free(st->w);
  unsent_add(h, -(int64_t)st->out_len);
  free(st->out);
  watch_feedback_release(st->fb);
  free(st);
}

static const char *const ERR_EMPTY_RANGE = "mvcc: watcher range is empty";
static const char *const ERR_DUP_ID = "mvcc: duplicate watch ID provided on the WatchStream";

static watcher *watcher_new(const msg_watch_req *m, int64_t id, wstream *st) {
  watcher *w = calloc(1, sizeof(*w));
  size_t kl = m->key_len ? m->key_len : 1; /* etcd: an empty key is "\0" */
  uint8_t *mem = malloc(kl + m->end_len + 1);
  if (!w || !mem) {
    free(w), free(mem);
    return NULL;
  }
  if (m->key_len) memcpy(mem, m->data, m->key_len);
  else mem[0] = 0;
  w->key = mem, w->key_len = kl;
  w->kind = m->end_len == 0 ? W_KEY : (m->end_len == 1 && m->data[m->key_len] == 0) ? W_FROM_KEY : W_RANGE;
  if (w->kind == W_RANGE) {
    w->end = mem + kl;
    memcpy(w->end, m->data + m->key_len, m->end_len);
    w->end_len = m->end_len;
  }
  w->id = id;
  w->st = st;
  w->prev_kv = m->prev_kv, w->noput = m->noput, w->nodelete = m->nodelete;
  w->progress = m->progress_notify, w->fragment = m->fragment;
  return w;
}

static int watcher_attach(watch_hub *h, wstream *st, watcher *w) {
  if (st->nw == st->capw) {
    size_t cap = st->capw ? st->capw * 2 : 8;
    watcher **v = realloc(st->w, cap * sizeof(*v));
    if (!v) return -ENOMEM;
    st->w = v, st->capw = cap;
  }
  if (map_put(&st->ids, (uint64_t)w->id, w)) return -ENOMEM;
  if (group_add(w->synced ? &h->synced : &h->unsynced, w)) {
    map_del(&st->ids, (uint64_t)w->id);
    return -ENOMEM;
  }
  w->st_idx = st->nw;
  st->w[st->nw++] = w;
  h->nwatchers++;
  set_count(h);
  return 0;
}

/* etcd: v3rpc serverWatchStream.recvLoop + watchStream.Watch + watchableStore.watch. */
static void hub_create(watch_hub *h, wstream *st, const msg_watch_req *m) {
  int64_t wsrev = h->cur_rev;
  const uint8_t *key = m->key_len ? m->data : (const uint8_t *)"";
  size_t kl = m->key_len ? m->key_len : 1;
  const uint8_t *end = m->data + m->key_len;
  bool from_key = m->end_len == 1 && end[0] == 0;
  if (m->end_len && !from_key && key_cmp(key, kl, end, m->end_len) >= 0) {
    send_ctl(h, st, -1, true, true, 0, ERR_EMPTY_RANGE, wsrev);
    return;
  }
  int64_t id = m->watch_id;
  if (id == 0) {
    while (map_get(&st->ids, (uint64_t)st->next_auto)) st->next_auto++;
    id = st->next_auto++;
  } else if (map_get(&st->ids, (uint64_t)id)) {
    send_ctl(h, st, -1, true, true, 0, ERR_DUP_ID, wsrev);
    return;
  }
  watcher *w = watcher_new(m, id, st);
  int64_t start = m->start_revision;
  if (w) {
    w->next_rev = start == 0 ? wsrev + 1 : start;
    w->synced = start == 0 || start > wsrev;
  }
  if (!w || watcher_attach(h, st, w)) {
    if (w) free(w->key);
    free(w);
    send_ctl(h, st, -1, true, true, 0, "etcdserver: no space", wsrev);
    return;
  }
  fresh_add(h, w);
  send_ctl(h, st, id, true, false, 0, NULL, wsrev);
}

/* The revision every watcher of st has been sent up to. */
static int64_t stream_progress_rev(const watch_hub *h, const wstream *st) {
  int64_t rev = h->cur_rev;
  for (size_t i = 0; i < st->nw; i++)
    if (!st->w[i]->synced && st->w[i]->next_rev - 1 < rev) rev = st->w[i]->next_rev - 1;
  return rev;
}

void watch_hub_request(watch_hub *h, const msg_watch_req *m) {
  if (m->op == WATCH_OP_GONE) {
    wstream *st = stream_find(h, m->call);
    if (st) stream_remove(h, st);
    return;
  }
  wstream *st = stream_get(h, m->call);
  if (!st) return;
  switch (m->op) {
  case WATCH_OP_CREATE:
    hub_create(h, st, m);
    break;
  case WATCH_OP_CANCEL: {
    watcher *w = map_get(&st->ids, (uint64_t)m->watch_id);
    if (!w) break; /* etcd: no answer for an unknown id */
    watcher_remove(h, w);
    send_ctl(h, st, m->watch_id, false, true, 0, NULL, h->cur_rev);
    break;
  }
  case WATCH_OP_PROGRESS:
    /* etcd answers with its current revision; here never ahead of what
     * this stream's watchers were sent */
    send_ctl(h, st, -1, false, false, 0, NULL, stream_progress_rev(h, st));
    break;
  default:
    break;
  }
}

/* ===== live events ========================================================= */

static bool w_matches(const watcher *w, const uint8_t *k, size_t kl) {
  if (w->kind == W_KEY) return w->key_len == kl && (kl == 0 || memcmp(w->key, k, kl) == 0);
  return key_cmp(w->key, w->key_len, k, kl) <= 0 && end_after(w, k, kl);
}

/* A catch-up chunk is matched against its few watchers (h->elig), not the
 * whole unsynced group: 100,000 unsynced watchers of one key made each
 * event of each chunk walk a 100,000-long hash chain for 64 of them. */
static void match_eligible(watch_hub *h, const uint8_t *k, size_t kl, match_ctx *c) {
  for (size_t j = 0; j < h->nelig; j++)
    if (w_matches(h->elig[j], k, kl)) on_match(c, h->elig[j]);
}

static void deliver(watch_hub *h, wgroup *g, const watch_batch *b, size_t from, bool catchup, int64_t hdr_rev) {
  match_ctx c = {.h = h, .b = b, .catchup = catchup};
  size_t i = from;
  while (i < b->n) {
    int64_t r = b->ev[i].rev;
    for (; i < b->n && b->ev[i].rev == r; i++) {
      c.idx = (uint32_t)i;
      if (catchup) match_eligible(h, b->buf + b->ev[i].key_off, b->ev[i].key_len, &c);
      else group_match(g, b->buf + b->ev[i].key_off, b->ev[i].key_len, on_match, &c);
    }
    /* etcd sends one response per revision to a synced watcher */
    if (!catchup) flush_watchers(h, b, r);
    if (!catchup && h->touched_s) flush_streams(h, r + 1);
  }
  if (catchup) {
    flush_watchers(h, b, hdr_rev);
    flush_streams(h, 0);
  }
}

void watch_hub_gap(watch_hub *h, int64_t rev) {
  if (rev <= h->cur_rev) return;
  int64_t from = h->cur_rev + 1;
  bool any = false;
  for (watcher *w = h->synced.all, *nx; w; w = nx) {
    nx = w->gnext;
    if (w->next_rev > rev) continue; /* waits for a later revision anyway */
    if (w->next_rev < from) w->next_rev = from;
    w_move(h, w, false);
    any = true;
  }
  if (any) h->stats.gaps++;
  h->cur_rev = rev;
}

/* A batch met a filter older than some watchers: those of them that are
 * synced and need its revisions read them from history (see "The filter"). */
static void fresh_sweep(watch_hub *h, const msg_watch_events *m) {
  while (h->fresh && h->fresh->fgen <= m->filter_gen) fresh_del(h, h->fresh);
  if (!m->filtered) return;
  bool any = false;
  for (watcher *w = h->fresh; w; w = w->fnext) {
    if (!w->synced || w->next_rev > m->rev_last) continue;
    if (w->next_rev < m->rev_first) w->next_rev = m->rev_first;
    w_move(h, w, false);
    any = true;
  }
  if (any) h->stats.fresh_gaps++;
}

void watch_hub_events(watch_hub *h, const msg_watch_events *m) {
  if (m->rev_last <= h->cur_rev) return;
  fresh_sweep(h, m);
  if (m->omitted || m->rev_first > h->cur_rev + 1) {
    watch_hub_gap(h, m->rev_last);
    return;
  }
  size_t i = 0;
  while (i < m->b.n && m->b.ev[i].rev <= h->cur_rev) i++;
  if (h->synced.n) deliver(h, &h->synced, &m->b, i, false, 0);
  h->cur_rev = m->rev_last;
}

/* ===== catch-up ============================================================ */

static void hist_add(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev) {
  watch_hub *h = arg;
  if (watch_batch_add(&h->hist, type, kv, prev)) h->hist_failed = true; /* the chunk is retried */
}

static void cancel_compacted(watch_hub *h, int64_t compact_rev) {
  for (size_t j = 0; j < h->nelig; j++) {
    watcher *w = h->elig[j];
    w->eligible = false;
    if (w->next_rev >= compact_rev) continue;
    wstream *st = w->st;
    int64_t id = w->id;
    watcher_remove(h, w);
    /* etcd: WatchResponse{WatchID, CompactRevision}; its header revision is 0 */
    send_ctl(h, st, id, false, true, compact_rev, NULL, 0);
  }
}

/* Marks up to WATCH_CATCHUP_WATCHERS unsynced watchers whose streams have
 * room, from the front of the list; returns how many, the lowest revision
 * they need, and whether any wants prev_kv. */
static size_t pick_eligible(watch_hub *h, int64_t *from, bool *prev, size_t *per_stream) {
  h->nelig = 0;
  *from = INT64_MAX, *prev = false, *per_stream = 0;
  for (watcher *w = h->unsynced.all; w && h->nelig < WATCH_CATCHUP_WATCHERS; w = w->gnext) {
    if (stream_backlog(w->st) >= WATCH_STREAM_LOW_BYTES) continue;
    w->eligible = true;
    h->elig[h->nelig++] = w;
    if (w->next_rev < *from) *from = w->next_rev;
    *prev |= w->prev_kv;
    if (++w->st->elig_n > *per_stream) *per_stream = w->st->elig_n;
  }
  for (size_t j = 0; j < h->nelig; j++) h->elig[j]->st->elig_n = 0;
  return h->nelig;
}

bool watch_hub_catch_up(watch_hub *h) {
  if (!h->unsynced.n) return false;
  if (over_budget(h)) { /* wait for the sockets, but trickle (watch.h) */
    if (h->now_ms < h->trickle_ms) {
      h->stats.budget_waits++;
      return false;
    }
    h->trickle_ms = h->now_ms + WATCH_BUDGET_TRICKLE_MS;
  }
  int64_t from;
  bool prev;
  size_t per_stream;
  size_t n = pick_eligible(h, &from, &prev, &per_stream);
  if (!n) return false;
  size_t max_bytes = WATCH_CATCHUP_BYTES / n;
  if (max_bytes < WATCH_CATCHUP_BYTES_MIN) max_bytes = WATCH_CATCHUP_BYTES_MIN;
  /* One stream gets at most about its high mark from one chunk: 64 of a
   * stream's watchers of one key got 16 KiB each, 1 MiB per stream, and
   * with 1,000 such streams behind at once the server held gigabytes. */
  if (max_bytes > WATCH_STREAM_HIGH_BYTES / per_stream) max_bytes = WATCH_STREAM_HIGH_BYTES / per_stream;
  int64_t next = from;
  if (from <= h->cur_rev) {
    mvcc_hist_query q = {.key = (const uint8_t *)"", .key_len = 0, .range_end = (const uint8_t *)"",
                         .range_end_len = 1, .from_rev = from, .to_rev = h->cur_rev,
                         .max_events = WATCH_CATCHUP_EVENTS, .max_bytes = max_bytes, .prev_kv = prev};
    watch_batch_reset(&h->hist);
    h->hist_failed = false;
    int rc = mvcc_history_read(h->env.store, &q, hist_add, h, &next);
    if (!rc && h->hist_failed) rc = -CETCD_E_NOMEM;
    if (rc == -CETCD_E_COMPACTED) {
      cancel_compacted(h, mvcc_compact_rev(h->env.store));
      return true;
    }
    if (rc) {
      for (size_t j = 0; j < h->nelig; j++) h->elig[j]->eligible = false;
      return false;
    }
    h->stats.catchup_chunks++;
    /* etcd's syncWatchers: every catch-up response carries the store's
     * current revision, also one that holds only the first chunk */
    deliver(h, &h->unsynced, &h->hist, 0, true, h->cur_rev);
  }
  for (size_t j = 0; j < h->nelig; j++) {
    watcher *w = h->elig[j];
    w->eligible = false;
    if (w->next_rev < next) w->next_rev = next;
    if (w->redo_rev) w->next_rev = w->redo_rev, w->redo_rev = 0;
    if (w->next_rev > h->cur_rev) w_move(h, w, true);
    else group_to_last(&h->unsynced, w); /* the others' turn first */
  }
  return true;
}

bool watch_hub_waiting(const watch_hub *h) { return h->unsynced.n > 0 || h->deferred; }

void watch_hub_tick(watch_hub *h) {
  if (!h->unsynced.n && !h->deferred) return;
  h->deferred = false;
  /* A stream whose backlog kept its watchers back learns its loop's view
   * only when a message reaches the loop: send an empty one when none is
   * on its way. */
  for (size_t i = 0; i < h->streams.cap; i++) {
    wstream *st = h->streams.v[i];
    if (!st) continue;
    if (st->out_len) stream_post(h, st, false); /* records its loop had no room for */
    if (st->out_len) h->deferred = true;
    bool idle = st->posted == atomic_load(&st->fb->delivered) &&
                st->probes_sent == atomic_load(&st->fb->probes_done);
    if (idle && stream_backlog(st) >= WATCH_STREAM_LOW_BYTES) stream_post(h, st, true);
  }
}

void watch_hub_clock(watch_hub *h, uint64_t now_ms) { h->now_ms = now_ms; }

/* ===== the filter ========================================================== */

uint64_t watch_hub_filter_due_ms(const watch_hub *h) {
  if (!h->filter_dirty) return UINT64_MAX;
  return h->filter_ms + 1 + h->nwatchers / 1000; /* see "The filter": Cost */
}

bool watch_hub_filter_due(const watch_hub *h) { return h->now_ms >= watch_hub_filter_due_ms(h); }

static size_t filter_srcs(const wgroup *g, watch_filter_src *src, size_t n) {
  for (const watcher *w = g->all; w; w = w->gnext)
    src[n++] = (watch_filter_src){.key = w->key, .key_len = w->key_len, .end = w->end,
                                  .end_len = w->end_len, .from_key = w->kind == W_FROM_KEY};
  return n;
}

watch_filter *watch_hub_filter_build(watch_hub *h) {
  size_t n = h->synced.n + h->unsynced.n;
  watch_filter_src *src = malloc((n ? n : 1) * sizeof(*src));
  if (!src) return NULL; /* stays due; fresh watchers are served from history */
  n = filter_srcs(&h->unsynced, src, filter_srcs(&h->synced, src, 0));
  watch_filter *f = watch_filter_build(h->filter_gen + 1, src, n);
  free(src);
  if (!f) return NULL;
  h->filter_gen = f->gen;
  h->filter_dirty = false;
  h->filter_ms = h->now_ms;
  return f;
}

uint64_t watch_hub_progress_due(const watch_hub *h) { return h->nticks ? h->ticks[0]->tick_ms : UINT64_MAX; }

/* One tick of st's ticker (etcd's sendLoop, case <-progressTicker.C). */
static void stream_progress_tick(watch_hub *h, wstream *st) {
  for (size_t k = 0; k < st->nw; k++) {
    watcher *w = st->w[k];
    if (!w->progress) continue;
    /* etcd: only a synced watcher answers; "elide next progress update if
     * sent a key update" */
    if (!w->got_events && w->synced) send_ctl(h, st, w->id, false, false, 0, NULL, h->cur_rev);
    w->got_events = false;
  }
}

void watch_hub_progress(watch_hub *h) {
  while (h->nticks && h->ticks[0]->tick_ms <= h->now_ms) {
    wstream *st = h->ticks[0];
    stream_progress_tick(h, st);
    /* a Go ticker drops the ticks a slow receiver missed and keeps its phase */
    do st->tick_ms += st->period_ms;
    while (st->tick_ms <= h->now_ms);
    tick_down(h, 0);
  }
}

void watch_hub_get_stats(const watch_hub *h, watch_hub_stats *st) {
  *st = h->stats;
  st->watchers = h->nwatchers;
  st->synced = h->synced.n;
  st->unsynced = h->unsynced.n;
  st->streams = h->streams.n;
  st->cur_rev = h->cur_rev;
}

watch_hub *watch_hub_new(const watch_hub_env *env, int64_t cur_rev) {
  watch_hub *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->env = *env;
  h->unsent = env->unsent ? env->unsent : &h->own_unsent;
  h->cur_rev = cur_rev;
  h->rng = env->seed | 1;
  if (env->loop_handled) {
    h->loop_posted = calloc(env->n_loops ? env->n_loops : 1, sizeof(*h->loop_posted));
    if (!h->loop_posted) {
      free(h);
      return NULL;
    }
  }
  h->hdr_rev = -1;
  return h;
}

void watch_hub_free(watch_hub *h) {
  if (!h) return;
  for (size_t i = 0; i < h->streams.cap; i++) {
    if (!h->streams.v[i]) continue;
    stream_remove(h, h->streams.v[i]);
    i = (size_t)-1; /* the map shifted: rescan (shutdown only) */
  }
  map_free(&h->streams);
  free(h->ticks);
  group_free(&h->synced);
  group_free(&h->unsynced);
  watch_batch_free(&h->hist);
  free(h->loop_posted);
  free(h);
}

/* ===== the actor =========================================================== */

typedef struct watch_actor {
  server *s;
  watch_hub *hub;
  _Atomic uint64_t *loop_handled; /* [net loops], incremented by the loops */
  /* published by this thread, read by apply (see "The filter") */
  watch_filter *filter;   /* rcu_assign_pointer; NULL: nothing is watched */
  _Atomic uint64_t filter_gen; /* its gen, stored after the pointer */
  /* apply thread only */
  bool col_failed;
  bool skipped;           /* the filter left an event of this batch out */
  uint64_t fgen;          /* filter_gen when the batch began */
  bool wake;              /* the last batch's message must be seen now */
  int64_t rev_before;
  watch_batch col;
} watch_actor;

static uint64_t mono_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static int post_to_net(void *arg, msg_watch_out *m) {
  server *s = arg;
  if (!s->net || net_post(s->net, m->call.loop, m) < 0) {
    watch_out_free(m);
    return -1;
  }
  return 0;
}

static void filter_free_rcu(struct rcu_head *head) {
  watch_filter_free(caa_container_of(head, watch_filter, rcu));
}

/* A new filter for apply; the old one goes after a grace period. The gen
 * is stored after the pointer (seq_cst): apply reads the gen first, so a
 * filter it dereferences later is at least that new. */
static void filter_publish(watch_actor *a) {
  watch_filter *f = watch_hub_filter_build(a->hub);
  if (!f) return;
  watch_filter *old = a->filter;
  rcu_assign_pointer(a->filter, f);
  atomic_store(&a->filter_gen, f->gen);
  if (old) call_rcu(&old->rcu, filter_free_rcu);
}

static void free_msg(msg_hdr *m) {
  if (m->kind == MSG_WATCH_EVENTS) watch_batch_free(&((msg_watch_events *)m)->b);
  free(m);
}

/* Handles up to max messages; returns how many, or -1 on MSG_STOP. */
static int drain(watch_actor *a, int max) {
  int n = 0;
  msg_hdr *m;
  while (n < max && (m = mailbox_pop(&a->s->watch_mb))) {
    n++;
    if (m->kind == MSG_STOP) {
      free(m);
      return -1;
    }
    if (m->kind == MSG_WATCH_EVENTS) watch_hub_events(a->hub, (msg_watch_events *)m);
    else if (m->kind == MSG_WATCH_REQ) watch_hub_request(a->hub, (msg_watch_req *)m);
    free_msg(m);
  }
  return n;
}

static void *watch_actor_main(void *arg) {
  watch_actor *a = arg;
  server *s = a->s;
  prctl(PR_SET_NAME, "watch");
  rcu_register_thread();
  uint64_t next_probe = 0;
  for (;;) {
    watch_hub_clock(a->hub, mono_ms());
    int n = drain(a, 256);
    if (n < 0) break;
    if (atomic_exchange(&s->watch_dropped, 0)) watch_hub_gap(a->hub, mvcc_current_rev(s->store));
    bool busy = watch_hub_catch_up(a->hub);
    uint64_t now = mono_ms();
    if (now >= next_probe) {
      watch_hub_tick(a->hub);
      next_probe = now + 10;
    }
    watch_hub_clock(a->hub, now);
    watch_hub_progress(a->hub);
    if (watch_hub_filter_due(a->hub)) filter_publish(a); /* before sleeping: see "The filter" */
    if (n == 0 && !busy) {
      uint64_t until = watch_hub_progress_due(a->hub);
      if (watch_hub_waiting(a->hub) && next_probe < until) until = next_probe;
      if (watch_hub_filter_due_ms(a->hub) < until) until = watch_hub_filter_due_ms(a->hub);
      uint64_t wait_ms = until > now ? until - now : 0;
      mailbox_wait(&s->watch_mb, wait_ms > 60000 ? 60000 : (int)wait_ms);
    }
  }
  watch_hub_stats st;
  watch_hub_get_stats(a->hub, &st);
  log_printf(LOG_LEVEL_DEBUG, "watch",
             "watchers %llu (unsynced %llu), streams stalled %llu times (%llu for the budget), %llu gaps, "
             "%llu fresh gaps, %llu catch-up chunks (%llu rounds waited for the budget), unsent output peaked at %lld bytes",
             (unsigned long long)st.watchers, (unsigned long long)st.unsynced, (unsigned long long)st.stalls,
             (unsigned long long)st.budget_stalls, (unsigned long long)st.gaps, (unsigned long long)st.fresh_gaps,
             (unsigned long long)st.catchup_chunks, (unsigned long long)st.budget_waits, (long long)st.unsent_peak);
  rcu_unregister_thread();
  return NULL;
}

int watch_actor_init(server *s) {
  watch_actor *a = calloc(1, sizeof(*a));
  if (!a) return -ENOMEM;
  int rc = mailbox_init(&s->watch_mb, WATCH_MAILBOX_SLOTS);
  if (rc) {
    free(a);
    return rc;
  }
  uint32_t n_loops = s->opt.net_loops ? s->opt.net_loops : 1;
  a->loop_handled = calloc(n_loops, sizeof(*a->loop_handled));
  watch_hub_env env = {.store = s->store, .cluster_id = s->cluster_id, .member_id = s->member_id,
                       .term = &s->term, .max_request_bytes = s->opt.max_request_bytes,
                       .post = post_to_net, .post_arg = s, .count = &s->watch_count,
                       .n_loops = n_loops, .loop_handled = a->loop_handled};
  if (!env.max_request_bytes) env.max_request_bytes = 1536 * 1024;
  env.unsent = &s->watch_unsent;
  /* at least 16 responses of the largest request a client may send */
  env.budget_bytes = WATCH_UNSENT_BUDGET_BYTES;
  if (env.budget_bytes < 16 * env.max_request_bytes) env.budget_bytes = 16 * env.max_request_bytes;
  /* etcd v3rpc.NewWatchServer: a positive interval, at least 100 ms */
  env.progress_ms = 10 * 60 * 1000;
  if (s->opt.watch_progress_ns > 0) {
    env.progress_ms = (uint64_t)s->opt.watch_progress_ns / 1000000;
    if (s->opt.watch_progress_ns < 100 * 1000000LL) {
      log_printf(LOG_LEVEL_WARNING, "etcdserver/api/v3rpc",
                 "adjusting watch progress notify interval to minimum period 100ms");
      env.progress_ms = 100;
    }
  }
  env.seed = s->member_id ^ mono_ms();
  a->hub = a->loop_handled ? watch_hub_new(&env, mvcc_current_rev(s->store)) : NULL;
  if (!a->hub) {
    mailbox_destroy(&s->watch_mb);
    free(a->loop_handled);
    free(a);
    return -ENOMEM;
  }
  watch_hub_clock(a->hub, mono_ms());
  a->s = s;
  s->watch = a;
  mvcc_set_event_fn(s->store, watch_apply_event, s);
  mvcc_set_event_want(s->store, watch_apply_want);
  return 0;
}

int watch_actor_start(server *s) { return -pthread_create(&s->watch_th, NULL, watch_actor_main, s->watch); }

void watch_actor_stop(server *s) {
  if (!s->watch) return;
  atomic_store(&s->watch_stopped, 1);
  msg_hdr *m = malloc(sizeof(*m));
  if (m) {
    m->kind = MSG_STOP;
    mailbox_push(&s->watch_mb, m);
  }
  pthread_join(s->watch_th, NULL);
}

void watch_actor_destroy(server *s) {
  watch_actor *a = s->watch;
  if (!a) return;
  msg_hdr *m;
  while ((m = mailbox_pop(&s->watch_mb))) free_msg(m);
  rcu_register_thread();
  watch_hub_free(a->hub);
  watch_filter_free(a->filter); /* apply has stopped: no reader left */
  rcu_barrier();                /* the older ones, queued by call_rcu */
  rcu_unregister_thread();
  watch_batch_free(&a->col);
  mailbox_destroy(&s->watch_mb);
  free(a->loop_handled);
  free(a);
  s->watch = NULL;
}

/* ===== the apply side ====================================================== */

void watch_apply_begin(server *s) {
  watch_actor *a = s->watch;
  if (!a) return;
  a->fgen = atomic_load(&a->filter_gen);
  a->col_failed = a->skipped = false;
  a->rev_before = mvcc_current_rev(s->store);
  watch_batch_reset(&a->col);
}

/* Asked by the store before it builds an event. The read-side section is
 * per key: the store's writer must not call in holding one. */
bool watch_apply_want(void *arg, const uint8_t *key, size_t len) {
  server *s = arg;
  watch_actor *a = s->watch;
  if (!a) return false;
  rcu_read_lock();
  bool yes = watch_filter_match(rcu_dereference(a->filter), key, len);
  rcu_read_unlock();
  if (!yes) a->skipped = true;
  return yes;
}

void watch_apply_event(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev_kv) {
  server *s = arg;
  watch_actor *a = s->watch;
  if (!a || a->col_failed) return;
  if (watch_batch_add(&a->col, type, kv, prev_kv)) a->col_failed = true;
}

void watch_apply_commit(server *s) {
  watch_actor *a = s->watch;
  if (!a) return;
  int64_t rev = mvcc_current_rev(s->store);
  if (rev <= a->rev_before || atomic_load(&s->watch_stopped)) return;
  msg_watch_events *m = malloc(sizeof(*m));
  if (!m) {
    atomic_store(&s->watch_dropped, 1);
    return;
  }
  *m = (msg_watch_events){.hdr = {MSG_WATCH_EVENTS}, .rev_first = a->rev_before + 1, .rev_last = rev,
                          .omitted = a->col_failed, .filtered = a->skipped, .filter_gen = a->fgen};
  if (!m->omitted) {
    m->b = a->col; /* the batch's buffers go with the message */
    a->col = (watch_batch){0};
  }
  a->wake = m->omitted || m->b.n > 0;
  if (!mailbox_try_push_quiet(&s->watch_mb, m)) {
    free_msg(&m->hdr);
    atomic_store(&s->watch_dropped, 1);
    a->wake = true;
  }
}

/* Wakes the watch actor for the batch watch_apply_commit queued, after the
 * batch's replies are on their way (a reply does not wait for this context
 * switch). A batch the filter left without events only advances the actor's
 * revision: it travels quietly and is drained, in order, before the next
 * request (a watch create among them) or event batch. The fence pairs with
 * the actor's prepare_sleep: a filter published meanwhile (its gen stored
 * before the actor sleeps) is seen here, and then we wake it, for a fresh
 * watcher may need what this batch left out ("The filter"). */
void watch_apply_notify(server *s) {
  watch_actor *a = s->watch;
  if (!a) return;
  mailbox_fence(&s->watch_mb);
  if (a->wake || atomic_load(&a->filter_gen) != a->fgen) mailbox_wake(&s->watch_mb);
  a->wake = false;
}
