/*
 * wal_actor.c -- the WAL thread: group commit.
 *
 * Contract
 *   Thread:   one, "wal".
 *   Drains:   s->wal_mb: MSG_WAL_BATCH from the raft actor (in log order), MSG_STOP.
 *   Produces: MSG_WAL_DURABLE to s->raft_mb, one per sync, naming the highest
 *             (index, term) made durable.
 *   Batching: takes every batch waiting in the mailbox, appends all their
 *             records, then ONE wal_sync (one write + one fdatasync). While it
 *             syncs, the raft actor keeps building the next batch: that is
 *             where group commit comes from. Batches that need no sync (a
 *             commit-index-only hard state) stay buffered until the next one
 *             that does: no fsync, no notice. The raft actor pushes those
 *             quietly (no wake-up), so they usually arrive with that batch.
 *   Failure:  an I/O error is fatal (etcd exits too): the durable notice
 *             carries the error and the raft actor stops the server.
 *
 * server_load_wal runs before any actor starts: it replays the WAL into
 * s->boot (the raft core's restart state).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "actors/log.h"
#include "actors/server.h"

#define WAL_BATCHES_PER_SYNC 256

typedef struct replay_ctx {
  server *s;
  raft_entry *ents;
  size_t n, cap;
  bool have_hs, have_snap, have_meta;
  raft_hard_state hs;
  raft_snapshot_meta snap;
  uint64_t member_id, cluster_id;
  char *err;
  size_t err_len;
} replay_ctx;

static uint8_t *boot_data_copy(const uint8_t *data, uint32_t len) {
  msg_propose *p = malloc(sizeof(*p) + len);
  if (!p) return NULL;
  p->hdr.kind = MSG_PROPOSE;
  p->len = len;
  if (len) memcpy(p->data, data, len);
  return p->data;
}

static void replay_drop_from(replay_ctx *c, size_t from) {
  for (size_t i = from; i < c->n; i++) msg_propose_free_data(NULL, c->ents[i].data);
  c->n = from;
}

static int replay_entry(replay_ctx *c, uint64_t index, const uint8_t *buf, size_t len) {
  raft_entry e = {0};
  const uint8_t *data;
  if (rec_entry_decode(buf, len, &e.term, &e.type, &data, &e.len) < 0) {
    snprintf(c->err, c->err_len, "wal: malformed entry record at index %llu", (unsigned long long)index);
    return -1;
  }
  e.index = index;
  if (index <= c->snap.index) return 0; /* covered by the snapshot */
  uint64_t first = c->n ? c->ents[0].index : c->snap.index + 1;
  if (index < first) return 0;
  if (index > first + c->n) {
    snprintf(c->err, c->err_len, "wal: missing entries: expected index %llu, found %llu",
             (unsigned long long)(first + c->n), (unsigned long long)index);
    return -1;
  }
  replay_drop_from(c, (size_t)(index - first)); /* a rewritten suffix wins */
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    raft_entry *ne = realloc(c->ents, cap * sizeof(*ne));
    if (!ne) return -1;
    c->ents = ne;
    c->cap = cap;
  }
  e.data = boot_data_copy(data, e.len);
  if (!e.data) return -1;
  c->ents[c->n++] = e;
  return 0;
}

static int replay_record(void *arg, uint8_t type, uint64_t index, const uint8_t *data, size_t len) {
  replay_ctx *c = arg;
  switch (type) {
  case WAL_REC_ENTRY:
    return replay_entry(c, index, data, len);
  case WAL_REC_HARDSTATE:
    c->have_hs = rec_hard_state_decode(data, len, &c->hs) == 0;
    return c->have_hs ? 0 : -1;
  case WAL_REC_SNAPSHOT:
    if (rec_snapshot_decode(data, len, &c->snap) < 0) return -1;
    c->have_snap = true;
    if (c->n && c->ents[0].index <= c->snap.index) {
      size_t drop = (size_t)(c->snap.index - c->ents[0].index + 1);
      if (drop > c->n) drop = c->n;
      for (size_t i = 0; i < drop; i++) msg_propose_free_data(NULL, c->ents[i].data);
      memmove(c->ents, c->ents + drop, (c->n - drop) * sizeof(*c->ents));
      c->n -= drop;
    }
    return 0;
  case WAL_REC_META:
    c->have_meta = rec_meta_decode(data, len, &c->member_id, &c->cluster_id) == 0;
    return c->have_meta ? 0 : -1;
  default:
    snprintf(c->err, c->err_len, "wal: unknown record type %u", type);
    return -1;
  }
}

static void wal_warn(void *arg, const char *msg) {
  (void)arg;
  log_printf(LOG_LEVEL_WARNING, "wal", "%s", msg);
}

int server_load_wal(server *s, const char *wal_dir, char *err, size_t err_len) {
  replay_ctx c = {.s = s, .err = err, .err_len = err_len};
  err[0] = 0;
  wal_options wo = {.segment_bytes = 64u << 20, .warn = wal_warn};
  int rc = wal_open(wal_dir, &wo, replay_record, &c, &s->wal, err, err_len);
  if (rc < 0) {
    if (!err[0]) snprintf(err, err_len, "wal: cannot open %s: %s", wal_dir, strerror(-rc));
    replay_drop_from(&c, 0);
    free(c.ents);
    return rc;
  }
  memset(&s->boot, 0, sizeof(s->boot));
  if (!c.have_meta) {
    /* A new member: record who it is, durably, before anything else. */
    uint8_t meta[16];
    s->member_id = s->opt.member_id;
    s->cluster_id = s->opt.cluster_id;
    rec_meta_encode(meta, s->member_id, s->cluster_id);
    if (wal_append(s->wal, WAL_REC_META, 0, meta, sizeof(meta)) < 0 || wal_sync(s->wal) < 0) {
      snprintf(err, err_len, "wal: cannot write metadata in %s", wal_dir);
      return -EIO;
    }
    s->boot.fresh = true;
    s->boot.conf.n_voters = 1;
    s->boot.conf.voters[0] = s->member_id;
    free(c.ents);
    return 0;
  }
  s->member_id = c.member_id;
  s->cluster_id = c.cluster_id;
  s->boot.fresh = false;
  s->boot.snap = c.snap;
  s->boot.hs = c.hs;
  s->boot.entries = c.ents;
  s->boot.n_entries = c.n;
  s->wal_last_index = c.n ? c.ents[c.n - 1].index : c.snap.index;
  return 0;
}

static int wal_append_batch(wal *w, const msg_wal_batch *b) {
  size_t off = 0;
  while (off < b->len) {
    uint8_t type = b->buf[off];
    uint64_t index;
    uint32_t len;
    memcpy(&index, b->buf + off + 1, 8);
    memcpy(&len, b->buf + off + 9, 4);
    int rc = wal_append(w, type, index, b->buf + off + 13, len);
    if (rc < 0) return rc;
    off += 13 + (size_t)len;
  }
  return 0;
}

static void *wal_actor_main(void *arg) {
  server *s = arg;
  prctl(PR_SET_NAME, "wal");
  msg_wal_batch *batch[WAL_BATCHES_PER_SYNC];
  bool stop = false;
  while (!stop) {
    size_t n = 0;
    msg_hdr *m;
    while (n < WAL_BATCHES_PER_SYNC && (m = mailbox_pop(&s->wal_mb))) {
      if (m->kind == MSG_STOP) {
        free(m);
        stop = true;
        break;
      }
      batch[n++] = (msg_wal_batch *)m;
    }
    if (n == 0) {
      if (!stop) mailbox_wait(&s->wal_mb, -1);
      continue;
    }
    int rc = 0;
    bool sync = false;
    uint64_t idx = 0, term = 0, release = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
      rc = wal_append_batch(s->wal, batch[i]);
      sync |= batch[i]->sync;
      if (batch[i]->last_index) idx = batch[i]->last_index, term = batch[i]->last_term;
      if (batch[i]->release_before) release = batch[i]->release_before;
    }
    for (size_t i = 0; i < n; i++) free(batch[i]);
    if (rc == 0 && !sync) continue; /* buffered: goes out with the next sync */
    if (rc == 0) rc = wal_sync(s->wal);
    if (rc == 0 && release) (void)wal_release(s->wal, release);
    msg_wal_durable *d = malloc(sizeof(*d));
    if (!d) {
      server_fatal(s, "wal: out of memory", -ENOMEM);
      break;
    }
    d->hdr.kind = MSG_WAL_DURABLE;
    d->index = idx;
    d->term = term;
    d->err = rc;
    mailbox_push(&s->raft_ctl_mb, d);
    if (rc < 0) break;
  }
  return NULL;
}

int wal_actor_start(server *s) { return -pthread_create(&s->wal_th, NULL, wal_actor_main, s); }
