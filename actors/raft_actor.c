/*
 * raft_actor.c -- the thread that runs the Raft core.
 *
 * Contract
 *   Thread:   one, "raft". Owns the raft core outright.
 *   Drains:   s->raft_ctl_mb first (MSG_WAL_DURABLE, MSG_STORE_SYNCED), then s->raft_mb
 *             (MSG_PROPOSE, MSG_READ_INDEX), at most RAFT_DRAIN_MAX per turn.
 *   Produces: MSG_WAL_BATCH -> s->wal_mb (entries + hard state of each ready,
 *             in order), MSG_APPLY and MSG_READ_INDEX -> s->apply_mb (committed
 *             entries, then the read states of the same ready: so the apply
 *             actor sees a read only after every entry it depends on that is
 *             durable here), error replies -> the proposing net loop.
 *   Clock:    ticks every --heartbeat-interval ms; the election timeout is
 *             --election-timeout / --heartbeat-interval ticks.
 *   Batching: every proposal drained in one turn becomes part of one ready,
 *             so one WAL batch and (later) one apply batch.
 *   Full:     pushes to wal_mb / apply_mb wait; meanwhile proposals queue up
 *             in raft_mb and then in the net loops (which stop reading).
 *   Log:      the core keeps entries in memory; this actor compacts them
 *             below the applied index, and releases WAL segments below the
 *             index the apply actor last made durable in LevelDB.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "actors/log.h"
#include "actors/server.h"
#include "msg/errors.h"

#define RAFT_DRAIN_MAX 16384
/* Keep this many applied entries in memory beyond the compaction point, so a
 * briefly lagging follower can still be served from the log. */
#define RAFT_LOG_KEEP 10000

typedef struct raft_actor {
  server *s;
  raft *r;
  uint64_t next_tick_ms;
  uint64_t compacted;       /* raft_compact'ed up to here */
  uint64_t wal_released;    /* snapshot marker written up to here */
  raft_snapshot_meta synced; /* LevelDB durable up to synced.index (apply said) */
  raft_hard_state last_hs;  /* last hard state handed to the WAL */
} raft_actor;

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void msg_propose_free_data(void *ctx, uint8_t *data) {
  (void)ctx;
  if (data) free((uint8_t *)data - offsetof(msg_propose, data));
}

static int rc_to_err(int rc) {
  switch (rc) {
  case RAFT_ERR_NO_LEADER:
  case RAFT_ERR_NOT_LEADER:
    return -CETCD_E_NO_LEADER;
  case RAFT_ERR_TRANSFER_IN_PROGRESS:
    return -CETCD_E_LEADER_CHANGED;
  case RAFT_ERR_TOO_MANY_UNCOMMITTED:
    return -CETCD_E_TOO_MANY_REQUESTS;
  case RAFT_ERR_NOMEM:
    return -CETCD_E_NOMEM;
  default:
    return -CETCD_E_STOPPED;
  }
}

static void reply_error(server *s, net_call call, int err) {
  msg_replies *m = malloc(sizeof(*m) + sizeof(reply));
  if (!m) return;
  m->hdr.kind = MSG_REPLIES;
  m->n = 1;
  m->r[0] = (reply){.call = call, .err = err};
  server_post_replies(s, call.loop, m);
}

static void on_propose(raft_actor *a, msg_propose *p) {
  int rc = raft_propose(a->r, p->data, p->len);
  if (rc == RAFT_OK) return; /* the core owns the block now */
  reply_error(a->s, p->call, rc_to_err(rc));
  free(p);
}

static void on_read_index(raft_actor *a, msg_read_index *m) {
  int rc = raft_read_index(a->r, (uint64_t)(uintptr_t)m);
  if (rc == RAFT_OK) return; /* comes back as a read state */
  m->err = rc_to_err(rc);
  if (net_post(a->s->net, m->loop, m) < 0) free(m);
}

static void on_durable(raft_actor *a, msg_wal_durable *d) {
  if (d->err < 0) {
    server_fatal(a->s, "wal: write failed", d->err);
  } else if (d->index) {
    raft_persisted(a->r, d->index, d->term);
  }
  free(d);
}

static void on_ctl(raft_actor *a, msg_hdr *m) {
  if (m->kind == MSG_WAL_DURABLE) {
    on_durable(a, (msg_wal_durable *)m);
    return;
  }
  if (m->kind == MSG_STORE_SYNCED) {
    msg_store_synced *ss = (msg_store_synced *)m;
    if (ss->index > a->synced.index) {
      raft_status st;
      raft_status_get(a->r, &st);
      a->synced = (raft_snapshot_meta){.index = ss->index, .term = ss->term, .conf = st.conf};
    }
  }
  free(m);
}

static size_t drain(raft_actor *a) {
  server *s = a->s;
  size_t n = 0;
  msg_hdr *m;
  while ((m = mailbox_pop(&s->raft_ctl_mb))) on_ctl(a, m), n++;
  while (n < RAFT_DRAIN_MAX && (m = mailbox_pop(&s->raft_mb))) {
    n++;
    switch (m->kind) {
    case MSG_PROPOSE:
      on_propose(a, (msg_propose *)m);
      break;
    case MSG_READ_INDEX:
      on_read_index(a, (msg_read_index *)m);
      break;
    default:
      free(m);
      break;
    }
  }
  return n;
}

/* Appends one staged record to a WAL batch buffer (see msg_wal_batch). */
static uint8_t *stage_rec(uint8_t *p, uint8_t type, uint64_t index, uint32_t len) {
  p[0] = type;
  memcpy(p + 1, &index, 8);
  memcpy(p + 9, &len, 4);
  return p + 13;
}

/* A snapshot marker + release request, when the store has been synced far
 * enough past the last one: lets the WAL drop old segments. */
static size_t marker_size(raft_actor *a) {
  if (a->synced.index <= a->wal_released) return 0;
  return 13 + 20 + 8 * RAFT_MAX_MEMBERS + 13 + 16;
}

static void send_wal_batch(raft_actor *a, const raft_ready *rd) {
  size_t need = 0;
  for (size_t i = 0; i < rd->n_entries; i++) need += 13 + rec_entry_size(rd->entries[i].len);
  if (rd->hard_state_changed) need += 13 + 24;
  size_t marker = marker_size(a);
  need += marker;
  if (need == 0) return;
  msg_wal_batch *b = malloc(sizeof(*b) + need);
  if (!b) {
    server_fatal(a->s, "raft: out of memory", -ENOMEM);
    return;
  }
  b->hdr.kind = MSG_WAL_BATCH;
  b->last_index = b->last_term = b->release_before = 0;
  b->sync = rd->n_entries > 0 || marker > 0 ||
            (rd->hard_state_changed &&
             (rd->hard_state.term != a->last_hs.term || rd->hard_state.vote != a->last_hs.vote));
  if (rd->hard_state_changed) a->last_hs = rd->hard_state;
  uint8_t *p = b->buf;
  for (size_t i = 0; i < rd->n_entries; i++) {
    const raft_entry *e = &rd->entries[i];
    p = stage_rec(p, WAL_REC_ENTRY, e->index, (uint32_t)rec_entry_size(e->len));
    rec_entry_encode(p, e->term, e->type, e->data, e->len);
    p += rec_entry_size(e->len);
    b->last_index = e->index;
    b->last_term = e->term;
  }
  if (rd->hard_state_changed) {
    p = stage_rec(p, WAL_REC_HARDSTATE, 0, 24);
    rec_hard_state_encode(p, &rd->hard_state);
    p += 24;
  }
  if (marker) {
    /* The store holds everything up to synced.index durably: after this
     * batch is synced, replay can start there and older segments can go. */
    uint8_t *rec = p + 13;
    size_t len = rec_snapshot_encode(rec, 20 + 8 * RAFT_MAX_MEMBERS, &a->synced);
    stage_rec(p, WAL_REC_SNAPSHOT, a->synced.index, (uint32_t)len);
    p = rec + len;
    /* The segment with the member's identity may be released: repeat it. */
    p = stage_rec(p, WAL_REC_META, 0, 16);
    rec_meta_encode(p, a->s->member_id, a->s->cluster_id);
    p += 16;
    b->release_before = a->synced.index;
    a->wal_released = a->synced.index;
  }
  b->len = (size_t)(p - b->buf);
  /* A batch without a sync (the commit index moved: every put's second
   * ready) waits in the ring for the next one that syncs; waking the WAL
   * thread for it cost a context switch per put, right before the
   * committed entries go to apply. */
  if (b->sync) mailbox_push(&a->s->wal_mb, b);
  else mailbox_push_quiet(&a->s->wal_mb, b);
}

static void send_committed(raft_actor *a, const raft_ready *rd) {
  if (rd->n_committed == 0) return;
  msg_apply *m = malloc(sizeof(*m) + rd->n_committed * sizeof(apply_entry));
  if (!m) {
    server_fatal(a->s, "raft: out of memory", -ENOMEM);
    return;
  }
  m->hdr.kind = MSG_APPLY;
  m->n = rd->n_committed;
  for (size_t i = 0; i < rd->n_committed; i++) {
    const raft_entry *e = &rd->committed_entries[i];
    m->ents[i] = (apply_entry){e->index, e->term, e->type, e->len, e->data};
  }
  mailbox_push(&a->s->apply_mb, m);
}

static void handle_ready(raft_actor *a) {
  server *s = a->s;
  while (raft_has_ready(a->r)) {
    raft_ready rd;
    raft_ready_get(a->r, &rd);
    send_wal_batch(a, &rd);
    /* Peer messages: the peer transport comes with the cluster issue; a
     * single-member group produces none. */
    send_committed(a, &rd);
    for (size_t i = 0; i < rd.n_read_states; i++) {
      msg_read_index *m = (msg_read_index *)(uintptr_t)rd.read_states[i].ctx;
      m->read_index = rd.read_states[i].index;
      mailbox_push(&s->apply_mb, m);
    }
    if (rd.hard_state_changed) {
      atomic_store(&s->term, rd.hard_state.term);
      atomic_store(&s->commit_index, rd.hard_state.commit);
    }
    if (rd.soft_state_changed) {
      uint64_t old = atomic_exchange(&s->leader, rd.lead);
      if (old != rd.lead && rd.lead != RAFT_NONE)
        log_raft_printf(LOG_LEVEL_INFO, "raft.node: %llx elected leader %llx at term %llu",
                        (unsigned long long)s->member_id, (unsigned long long)rd.lead,
                        (unsigned long long)atomic_load(&s->term));
    }
    raft_ready_advance(a->r, &rd);
  }
}

static void maybe_compact(raft_actor *a) {
  uint64_t applied = atomic_load(&a->s->applied_index);
  if (applied < a->compacted + 2 * RAFT_LOG_KEEP) return;
  uint64_t at = applied - RAFT_LOG_KEEP;
  if (raft_compact(a->r, at, NULL, 0) == RAFT_OK) a->compacted = at;
}

static void sleep_until(raft_actor *a, uint64_t now) {
  server *s = a->s;
  int timeout = a->next_tick_ms > now ? (int)(a->next_tick_ms - now) : 0;
  if (!mailbox_prepare_sleep(&s->raft_mb)) return;
  if (!mailbox_prepare_sleep(&s->raft_ctl_mb)) {
    mailbox_wake_done(&s->raft_mb, false); /* a kick already sent stays pending: next poll */
    return;
  }
  struct pollfd p[2] = {{.fd = mailbox_fd(&s->raft_mb), .events = POLLIN},
                        {.fd = mailbox_fd(&s->raft_ctl_mb), .events = POLLIN}};
  int n = poll(p, 2, timeout);
  mailbox_wake_done(&s->raft_mb, n > 0 && (p[0].revents & POLLIN));
  mailbox_wake_done(&s->raft_ctl_mb, n > 0 && (p[1].revents & POLLIN));
}

static void *raft_actor_main(void *arg) {
  raft_actor *a = arg;
  server *s = a->s;
  prctl(PR_SET_NAME, "raft"); /* for top -H, perf sched */
  uint32_t hb = s->opt.heartbeat_ms ? s->opt.heartbeat_ms : 100;
  a->next_tick_ms = mono_ms() + hb;
  raft_status st;
  raft_status_get(a->r, &st);
  if (st.conf.n_voters == 1 && st.conf.voters[0] == s->member_id) raft_campaign(a->r);
  while (!atomic_load(&s->stopping)) {
    uint64_t now = mono_ms();
    while (now >= a->next_tick_ms) {
      raft_tick(a->r);
      a->next_tick_ms += hb;
    }
    size_t n = drain(a);
    handle_ready(a);
    maybe_compact(a);
    if (n == 0) sleep_until(a, mono_ms());
  }
  raft_free(a->r);
  free(a);
  return NULL;
}

int raft_actor_start(server *s) {
  raft_actor *a = calloc(1, sizeof(*a));
  if (!a) return -ENOMEM;
  a->s = s;
  raft_config cfg;
  raft_config_default(&cfg, s->member_id, s->boot_nonce);
  uint32_t hb = s->opt.heartbeat_ms ? s->opt.heartbeat_ms : 100;
  uint32_t el = s->opt.election_ms ? s->opt.election_ms : 1000;
  cfg.heartbeat_tick = 1;
  cfg.election_tick = (int)(el / hb);
  if (cfg.election_tick < 2) cfg.election_tick = 2;
  cfg.applied = mvcc_consistent_index(s->store);
  cfg.free_data = msg_propose_free_data;
  cfg.max_committed_bytes_per_ready = 64u << 20;
  a->compacted = s->boot.snap.index;
  a->wal_released = s->boot.snap.index;
  a->last_hs = s->boot.hs;
  int rc = raft_new(&cfg, &s->boot, &a->r);
  free(s->boot.entries); /* the structs were copied; the data now belongs to the core */
  s->boot.entries = NULL;
  if (rc != RAFT_OK) {
    log_printf(LOG_LEVEL_ERROR, "raft", "cannot start raft: %s", raft_rc_str(rc));
    free(a);
    return -EINVAL;
  }
  return -pthread_create(&s->raft_th, NULL, raft_actor_main, a);
}
