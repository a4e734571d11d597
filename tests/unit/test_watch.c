/*
 * test_watch.c -- the watch hub (actors/watch_actor.c) without threads:
 * a real MVCC store in a temporary directory, batches built the way the
 * apply actor builds them, and a post callback standing in for the net
 * loops that decodes every WatchResponse.
 *
 * Covers matching (single key, range, from-key, the interval tree against
 * brute force), filters and prev_kv, etcd's control responses (created,
 * duplicate id, empty range, cancel, progress), catch-up from history in
 * chunks, compaction cancels, lost/omitted batches, and a slow stream
 * moving to catch-up and back without a gap or a duplicate, and the
 * server-wide budget on unsent output across many such streams.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#include "actors/watch.h"
#include "actors/watch_filter.h"
#include "msg/errors.h"
#include "rpc.pb-c.h"
#include "store/mvcc_history.h"

static mvcc *M;
static char dir[64];
static arena A;
static uint64_t ci = 1;
static watch_hub *H;
static watch_batch COL;   /* the current batch's events (apply's collector) */
static int64_t rev_before;
static bool omit_next;
static watch_filter *FILTER;  /* when set, events pass through it, as in apply */
static bool SKIPPED;          /* it left an event of this batch out */

/* ---- the fake net: every response, decoded ------------------------------- */

typedef struct got {
  int32_t stream;
  int64_t watch_id, hdr_rev, compact;
  bool created, canceled, fragment;
  char reason[80];
  char ev[1024]; /* "P k@rev=v(prev)" joined by ',' */
  size_t nev;
} got;

static got G[20000];
static size_t NG;
static bool slow[8];               /* per stream id: the loop takes nothing */
static msg_watch_out *held[4096];  /* messages a slow stream has not taken */
static size_t nheld;

/* per (stream, watch id) below 8: events seen, last revision, out-of-order */
static size_t CNT[8][8];
static int64_t LAST[8][8];
static size_t DISORDER[8][8];

static void decode(int32_t stream, const uint8_t *p, size_t len) {
  Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, p);
  CU_ASSERT_FATAL(r != NULL);
  CU_ASSERT_FATAL(NG < sizeof(G) / sizeof(G[0]));
  got *g = &G[NG++];
  memset(g, 0, sizeof(*g));
  g->stream = stream;
  g->watch_id = r->watch_id;
  g->hdr_rev = r->header ? r->header->revision : -1;
  g->compact = r->compact_revision;
  g->created = r->created, g->canceled = r->canceled, g->fragment = r->fragment;
  snprintf(g->reason, sizeof(g->reason), "%s", r->cancel_reason ? r->cancel_reason : "");
  for (size_t i = 0; i < r->n_events; i++) {
    Mvccpb__Event *e = r->events[i];
    char b[256];
    int n = snprintf(b, sizeof(b), "%s%s %.*s@%lld", i ? "," : "", e->type == MVCCPB__EVENT__EVENT_TYPE__PUT ? "P" : "D",
                     (int)e->kv->key.len, (char *)e->kv->key.data, (long long)e->kv->mod_revision);
    if (e->type == MVCCPB__EVENT__EVENT_TYPE__PUT)
      n += snprintf(b + n, sizeof(b) - (size_t)n, "=%.*s", (int)e->kv->value.len, (char *)e->kv->value.data);
    if (e->prev_kv) snprintf(b + n, sizeof(b) - (size_t)n, "(%.*s)", (int)e->prev_kv->value.len, (char *)e->prev_kv->value.data);
    if (strlen(g->ev) + strlen(b) < sizeof(g->ev)) strcat(g->ev, b);
  }
  g->nev = r->n_events;
  if (stream >= 0 && stream < 8 && r->watch_id >= 0 && r->watch_id < 8) {
    for (size_t i = 0; i < r->n_events; i++) {
      int64_t rev = r->events[i]->kv->mod_revision;
      if (rev <= LAST[stream][r->watch_id]) DISORDER[stream][r->watch_id]++;
      LAST[stream][r->watch_id] = rev;
      CNT[stream][r->watch_id]++;
    }
  }
  etcdserverpb__watch_response__free_unpacked(r, NULL);
}

static void take(msg_watch_out *m) {
  for (size_t off = 0; off + 4 <= m->len;) {
    uint32_t l;
    memcpy(&l, m->buf + off, 4);
    decode(m->call.stream_id, m->buf + off + 4, l);
    off += 4 + l;
  }
  atomic_fetch_add(&m->fb->delivered, m->len);
  atomic_store(&m->fb->pending, 0);
  if (!m->len) atomic_fetch_add(&m->fb->probes_done, 1);
  watch_out_free(m);
}

static int post(void *arg, msg_watch_out *m) {
  (void)arg;
  if (m->call.stream_id < 8 && slow[m->call.stream_id]) {
    /* taken by the loop, stuck behind flow control */
    atomic_fetch_add(&m->fb->delivered, m->len);
    atomic_fetch_add(&m->fb->pending, m->len);
    CU_ASSERT_FATAL(nheld < 4096);
    held[nheld++] = m;
    return 0;
  }
  take(m);
  return 0;
}

/* The slow stream's socket drains. */
static void unslow(int32_t stream) {
  slow[stream] = false;
  for (size_t i = 0; i < nheld; i++) {
    atomic_store(&held[i]->fb->pending, 0);
    atomic_fetch_sub(&held[i]->fb->delivered, held[i]->len);
    take(held[i]);
  }
  nheld = 0;
}

/* ---- store and batches ---------------------------------------------------- */

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static bool want(void *arg, const uint8_t *key, size_t len) {
  (void)arg;
  bool yes = watch_filter_match(FILTER, key, len);
  SKIPPED |= !yes;
  return yes;
}

static void on_event(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev) {
  (void)arg;
  CU_ASSERT(watch_batch_add(&COL, type, kv, prev) == 0);
}

static void fresh(void) {
  strcpy(dir, "/tmp/cetcd-test-watch-XXXXXX");
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  char err[256] = "";
  CU_ASSERT_FATAL(mvcc_open(dir, NULL, &M, err, sizeof(err)) == 0);
  mvcc_set_event_fn(M, on_event, NULL);
  arena_init(&A, 0);
  ci = 1;
  NG = 0;
  nheld = 0;
  memset(CNT, 0, sizeof(CNT)), memset(LAST, 0, sizeof(LAST)), memset(DISORDER, 0, sizeof(DISORDER));
  memset(slow, 0, sizeof(slow));
  watch_hub_env env = {.store = M, .cluster_id = 7, .member_id = 9, .max_request_bytes = 1536 * 1024, .post = post};
  H = watch_hub_new(&env, mvcc_current_rev(M));
  CU_ASSERT_FATAL(H != NULL);
}

static void done(void) {
  watch_hub_free(H);
  mvcc_close(M);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  arena_free(&A);
  watch_batch_free(&COL);
  watch_filter_free(FILTER);
  FILTER = NULL;
}

static void begin(void) {
  arena_reset(&A);
  rev_before = mvcc_current_rev(M);
  watch_batch_reset(&COL);
  SKIPPED = false;
  mvcc_batch_begin(M);
}

/* Commits and hands the batch to the hub, as apply + the actor do. */
static void commit(void) {
  CU_ASSERT(mvcc_batch_commit(M, ci++) == 0);
  int64_t rev = mvcc_current_rev(M);
  if (rev == rev_before) return;
  msg_watch_events m = {.hdr = {MSG_WATCH_EVENTS}, .rev_first = rev_before + 1, .rev_last = rev,
                        .omitted = omit_next, .b = COL, .filtered = SKIPPED,
                        .filter_gen = FILTER ? FILTER->gen : 0};
  omit_next = false;
  watch_hub_events(H, &m);
}

static ProtobufCBinaryData B(const char *s) { return (ProtobufCBinaryData){strlen(s), (uint8_t *)s}; }

static void op_put(const char *k, const char *v) {
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  Etcdserverpb__PutResponse resp = ETCDSERVERPB__PUT_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  req.key = B(k), req.value = B(v);
  resp.header = &h;
  CU_ASSERT(mvcc_put(M, &req, &resp, &A) == 0);
}

static void op_del(const char *k, const char *end) {
  Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
  Etcdserverpb__DeleteRangeResponse resp = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  req.key = B(k), req.range_end = B(end);
  resp.header = &h;
  CU_ASSERT(mvcc_delete_range(M, &req, &resp, &A) == 0);
}

static void put(const char *k, const char *v) { begin(), op_put(k, v), commit(); }
static void del(const char *k, const char *end) { begin(), op_del(k, end), commit(); }

static void compact(int64_t rev) {
  Etcdserverpb__CompactionRequest req = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
  Etcdserverpb__CompactionResponse resp = ETCDSERVERPB__COMPACTION_RESPONSE__INIT;
  Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  req.revision = rev;
  resp.header = &h;
  begin();
  CU_ASSERT(mvcc_compact(M, &req, &resp, &A) == 0);
  commit();
}

/* ---- requests ------------------------------------------------------------- */

typedef struct wopt {
  const char *end;  /* NULL = single key; "" = from key ("\0") */
  int64_t start, id;
  bool prev, noput, nodelete, fragment, progress;
} wopt;

static net_call CALL(int32_t stream) { return (net_call){.loop = 0, .conn_slot = 1, .conn_gen = 1, .stream_id = stream}; }

static void watch(int32_t stream, const char *key, wopt o) {
  size_t kl = strlen(key), el = o.end ? (o.end[0] ? strlen(o.end) : 1) : 0;
  msg_watch_req *m = calloc(1, sizeof(*m) + kl + el + 1);
  m->hdr.kind = MSG_WATCH_REQ;
  m->call = CALL(stream);
  m->op = WATCH_OP_CREATE;
  m->watch_id = o.id;
  m->start_revision = o.start;
  m->prev_kv = o.prev, m->noput = o.noput, m->nodelete = o.nodelete, m->fragment = o.fragment;
  m->progress_notify = o.progress;
  m->key_len = (uint32_t)kl, m->end_len = (uint32_t)el;
  memcpy(m->data, key, kl);
  if (el) memcpy(m->data + kl, o.end[0] ? o.end : "", el);
  watch_hub_request(H, m);
  free(m);
}

static void simple(int32_t stream, int op, int64_t id) {
  msg_watch_req m = {.hdr = {MSG_WATCH_REQ}, .call = CALL(stream), .op = op, .watch_id = id};
  watch_hub_request(H, &m);
}

static void catch_up(void) {
  for (int i = 0; i < 100000 && watch_hub_catch_up(H); i++) {
  }
}

/* Every event line stream s's watcher id received, joined by ','. */
static const char *events_of(int32_t s, int64_t id) {
  static char buf[65536];
  buf[0] = 0;
  for (size_t i = 0; i < NG; i++) {
    if (G[i].stream != s || G[i].watch_id != id || !G[i].nev) continue;
    if (buf[0]) strcat(buf, ",");
    strcat(buf, G[i].ev);
  }
  return buf;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_created_and_matching(void) {
  fresh();
  watch(1, "a", (wopt){0});                       /* id 0 */
  watch(1, "a", (wopt){.end = "c"});              /* id 1 */
  watch(1, "b", (wopt){.end = ""});               /* id 2: >= b */
  watch(1, "", (wopt){.end = ""});                /* id 3: everything */
  watch(1, "a", (wopt){.prev = true, .id = 42});  /* id 42 */
  watch(1, "a", (wopt){.noput = true});           /* id 4 */
  CU_ASSERT(NG == 6);
  CU_ASSERT(G[0].created && !G[0].canceled && G[0].watch_id == 0 && G[0].hdr_rev == 1);
  CU_ASSERT(G[4].watch_id == 42 && G[5].watch_id == 4);
  NG = 0;
  put("a", "1");
  put("b", "1");
  put("a", "2");
  del("a", "");
  begin(), op_put("c", "1"), op_put("ab", "x"), commit(); /* one batch, two revisions */
  CU_ASSERT_STRING_EQUAL(events_of(1, 0), "P a@2=1,P a@4=2,D a@5");
  CU_ASSERT_STRING_EQUAL(events_of(1, 1), "P a@2=1,P b@3=1,P a@4=2,D a@5,P ab@7=x");
  CU_ASSERT_STRING_EQUAL(events_of(1, 2), "P b@3=1,P c@6=1");
  CU_ASSERT_STRING_EQUAL(events_of(1, 3), "P a@2=1,P b@3=1,P a@4=2,D a@5,P c@6=1,P ab@7=x");
  CU_ASSERT_STRING_EQUAL(events_of(1, 42), "P a@2=1,P a@4=2(1),D a@5(2)"); /* no prev on a create */
  CU_ASSERT_STRING_EQUAL(events_of(1, 4), "D a@5");
  /* one response per revision, header = that revision */
  size_t n3 = 0;
  for (size_t i = 0; i < NG; i++)
    if (G[i].watch_id == 3) {
      n3++;
      CU_ASSERT(G[i].hdr_rev == (int64_t)n3 + 1);
    }
  CU_ASSERT(n3 == 6);
  done();
}

static void test_control(void) {
  fresh();
  put("x", "1");
  watch(1, "a", (wopt){.id = 5});
  watch(1, "b", (wopt){.id = 5});
  CU_ASSERT(G[1].watch_id == -1 && G[1].created && G[1].canceled);
  CU_ASSERT_STRING_EQUAL(G[1].reason, "mvcc: duplicate watch ID provided on the WatchStream");
  watch(1, "b", (wopt){.end = "a"});
  CU_ASSERT(G[2].watch_id == -1 && G[2].canceled);
  CU_ASSERT_STRING_EQUAL(G[2].reason, "mvcc: watcher range is empty");
  watch(1, "a", (wopt){0}); /* auto ids skip nothing here: 0 */
  CU_ASSERT(G[3].watch_id == 0 && G[3].hdr_rev == 2);
  watch(2, "a", (wopt){.id = 5}); /* another stream: its own ids */
  CU_ASSERT(G[4].watch_id == 5 && !G[4].canceled);
  simple(1, WATCH_OP_CANCEL, 5);
  CU_ASSERT(G[5].watch_id == 5 && G[5].canceled && !G[5].created && G[5].hdr_rev == 2);
  simple(1, WATCH_OP_CANCEL, 77); /* unknown: no answer */
  CU_ASSERT(NG == 6);
  simple(1, WATCH_OP_PROGRESS, 0);
  CU_ASSERT(NG == 7 && G[6].watch_id == -1 && G[6].hdr_rev == 2 && !G[6].created);
  put("a", "1");
  CU_ASSERT_STRING_EQUAL(events_of(1, 0), "P a@3=1");
  CU_ASSERT_STRING_EQUAL(events_of(1, 5), "");
  CU_ASSERT_STRING_EQUAL(events_of(2, 5), "P a@3=1");
  simple(2, WATCH_OP_GONE, 0);
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.watchers == 1 && st.streams == 1);
  done();
}

/* The interval tree finds exactly what a scan of every watcher finds. */
static void test_interval_tree(void) {
  fresh();
  enum { NW = 200, NK = 100 };
  static char wk[NW][8], we[NW][8];
  static int kind[NW];
  srand(12345);
  for (int i = 0; i < NW; i++) {
    int a = rand() % 60, b = a + 1 + rand() % 20;
    snprintf(wk[i], 8, "k%02d", a);
    snprintf(we[i], 8, "k%02d", b);
    kind[i] = rand() % 4; /* 0 key, 1 range, 2 from key, 3 prefix-like range */
    if (kind[i] == 3) snprintf(we[i], 8, "k%d", a / 10 + 1); /* "k3" ends "k2x" */
    watch(1, wk[i], (wopt){.end = kind[i] == 0 ? NULL : kind[i] == 2 ? "" : we[i], .id = i + 1});
  }
  static char keys[NK][8];
  begin();
  for (int i = 0; i < NK; i++) {
    snprintf(keys[i], 8, "k%02d", rand() % 85);
    if (i % 25 == 24) commit(), begin();
    op_put(keys[i], "v");
  }
  commit();
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.watchers == NW);
  int bad = 0;
  for (int i = 0; i < NW; i++) {
    size_t want = 0;
    for (int k = 0; k < NK; k++) {
      const char *end = kind[i] == 0 ? NULL : kind[i] == 2 ? "" : we[i];
      if (mvcc_history_in_range((const uint8_t *)keys[k], strlen(keys[k]), (const uint8_t *)wk[i], strlen(wk[i]),
                                (const uint8_t *)(end ? (end[0] ? end : "") : ""), end ? (end[0] ? strlen(end) : 1) : 0))
        want++;
    }
    size_t have = 0;
    for (size_t g = 0; g < NG; g++)
      if (G[g].watch_id == i + 1) have += G[g].nev;
    if (have != want) bad++;
  }
  CU_ASSERT(bad == 0);
  done();
}

static void test_catch_up(void) {
  fresh();
  char k[16], v[16];
  for (int i = 0; i < 3000; i++) {
    snprintf(k, sizeof(k), "k%d", i % 7);
    snprintf(v, sizeof(v), "%d", i);
    put(k, v);
  }
  int64_t cur = mvcc_current_rev(M); /* 3001 */
  watch(1, "k3", (wopt){.start = 2, .prev = true});
  watch(1, "k", (wopt){.end = "l", .start = 1500});
  watch(1, "k", (wopt){.end = "l", .start = cur + 5}); /* the future */
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.unsynced == 2 && st.synced == 1);
  catch_up();
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.unsynced == 0 && st.synced == 3);
  CU_ASSERT(st.catchup_chunks >= 3); /* 3000 records, chunks of 1024 */
  put("k3", "last");
  for (int i = 0; i < 6; i++) put("k1", "x");
  /* every event once, in order */
  const char *e0 = events_of(1, 0);
  CU_ASSERT(strncmp(e0, "P k3@5=3,P k3@12=10(3),", 23) == 0); /* a create has no prev_kv */
  CU_ASSERT(DISORDER[1][0] == 0 && DISORDER[1][1] == 0 && DISORDER[1][2] == 0);
  CU_ASSERT(CNT[1][0] == 3000 / 7 + 1 + 1);             /* i%7==3 for i<3000, plus "last" */
  CU_ASSERT(CNT[1][1] == (size_t)(cur - 1500 + 1) + 7); /* every revision from 1500 */
  CU_ASSERT(CNT[1][2] == 3);                            /* revs cur+5 .. cur+7 */
                                 /* revs cur+5 .. cur+7 */
  done();
}

/* etcd's syncWatchers sends every catch-up response with the store's
 * current revision in its header (curRev), also when the watcher's history
 * spans several chunks and the response holds only the first of them. */
static void test_catch_up_header(void) {
  fresh();
  char v[16];
  for (int i = 0; i < 3000; i++) {
    snprintf(v, sizeof(v), "%d", i);
    put("k", v);
  }
  int64_t cur = mvcc_current_rev(M); /* 3001 */
  watch(1, "k", (wopt){.start = 2});
  NG = 0;
  catch_up();
  size_t responses = 0, events = 0;
  for (size_t i = 0; i < NG; i++) {
    if (!G[i].nev) continue;
    responses++;
    events += G[i].nev;
    CU_ASSERT(G[i].hdr_rev == cur);
  }
  CU_ASSERT(events == 3000);
  CU_ASSERT(responses >= 3); /* chunks of at most 1024 records */
  /* live again: one response per revision, header = that revision */
  NG = 0;
  put("k", "live");
  CU_ASSERT(NG == 1 && G[0].nev == 1 && G[0].hdr_rev == cur + 1);
  done();
}

/* etcd 3.4 ticks progress per stream (each sendLoop has its own ticker,
 * started with the stream, period interval + rand(interval / 10)); a server
 * wide timer would notify a stream opened half an interval later at the
 * same moment as the first. */
static void test_progress_per_stream(void) {
  fresh();
  watch_hub_free(H);
  watch_hub_env env = {.store = M, .cluster_id = 7, .member_id = 9, .max_request_bytes = 1536 * 1024,
                       .post = post, .progress_ms = 1000, .seed = 42};
  H = watch_hub_new(&env, mvcc_current_rev(M));
  CU_ASSERT_FATAL(H != NULL);
  int64_t cur = mvcc_current_rev(M);
  watch_hub_clock(H, 0);
  watch(1, "a", (wopt){.progress = true});
  watch_hub_clock(H, 500);
  watch(2, "b", (wopt){.progress = true});
  watch(2, "c", (wopt){0});
  NG = 0;
  /* stream 1 ticks at 1000..1099, stream 2 at 1500..1599 */
  CU_ASSERT(watch_hub_progress_due(H) >= 1000 && watch_hub_progress_due(H) < 1100);
  watch_hub_clock(H, 999), watch_hub_progress(H);
  CU_ASSERT(NG == 0);
  watch_hub_clock(H, 1100), watch_hub_progress(H);
  CU_ASSERT_FATAL(NG == 1);
  CU_ASSERT(G[0].stream == 1 && G[0].watch_id == 0 && G[0].hdr_rev == cur && !G[0].nev && !G[0].created);
  watch_hub_clock(H, 1499), watch_hub_progress(H);
  CU_ASSERT(NG == 1);
  watch_hub_clock(H, 1600), watch_hub_progress(H);
  CU_ASSERT_FATAL(NG == 2);
  CU_ASSERT(G[1].stream == 2 && G[1].watch_id == 0 && G[1].hdr_rev == cur); /* not "c": no progress_notify */
  /* an event elides the next notification of its watcher */
  put("a", "x");
  CU_ASSERT(NG == 3 && G[2].nev == 1);
  watch_hub_clock(H, 2200), watch_hub_progress(H); /* stream 1's 2nd tick: elided */
  CU_ASSERT(NG == 3);
  watch_hub_clock(H, 3300), watch_hub_progress(H); /* stream 1's 3rd, stream 2's 2nd */
  CU_ASSERT(NG == 5);
  /* a stream that is gone ticks no more; missed ticks are dropped, not bunched */
  simple(2, WATCH_OP_GONE, 0);
  watch_hub_clock(H, 10000), watch_hub_progress(H);
  CU_ASSERT(NG == 6 && G[5].stream == 1);
  CU_ASSERT(watch_hub_progress_due(H) > 10000 && watch_hub_progress_due(H) <= 11100);
  done();
}

/* Many watchers of one key, all behind: a chunk is for at most
 * WATCH_CATCHUP_WATCHERS of them (its output stays bounded), they take
 * turns, and each still gets its whole history once, in order. */
static void test_catch_up_many(void) {
  fresh();
  char v[101];
  memset(v, 'x', 100), v[100] = 0;
  for (int i = 0; i < 2000; i++) put("k", v);
  enum { NW = 300 };
  for (int i = 0; i < NW; i++) watch(1, "k", (wopt){.start = 2});
  NG = 0;
  CU_ASSERT(watch_hub_catch_up(H));
  static size_t per[NW];
  memset(per, 0, sizeof(per));
  size_t who = 0;
  for (size_t i = 0; i < NG; i++)
    if (G[i].nev && G[i].watch_id >= 0 && G[i].watch_id < NW && per[G[i].watch_id]++ == 0) who++;
  CU_ASSERT(who > 0 && who <= WATCH_CATCHUP_WATCHERS);
  catch_up();
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.unsynced == 0 && st.synced == NW);
  memset(per, 0, sizeof(per));
  int64_t last[NW] = {0};
  size_t disorder = 0;
  for (size_t i = 0; i < NG; i++) {
    if (!G[i].nev || G[i].watch_id < 0 || G[i].watch_id >= NW) continue;
    per[G[i].watch_id] += G[i].nev;
    long long first = 0;
    if (sscanf(G[i].ev, "P k@%lld", &first) == 1 && first <= last[G[i].watch_id]) disorder++;
    last[G[i].watch_id] = first;
  }
  size_t complete = 0;
  for (int i = 0; i < NW; i++) complete += per[i] == 2000;
  CU_ASSERT(complete == NW);
  CU_ASSERT(disorder == 0);
  done();
}

static void test_compacted(void) {
  fresh();
  for (int i = 0; i < 10; i++) put("a", "v");
  compact(6);
  watch(1, "a", (wopt){.start = 3});
  watch(1, "a", (wopt){.start = 6});
  catch_up();
  bool found = false;
  for (size_t g = 0; g < NG; g++)
    if (G[g].watch_id == 0 && G[g].canceled) {
      found = true;
      CU_ASSERT(G[g].compact == 6 && G[g].hdr_rev == 0 && !G[g].created);
    }
  CU_ASSERT(found);
  CU_ASSERT_STRING_EQUAL(events_of(1, 1), "P a@6=v,P a@7=v,P a@8=v,P a@9=v,P a@10=v,P a@11=v");
  done();
}

/* Omitted or lost batches: the watchers that needed them read history. */
static void test_gap(void) {
  fresh();
  watch(1, "a", (wopt){0});
  put("a", "1");
  omit_next = true;
  put("a", "2");
  watch_hub_gap(H, mvcc_current_rev(M)); /* no-op: already seen */
  put("a", "3");                          /* arrives after the gap */
  catch_up();
  put("a", "4");
  CU_ASSERT_STRING_EQUAL(events_of(1, 0), "P a@2=1,P a@3=2,P a@4=3,P a@5=4");
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.gaps == 1 && st.synced == 1);
  done();
}

/* The filter: apply skips the events no watcher matches; a watcher created
 * after the filter a batch met reads what it left out from history, once;
 * once a filter holds it, it is fed live. */
static void rebuild(void) {
  watch_filter_free(FILTER);
  FILTER = watch_hub_filter_build(H);
  CU_ASSERT_FATAL(FILTER != NULL);
}

static void test_filter_fresh(void) {
  fresh();
  mvcc_set_event_want(M, want);
  rebuild(); /* no watcher: matches nothing */
  put("a", "1");
  CU_ASSERT(SKIPPED && COL.n == 0);
  watch(1, "a", (wopt){.prev = true});
  watch(1, "b", (wopt){.end = "c"});
  put("a", "2"); /* the old filter leaves it out */
  put("bb", "1");
  catch_up();
  CU_ASSERT_STRING_EQUAL(events_of(1, 0), "P a@3=2(1)");
  CU_ASSERT_STRING_EQUAL(events_of(1, 1), "P bb@4=1");
  rebuild();
  put("a", "3");
  CU_ASSERT(!SKIPPED && COL.n == 1);
  put("z", "1"); /* nobody's */
  CU_ASSERT(SKIPPED && COL.n == 0);
  put("b", "2");
  watch(2, "z", (wopt){0});
  put("z", "2"); /* stale filter again: only stream 2's watcher is fresh */
  catch_up();
  CU_ASSERT_STRING_EQUAL(events_of(1, 0), "P a@3=2(1),P a@5=3(2)");
  CU_ASSERT_STRING_EQUAL(events_of(1, 1), "P bb@4=1,P b@7=2");
  CU_ASSERT_STRING_EQUAL(events_of(2, 0), "P z@8=2");
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.fresh_gaps == 2 && st.gaps == 0 && st.unsynced == 0);
  simple(1, WATCH_OP_CANCEL, 0);
  rebuild();
  put("a", "4"); /* its only watcher is gone */
  CU_ASSERT(SKIPPED && COL.n == 0);
  done();
}

/* A stream that does not read: no more live events once past the high
 * mark, other streams carry on; when it drains it gets every event from
 * history, in order, once. */
static void test_slow_stream(void) {
  fresh();
  slow[1] = true;
  watch(1, "k", (wopt){.end = "l"});
  watch(2, "k", (wopt){.end = "l"});
  char v[512];
  memset(v, 'x', sizeof(v) - 1);
  v[sizeof(v) - 1] = 0;
  for (int i = 0; i < 2000; i++) {
    char k[16];
    snprintf(k, sizeof(k), "k%d", i % 13);
    put(k, v);
    watch_hub_catch_up(H);
    if (i % 10 == 0) watch_hub_tick(H);
  }
  watch_hub_stats st;
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.stalls == 1 && st.unsynced == 1);
  size_t held_bytes = 0;
  for (size_t i = 0; i < nheld; i++) held_bytes += held[i]->len;
  CU_ASSERT(held_bytes < WATCH_STREAM_HIGH_BYTES + 4096); /* bounded */
  unslow(1);
  for (int i = 0; i < 10000 && watch_hub_waiting(H); i++) watch_hub_catch_up(H), watch_hub_tick(H);
  put("k1", "after");
  watch_hub_get_stats(H, &st);
  CU_ASSERT(st.unsynced == 0);
  CU_ASSERT(DISORDER[1][0] == 0 && DISORDER[2][0] == 0);
  CU_ASSERT(CNT[1][0] == 2001 && CNT[2][0] == 2001);
  done();
}

/* A net loop that does not handle its mailbox: the hub stops posting to it
 * at WATCH_LOOP_MAX_MSGS (it never waits on a loop), keeps the records, and
 * posts them once the loop catches up; nothing is lost or repeated. */
static _Atomic uint64_t handled[1];

static void test_congested_loop(void) {
  fresh();
  watch_hub_free(H);
  watch_hub_env env = {.store = M, .max_request_bytes = 1 << 20, .post = post, .n_loops = 1, .loop_handled = handled};
  atomic_store(&handled[0], 0);
  H = watch_hub_new(&env, mvcc_current_rev(M));
  enum { NS = 7 }; /* streams 1..7: ids below 8 are tracked */
  for (int st = 1; st <= NS; st++) watch(st, "k", (wopt){.end = "l"});
  int puts = WATCH_LOOP_MAX_MSGS / NS + 200;
  for (int i = 0; i < puts; i++) {
    put("k1", "v");
    watch_hub_catch_up(H);
    if (i % 50 == 0) watch_hub_tick(H);
  }
  /* posted messages: created + at most the bound */
  size_t msgs = 0;
  for (size_t g = 0; g < NG; g++) msgs += G[g].nev ? 1 : 0;
  CU_ASSERT(msgs <= WATCH_LOOP_MAX_MSGS);
  CU_ASSERT(CNT[1][0] < (size_t)puts);
  atomic_store(&handled[0], 1u << 30); /* the loop caught up */
  for (int i = 0; i < 10000 && watch_hub_waiting(H); i++) watch_hub_catch_up(H), watch_hub_tick(H);
  put("k2", "last");
  for (int st = 1; st <= NS; st++) {
    CU_ASSERT(DISORDER[st][0] == 0);
    CU_ASSERT(CNT[st][0] == (size_t)puts + 1);
  }
  done();
}

/* The server-wide budget: 40 streams whose output nobody takes (posted to
 * the loop and never handled). Each would hold up to HIGH on its own; over
 * the budget a stream above LOW stalls and catch-up waits (one chunk per
 * trickle period), so what is outstanding stays under the budget plus a
 * per-stream slack. Once the loop takes everything, every watcher gets
 * every event, in order, once. */
enum { BS = 40, BW = 2, BPUTS = 600 };
static _Atomic int64_t B_UNSENT;
static msg_watch_out **B_HELD;
static size_t B_NHELD, B_CAPHELD;
static size_t B_CNT[BS + 1][BW];
static int64_t B_LAST[BS + 1][BW];
static size_t B_DIS[BS + 1][BW];

static void budget_take(msg_watch_out *m) {
  for (size_t off = 0; off + 4 <= m->len;) {
    uint32_t l;
    memcpy(&l, m->buf + off, 4);
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, l, m->buf + off + 4);
    CU_ASSERT_FATAL(r != NULL);
    int32_t st = m->call.stream_id;
    if (st >= 1 && st <= BS && r->watch_id >= 0 && r->watch_id < BW) {
      for (size_t i = 0; i < r->n_events; i++) {
        int64_t rev = r->events[i]->kv->mod_revision;
        if (rev <= B_LAST[st][r->watch_id]) B_DIS[st][r->watch_id]++;
        B_LAST[st][r->watch_id] = rev;
        B_CNT[st][r->watch_id]++;
      }
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
    off += 4 + l;
  }
  /* as watch_service_on_post, with a socket that takes everything at once */
  atomic_fetch_add(&m->fb->delivered, m->len);
  atomic_store(&m->fb->pending, 0);
  if (!m->len) atomic_fetch_add(&m->fb->probes_done, 1);
  atomic_fetch_sub(m->unsent, (int64_t)m->len);
  watch_out_free(m);
}

static bool B_TAKE;
static int budget_post(void *arg, msg_watch_out *m) {
  (void)arg;
  if (B_TAKE) {
    budget_take(m);
    return 0;
  }
  if (B_NHELD == B_CAPHELD) {
    B_CAPHELD = B_CAPHELD ? 2 * B_CAPHELD : 1024;
    B_HELD = realloc(B_HELD, B_CAPHELD * sizeof(*B_HELD));
    CU_ASSERT_FATAL(B_HELD != NULL);
  }
  B_HELD[B_NHELD++] = m;
  return 0;
}

static void test_budget(void) {
  fresh();
  watch_hub_free(H);
  const size_t budget = 4 * WATCH_STREAM_LOW_BYTES;
  atomic_store(&B_UNSENT, 0);
  watch_hub_env env = {.store = M, .max_request_bytes = 1 << 20, .post = budget_post,
                       .unsent = &B_UNSENT, .budget_bytes = budget};
  H = watch_hub_new(&env, mvcc_current_rev(M));
  B_TAKE = false, B_NHELD = 0;
  memset(B_CNT, 0, sizeof(B_CNT)), memset(B_LAST, 0, sizeof(B_LAST)), memset(B_DIS, 0, sizeof(B_DIS));
  for (int st = 1; st <= BS; st++)
    for (int w = 0; w < BW; w++) watch(st, "k", (wopt){.end = "l"});
  char v[1025];
  memset(v, 'x', sizeof(v) - 1);
  v[sizeof(v) - 1] = 0;
  int64_t peak = 0;
  for (int i = 0; i < BPUTS; i++) {
    char k[16];
    snprintf(k, sizeof(k), "k%d", i % 7);
    put(k, v);
    watch_hub_clock(H, (uint64_t)i * 10); /* a trickle chunk every 10 puts */
    watch_hub_catch_up(H);
    if (i % 10 == 0) watch_hub_tick(H);
    size_t out = 0;
    for (size_t j = 0; j < B_NHELD; j++) out += B_HELD[j]->len;
    CU_ASSERT(atomic_load(&B_UNSENT) == (int64_t)out); /* the hub holds nothing unposted */
    if ((int64_t)out > peak) peak = (int64_t)out;
  }
  /* a revision's output per stream: BW responses of ~1.1 KiB; a chunk
   * gives one stream at most about HIGH */
  const int64_t rev_out = BW * 1200;
  int64_t bound = (int64_t)budget + BS * (WATCH_STREAM_LOW_BYTES + rev_out) + WATCH_STREAM_HIGH_BYTES;
  CU_ASSERT(peak > (int64_t)budget);
  CU_ASSERT(peak <= bound);
  CU_ASSERT(peak < (int64_t)BS * WATCH_STREAM_HIGH_BYTES / 2); /* what per-stream bounds alone allow */
  watch_hub_stats hs;
  watch_hub_get_stats(H, &hs);
  CU_ASSERT(hs.budget_stalls > 0 && hs.budget_waits > 0);
  CU_ASSERT(hs.unsent_peak == peak);
  /* the loop takes everything, and from now on takes at once */
  B_TAKE = true;
  for (size_t j = 0; j < B_NHELD; j++) budget_take(B_HELD[j]);
  B_NHELD = 0;
  CU_ASSERT(atomic_load(&B_UNSENT) == 0);
  for (int i = 0; i < 100000 && watch_hub_waiting(H); i++) watch_hub_catch_up(H), watch_hub_tick(H);
  put("k1", "after");
  watch_hub_get_stats(H, &hs);
  CU_ASSERT(hs.unsynced == 0);
  size_t complete = 0, disorder = 0;
  for (int st = 1; st <= BS; st++)
    for (int w = 0; w < BW; w++) complete += B_CNT[st][w] == BPUTS + 1, disorder += B_DIS[st][w];
  CU_ASSERT(complete == BS * BW);
  CU_ASSERT(disorder == 0);
  CU_ASSERT(atomic_load(&B_UNSENT) == 0);
  done();
  free(B_HELD);
  B_HELD = NULL, B_CAPHELD = 0;
}

static void test_fragment(void) {
  fresh();
  watch_hub_free(H);
  watch_hub_env env = {.store = M, .max_request_bytes = 300, .post = post};
  H = watch_hub_new(&env, mvcc_current_rev(M));
  char v[101];
  memset(v, 'v', 100);
  v[100] = 0;
  char k[8];
  for (int i = 0; i < 7; i++) snprintf(k, sizeof(k), "a%d", i), put(k, v);
  /* caught up from history: the 7 events go in one response, or in pieces */
  watch(1, "a", (wopt){.end = "b", .fragment = true, .start = 2});
  watch(1, "a", (wopt){.end = "b", .start = 2});
  catch_up();
  size_t frags = 0, total = 0, whole = 0;
  for (size_t g = 0; g < NG; g++) {
    if (G[g].watch_id == 0 && G[g].nev) total += G[g].nev, frags++;
    if (G[g].watch_id == 0 && G[g].nev) {
      CU_ASSERT(G[g].fragment == (total < 7));
    }
    if (G[g].watch_id == 1 && G[g].nev) whole++;
  }
  CU_ASSERT(total == 7 && frags >= 3 && whole == 1);
  done();
}

int main(void) {
  rcu_register_thread();
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("watch", NULL, NULL);
  CU_add_test(s, "created, matching, filters, prev_kv", test_created_and_matching);
  CU_add_test(s, "duplicate id, empty range, cancel, progress", test_control);
  CU_add_test(s, "interval tree = brute force", test_interval_tree);
  CU_add_test(s, "catch-up from history in chunks", test_catch_up);
  CU_add_test(s, "catch-up header: the store's revision", test_catch_up_header);
  CU_add_test(s, "catch-up: many watchers of one key take turns", test_catch_up_many);
  CU_add_test(s, "progress: a ticker per stream", test_progress_per_stream);
  CU_add_test(s, "compacted start revision", test_compacted);
  CU_add_test(s, "omitted batch: catch-up", test_gap);
  CU_add_test(s, "filter: skipped events, fresh watchers from history", test_filter_fresh);
  CU_add_test(s, "slow stream: bounded, then complete", test_slow_stream);
  CU_add_test(s, "congested net loop: never waits, nothing lost", test_congested_loop);
  CU_add_test(s, "fragment", test_fragment);
  CU_add_test(s, "budget: bounded across streams, then complete", test_budget);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned fails = CU_get_number_of_failures();
  CU_cleanup_registry();
  rcu_unregister_thread();
  return fails ? 1 : 0;
}
