/*
 * lease_load.c -- an ad-hoc lease load generator (issue 5's measurements),
 * on the project's C client (cli/client). Not built by CMake (the build's
 * globs do not include it); build it by hand against a build directory:
 *
 *   B=/tmp/build-lease
 *   cc -O2 -I. -I$B/proto bench/lease_load.c $B/libcetcd_client.a \
 *      $B/libcetcd_proto.a -lprotobuf-c -lnghttp2 -lssl -lcrypto -o $B/lease-load
 *
 * Usage: lease-load ENDPOINT SERVER_PID LEASES CONNS STREAMS SECONDS [WINDOW]
 * Runs, against one server, one after the other:
 *   grant      LEASES leases (TTL 120 s) as pipelined unary calls (WINDOW
 *              in flight over CONNS connections): grants/s, server RSS
 *              before and after -> RSS per lease;
 *   keepalive  STREAMS LeaseKeepAlive streams spread over the connections,
 *              each owning LEASES/STREAMS leases, WINDOW/STREAMS keepalives
 *              in flight per stream, cycling through its leases, for
 *              SECONDS: round trips/s and server CPU ms per 1000 keepalives
 *              (utime + stime of SERVER_PID from /proc);
 *   paced      every lease kept alive once per TTL/3 of a 30 s TTL, i.e.
 *              LEASES/10 keepalives/s, for SECONDS: the server's CPU share
 *              in a steady registry;
 *   registry   a service registry on those leases: every lease gets a key
 *              /services/s<i % 100>/<i> (pipelined puts), 10 watchers on
 *              the /services/ prefix, then for SECONDS: the paced
 *              keepalives, 50 prefix gets/s (one service, ~LEASES/100 keys)
 *              and 100 re-registrations/s (puts with the lease, seen by
 *              every watcher): server CPU share, and what came back;
 *   revoke     all leases, pipelined like grant: revokes/s (deleting the
 *              registry's keys).
 * Prints one "name value unit" line per figure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/client/client.h"
#include "rpc.pb-c.h"

typedef struct ka_stream {
  cc_stream *st;
  int64_t *ids;
  size_t n, next;
  size_t inflight;
} ka_stream;

static cc_loop *L;
static cc_conn **C;
static int n_conns;
static int64_t *ids;
static size_t n_ids, want, started, done, failed, window;
static uint64_t answers;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  unsigned long ut = 0, st = 0;
  /* fields after ')': state(3) ... utime(14) stime(15) */
  if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kb(int pid) {
  char path[64], line[256];
  long kb = 0;
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  fclose(f);
  return kb;
}

/* --- grant / revoke: pipelined unary calls -------------------------------- */

static void start_next(int revoke);

static void on_grant(void *ud, const cc_reply *r) {
  (void)ud;
  done++;
  Etcdserverpb__LeaseGrantResponse *g = NULL;
  if (r->status == 0) g = etcdserverpb__lease_grant_response__unpack(NULL, r->len, r->data);
  if (g) ids[n_ids++] = g->id, etcdserverpb__lease_grant_response__free_unpacked(g, NULL);
  else failed++;
  start_next(0);
}

static void on_revoke(void *ud, const cc_reply *r) {
  (void)ud;
  done++;
  if (r->status != 0) failed++;
  start_next(1);
}

static void start_next(int revoke) {
  while (started < want && started - done < window) {
    cc_conn *c = C[started % (size_t)n_conns];
    if (revoke) {
      Etcdserverpb__LeaseRevokeRequest q = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
      q.id = ids[started];
      cc_unary(c, CC_PATH_LEASE_REVOKE, &q.base, on_revoke, NULL);
    } else {
      Etcdserverpb__LeaseGrantRequest q = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
      q.ttl = 120;
      cc_unary(c, CC_PATH_LEASE_GRANT, &q.base, on_grant, NULL);
    }
    started++;
  }
}

static double run_unary(size_t n, int revoke) {
  want = n, started = done = failed = 0;
  double t0 = now_s();
  start_next(revoke);
  while (done < want) cc_loop_run_once(L, 100);
  return now_s() - t0;
}

/* --- registry ----------------------------------------------------------------- */

static uint64_t gets_done, puts_done, watch_events;

static void put_key(cc_conn *c, size_t i, cc_unary_cb cb) {
  char key[48], val[64];
  int kn = snprintf(key, sizeof(key), "/services/s%02zu/%zu", i % 100, i);
  memset(val, 'v', sizeof(val));
  Etcdserverpb__PutRequest q = ETCDSERVERPB__PUT_REQUEST__INIT;
  q.key = (ProtobufCBinaryData){(size_t)kn, (uint8_t *)key};
  q.value = (ProtobufCBinaryData){sizeof(val), (uint8_t *)val};
  q.lease = ids[i];
  cc_unary(c, CC_PATH_PUT, &q.base, cb, NULL);
}

static void on_put(void *ud, const cc_reply *r) {
  (void)ud;
  if (r->status) failed++;
  puts_done++;
}

static void on_get(void *ud, const cc_reply *r) {
  (void)ud;
  if (r->status) failed++;
  gets_done++;
}

static void watch_msg(void *ud, const uint8_t *data, size_t len) {
  (void)ud;
  Etcdserverpb__WatchResponse *w = etcdserverpb__watch_response__unpack(NULL, len, data);
  if (w) watch_events += w->n_events, etcdserverpb__watch_response__free_unpacked(w, NULL);
}

static void watch_close(void *ud, const cc_reply *r) {
  (void)ud;
  if (r->status) fprintf(stderr, "watch closed: %d %s\n", r->status, r->message);
}

/* --- keepalive streams --------------------------------------------------------- */

static int paced;

static void ka_send(ka_stream *k) {
  Etcdserverpb__LeaseKeepAliveRequest q = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  q.id = k->ids[k->next++ % k->n];
  if (cc_stream_send(k->st, &q.base) == 0) k->inflight++;
}

static void ka_msg(void *ud, const uint8_t *data, size_t len) {
  ka_stream *k = ud;
  (void)data, (void)len;
  answers++;
  k->inflight--;
  if (!paced) ka_send(k);
}

static void ka_close(void *ud, const cc_reply *r) {
  ka_stream *k = ud;
  if (r->status) fprintf(stderr, "keepalive stream closed: %d %s\n", r->status, r->message);
  k->st = NULL;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s ENDPOINT SERVER_PID LEASES CONNS STREAMS SECONDS [WINDOW]\n", argv[0]);
    return 2;
  }
  const char *ep = argv[1];
  int pid = atoi(argv[2]);
  size_t n = (size_t)atol(argv[3]);
  n_conns = atoi(argv[4]);
  int n_streams = atoi(argv[5]);
  double secs = atof(argv[6]);
  window = argc > 7 ? (size_t)atol(argv[7]) : 1000;
  L = cc_loop_new();
  C = calloc((size_t)n_conns, sizeof(*C));
  for (int i = 0; i < n_conns; i++) C[i] = cc_conn_open(L, ep, NULL, 0);
  ids = calloc(n, sizeof(*ids));

  long rss0 = rss_kb(pid);
  double c0 = cpu_s(pid);
  double t = run_unary(n, 0);
  double c1 = cpu_s(pid);
  long rss1 = rss_kb(pid);
  printf("grant_per_s %.0f\ngrant_cpu_ms_per_1000 %.1f\ngrant_failed %zu\n", (double)n / t,
         (c1 - c0) * 1e6 / (double)n, failed);
  printf("rss_before_kb %ld\nrss_after_kb %ld\nrss_bytes_per_lease %.0f\n", rss0, rss1,
         (double)(rss1 - rss0) * 1024.0 / (double)n_ids);

  ka_stream *ks = calloc((size_t)n_streams, sizeof(*ks));
  size_t per = n_ids / (size_t)n_streams;
  for (int i = 0; i < n_streams; i++) {
    ks[i].ids = ids + (size_t)i * per;
    ks[i].n = per;
    ks[i].st = cc_stream_open(C[i % n_conns], CC_PATH_LEASE_KEEPALIVE, ka_msg, ka_close, &ks[i]);
  }
  size_t per_stream_window = window / (size_t)n_streams ? window / (size_t)n_streams : 1;
  for (int i = 0; i < n_streams; i++)
    for (size_t w = 0; w < per_stream_window; w++) ka_send(&ks[i]);
  double t0 = now_s();
  c0 = cpu_s(pid);
  answers = 0;
  while (now_s() - t0 < secs) cc_loop_run_once(L, 50);
  c1 = cpu_s(pid);
  double el = now_s() - t0;
  printf("keepalive_rt_per_s %.0f\nkeepalive_cpu_ms_per_1000 %.2f\nkeepalive_server_cpu_pct %.0f\n",
         (double)answers / el, (c1 - c0) * 1e6 / (double)answers, (c1 - c0) * 100 / el);

  /* paced: every lease once per 10 s (TTL 30 / 3) */
  paced = 1;
  while (1) { /* drain what is in flight */
    size_t in = 0;
    for (int i = 0; i < n_streams; i++) in += ks[i].inflight;
    if (!in) break;
    cc_loop_run_once(L, 50);
  }
  double rate = (double)n_ids / 10.0, sent = 0;
  answers = 0;
  t0 = now_s();
  c0 = cpu_s(pid);
  while ((el = now_s() - t0) < secs) {
    while (sent < rate * el) {
      ka_send(&ks[(size_t)sent % (size_t)n_streams]);
      sent++;
    }
    cc_loop_run_once(L, 5);
  }
  c1 = cpu_s(pid);
  printf("paced_keepalives_per_s %.0f\npaced_answered %llu\npaced_server_cpu_pct %.1f\n"
         "paced_cpu_ms_per_1000 %.2f\n", rate, (unsigned long long)answers, (c1 - c0) * 100 / el,
         (c1 - c0) * 1e6 / (double)(answers ? answers : 1));

  /* registry */
  failed = 0;
  for (size_t i = 0; i < n_ids; i++) {
    put_key(C[i % (size_t)n_conns], i, on_put);
    if (i % window == window - 1)
      while (puts_done < i + 1 - window / 2) cc_loop_run_once(L, 50);
  }
  while (puts_done < n_ids) cc_loop_run_once(L, 50);
  cc_stream *ws[10];
  for (int i = 0; i < 10; i++) {
    ws[i] = cc_stream_open(C[i % n_conns], CC_PATH_WATCH, watch_msg, watch_close, NULL);
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key = (ProtobufCBinaryData){10, (uint8_t *)"/services/"};
    cr.range_end = (ProtobufCBinaryData){10, (uint8_t *)"/services0"};
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    cc_stream_send(ws[i], &wr.base);
  }
  for (int k = 0; k < 20; k++) cc_loop_run_once(L, 10);
  answers = gets_done = puts_done = watch_events = 0;
  double ksent = 0, gsent = 0, psent = 0;
  t0 = now_s();
  c0 = cpu_s(pid);
  while ((el = now_s() - t0) < secs) {
    for (; ksent < rate * el; ksent++) ka_send(&ks[(size_t)ksent % (size_t)n_streams]);
    for (; gsent < 50 * el; gsent++) {
      char from[24], to[24];
      int n1 = snprintf(from, sizeof(from), "/services/s%02u/", (unsigned)gsent % 100);
      int n2 = snprintf(to, sizeof(to), "/services/s%02u0", (unsigned)gsent % 100);
      Etcdserverpb__RangeRequest q = ETCDSERVERPB__RANGE_REQUEST__INIT;
      q.key = (ProtobufCBinaryData){(size_t)n1, (uint8_t *)from};
      q.range_end = (ProtobufCBinaryData){(size_t)n2, (uint8_t *)to};
      cc_unary(C[(size_t)gsent % (size_t)n_conns], CC_PATH_RANGE, &q.base, on_get, NULL);
    }
    for (; psent < 100 * el; psent++)
      put_key(C[(size_t)psent % (size_t)n_conns], ((size_t)psent * 7919) % n_ids, on_put);
    cc_loop_run_once(L, 5);
  }
  c1 = cpu_s(pid);
  for (int k = 0; k < 50; k++) cc_loop_run_once(L, 10);
  printf("registry_server_cpu_pct %.1f\nregistry_keepalives_answered_per_s %.0f\n"
         "registry_prefix_gets_per_s %.0f\nregistry_puts_per_s %.0f\n"
         "registry_watch_events_per_s %.0f\nregistry_failed %zu\n",
         (c1 - c0) * 100 / el, (double)answers / el, (double)gets_done / el, (double)puts_done / el,
         (double)watch_events / el, failed);
  for (int i = 0; i < 10; i++) cc_stream_cancel(ws[i]);
  for (int i = 0; i < n_streams; i++)
    if (ks[i].st) cc_stream_close_send(ks[i].st);
  for (int k = 0; k < 20; k++) cc_loop_run_once(L, 10);
  failed = 0;

  c0 = cpu_s(pid);
  t = run_unary(n_ids, 1);
  c1 = cpu_s(pid);
  printf("revoke_per_s %.0f\nrevoke_cpu_ms_per_1000 %.1f\nrevoke_failed %zu\n", (double)n_ids / t,
         (c1 - c0) * 1e6 / (double)n_ids, failed);
  cc_loop_free(L);
  free(C), free(ids), free(ks);
  return 0;
}
