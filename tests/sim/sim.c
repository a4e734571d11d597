/* sim.c — deterministic cluster simulator for the Raft core.
 *
 * One seed fixes everything: cluster size (1, 3 or 5), network behaviour
 * (drop, duplicate, delay/reorder, symmetric and one-way partitions), tick
 * drift per member, fsync latency, crash/restart times, client proposals,
 * reads, membership changes, leadership transfers and compactions. Every
 * message goes through the wire codec. Storage is asynchronous like the
 * server's: a ready's entries/hard state/snapshot become durable only when
 * the simulated fsync completes; a crash loses everything not durable yet,
 * and a restart boots from the "disk" alone.
 *
 * After every simulated time unit the safety properties are checked:
 * one leader per term, commit index monotonic, state-machine safety (same
 * entry and same state hash at every applied index on every member), leader
 * completeness (a new leader holds every entry known committed), log
 * matching (periodically, by terms), and ReadIndex linearizability (a read
 * index covers every write acknowledged before the read was issued).
 * Liveness: the last phase heals the network and restarts everyone; a leader
 * must emerge and fresh proposals must be applied on all members of the
 * configuration within a bound.
 *
 *   raft-sim --seeds N [--from S]   run seeds S..S+N-1 (default 3000 from 1)
 *   raft-sim --seed S [-v]          replay one seed, -v traces events
 */
#include "raft/raft.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXM 8          /* member ids 1..7 */
#define MAXNET 4096

static int verbose;
static char fail_msg[512];
static int failed;

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnd(rng *g)
{
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rndn(rng *g, uint64_t n)
{
    return n ? rnd(g) % n : 0;
}

static int chance(rng *g, int per_mille)
{
    return (int)rndn(g, 1000) < per_mille;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h * 0xff51afd7ed558ccdull;
}

/* ---- storage model ------------------------------------------------------- */

typedef struct ent {
    uint64_t term, index;
    uint8_t type;
    uint32_t len;
    uint8_t *data;
} ent;

typedef struct elist {
    ent *v;
    size_t n, cap;
} elist;

static void el_push(elist *l, const raft_entry *e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = realloc(l->v, l->cap * sizeof(ent));
    }
    ent *x = &l->v[l->n++];
    x->term = e->term;
    x->index = e->index;
    x->type = e->type;
    x->len = e->len;
    x->data = NULL;
    if (e->len) {
        x->data = malloc(e->len);
        memcpy(x->data, e->data, e->len);
    }
}

static void el_truncate(elist *l, size_t n)
{
    while (l->n > n)
        free(l->v[--l->n].data);
}

static void el_free(elist *l)
{
    el_truncate(l, 0);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

typedef struct sm_state {
    uint64_t applied, hash;
} sm_state;

/* Snapshot image: the state machine state plus deterministic filler so that
 * images span several chunks. */
static uint8_t *snap_image(sm_state s, size_t *len)
{
    size_t n = 16 + (size_t)(s.hash % 3000);
    uint8_t *b = malloc(n);
    memcpy(b, &s.applied, 8);
    memcpy(b + 8, &s.hash, 8);
    for (size_t i = 16; i < n; i++)
        b[i] = (uint8_t)(s.hash >> (i % 8));
    *len = n;
    return b;
}

typedef struct disk {
    raft_hard_state hs;
    raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;
    elist log; /* entries snap.index+1 .. */
    sm_state sm_durable; /* the state machine's own durable state (if modelled) */
} disk;

typedef struct batch {
    uint64_t done_at;
    elist ents;
    bool has_hs;
    raft_hard_state hs;
    bool has_snap;
    raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;
    uint8_t **after;   /* encoded msgs_after_persist */
    size_t *after_len;
    size_t n_after;
    struct batch *next;
} batch;

typedef struct pending_read {
    uint64_t ctx, w;
    struct pending_read *next;
} pending_read;

typedef struct member {
    uint64_t id;
    bool exists, up, removed;
    raft *r;
    disk d;
    batch *wal_head, *wal_tail;
    uint64_t wal_last_done;
    sm_state sm;
    raft_conf_state conf;   /* as applied */
    int tick_period, next_tick;
    uint64_t down_until;
    uint64_t last_commit;
    uint8_t last_role;
    pending_read *reads;
} member;

typedef struct netmsg {
    uint64_t at, from, to;
    uint8_t *buf;
    size_t len;
} netmsg;

typedef struct sim {
    uint64_t seed;
    rng g;
    uint64_t now;
    int n_init;
    member m[MAXM];
    netmsg net[MAXNET];
    size_t n_net;
    bool blocked[MAXM][MAXM];
    int p_drop, p_dup, max_delay, p_crash;
    int fsync_min, fsync_max;
    bool sm_durable;
    bool pre_vote, check_quorum;
    size_t max_msg_bytes;
    /* global knowledge for the checks */
    uint64_t *leader_of; size_t leader_cap;
    uint64_t *ent_hash, *ent_term, *state_hash; size_t ent_cap;
    uint64_t max_applied;
    uint64_t next_prop, next_ctx;
    int step_n;
    bool calm;
    uint64_t reads_ok;
    uint64_t applied_total;
} sim;

static void trace(sim *s, const char *fmt, ...)
{
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("[t=%6" PRIu64 "] ", s->now);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void fail(sim *s, const char *fmt, ...)
{
    if (failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(fail_msg, sizeof(fail_msg), "t=%" PRIu64 ": ", s->now);
    vsnprintf(fail_msg + k, sizeof(fail_msg) - (size_t)k, fmt, ap);
    va_end(ap);
    failed = 1;
}

static void grow_u64(uint64_t **a, size_t *cap, size_t need, size_t n_arrays, uint64_t **b,
                     uint64_t **c)
{
    if (need < *cap)
        return;
    size_t nc = *cap ? *cap : 256;
    while (nc <= need)
        nc *= 2;
    uint64_t **arrs[3] = { a, b, c };
    for (size_t k = 0; k < n_arrays; k++) {
        *arrs[k] = realloc(*arrs[k], nc * sizeof(uint64_t));
        memset(*arrs[k] + *cap, 0, (nc - *cap) * sizeof(uint64_t));
    }
    *cap = nc;
}

/* ---- network ------------------------------------------------------------- */

static void net_send(sim *s, const raft_msg *msg)
{
    if (msg->to == 0 || msg->to >= MAXM)
        return;
    if (!s->calm && chance(&s->g, s->p_drop))
        return;
    int copies = (!s->calm && chance(&s->g, s->p_dup)) ? 2 : 1;
    size_t len = raft_msg_encoded_size(msg);
    for (int c = 0; c < copies && s->n_net < MAXNET; c++) {
        netmsg *n = &s->net[s->n_net++];
        n->buf = malloc(len);
        size_t w = 0;
        if (raft_msg_encode(msg, n->buf, len, &w) != RAFT_OK || w != len) {
            fail(s, "encode failed");
            return;
        }
        n->len = len;
        n->from = msg->from;
        n->to = msg->to;
        n->at = s->now + 1 + rndn(&s->g, (uint64_t)s->max_delay);
    }
}

static void deliver(sim *s, netmsg *n)
{
    member *m = &s->m[n->to];
    if (!m->up || s->blocked[n->from][n->to])
        return;
    raft_msg msg;
    size_t need = 0;
    raft_entry stackbuf[8];
    raft_entry *ents = stackbuf;
    int rc = raft_msg_decode(n->buf, n->len, &msg, ents, 8, &need);
    if (rc == RAFT_ERR_NOMEM) {
        ents = malloc(need * sizeof(*ents));
        rc = raft_msg_decode(n->buf, n->len, &msg, ents, need, &need);
    }
    if (rc != RAFT_OK)
        fail(s, "decode of an encoded message failed: %s", raft_rc_str(rc));
    else if ((rc = raft_step(m->r, &msg)) != RAFT_OK)
        fail(s, "step on %" PRIu64 " failed: %s", n->to, raft_rc_str(rc));
    if (ents != stackbuf)
        free(ents);
}

static void net_run(sim *s)
{
    /* deliver due messages in a seeded random order (reordering) */
    for (;;) {
        size_t due[MAXNET], nd = 0;
        for (size_t i = 0; i < s->n_net; i++)
            if (s->net[i].at <= s->now)
                due[nd++] = i;
        if (!nd)
            return;
        size_t pick = due[rndn(&s->g, nd)];
        netmsg n = s->net[pick];
        s->net[pick] = s->net[--s->n_net];
        deliver(s, &n);
        free(n.buf);
        if (failed)
            return;
    }
}

/* ---- members ------------------------------------------------------------- */

static void member_start(sim *s, member *m, bool fresh)
{
    raft_config cfg;
    raft_config_default(&cfg, m->id, s->seed * 131 + m->id + s->now);
    cfg.max_msg_bytes = s->max_msg_bytes;
    cfg.max_inflight_msgs = 1 + rndn(&s->g, 8);
    cfg.max_inflight_bytes = chance(&s->g, 500) ? 4096 : 0;
    cfg.pre_vote = s->pre_vote;
    cfg.check_quorum = s->check_quorum;
    raft_boot b;
    memset(&b, 0, sizeof(b));
    if (fresh) {
        b.fresh = true;
        for (int i = 1; i <= s->n_init; i++)
            b.conf.voters[b.conf.n_voters++] = (uint64_t)i;
        m->sm = (sm_state){ 0, 0 };
    } else {
        disk *d = &m->d;
        b.snap = d->snap;
        b.hs = d->hs;
        if (d->snap_len) {
            b.snap_data = malloc(d->snap_len);
            memcpy(b.snap_data, d->snap_data, d->snap_len);
            b.snap_len = d->snap_len;
        }
        b.n_entries = d->log.n;
        b.entries = calloc(d->log.n + 1, sizeof(raft_entry));
        for (size_t i = 0; i < d->log.n; i++) {
            ent *e = &d->log.v[i];
            raft_entry *x = &b.entries[i];
            x->term = e->term;
            x->index = e->index;
            x->type = e->type;
            x->len = e->len;
            if (e->len) {
                x->data = malloc(e->len);
                memcpy(x->data, e->data, e->len);
            }
        }
        /* the state machine: its own durable state, or the snapshot's */
        m->sm.applied = d->snap.index;
        m->sm.hash = 0;
        if (d->snap_data)
            memcpy(&m->sm.hash, d->snap_data + 8, 8);
        if (s->sm_durable && d->sm_durable.applied > m->sm.applied)
            m->sm = d->sm_durable;
        cfg.applied = m->sm.applied;
        m->conf = d->snap.conf;
    }
    int rc = raft_new(&cfg, &b, &m->r);
    free(b.entries);
    if (rc != RAFT_OK) {
        fail(s, "raft_new(%" PRIu64 ") failed: %s", m->id, raft_rc_str(rc));
        return;
    }
    raft_status st;
    raft_status_get(m->r, &st);
    m->conf = st.conf;
    m->up = true;
    m->exists = true;
    m->last_commit = st.commit;
    m->last_role = st.role;
    m->next_tick = (int)(s->now + 1 + rndn(&s->g, 10));
    trace(s, "start %" PRIu64 " %s term=%" PRIu64 " commit=%" PRIu64 " applied=%" PRIu64,
          m->id, fresh ? "fresh" : "restart", st.term, st.commit, st.applied);
}

static void batch_free(batch *b)
{
    el_free(&b->ents);
    free(b->snap_data);
    for (size_t i = 0; i < b->n_after; i++)
        free(b->after[i]);
    free(b->after);
    free(b->after_len);
    free(b);
}

static void member_crash(sim *s, member *m)
{
    trace(s, "crash %" PRIu64, m->id);
    raft_free(m->r);
    m->r = NULL;
    m->up = false;
    while (m->wal_head) {
        batch *b = m->wal_head;
        m->wal_head = b->next;
        batch_free(b);
    }
    m->wal_tail = NULL;
    while (m->reads) {
        pending_read *p = m->reads;
        m->reads = p->next;
        free(p);
    }
}

/* The fsync of batch b completed: make it durable, then ack and send. */
static void wal_complete(sim *s, member *m, batch *b)
{
    disk *d = &m->d;
    if (b->has_snap) {
        free(d->snap_data);
        d->snap = b->snap;
        d->snap_data = b->snap_data;
        d->snap_len = b->snap_len;
        b->snap_data = NULL;
        el_truncate(&d->log, 0);
        /* only now may the state machine's own durable state reflect it */
        if (s->sm_durable && d->snap_len >= 16 && d->snap.index > d->sm_durable.applied) {
            memcpy(&d->sm_durable.applied, d->snap_data, 8);
            memcpy(&d->sm_durable.hash, d->snap_data + 8, 8);
        }
    }
    if (b->ents.n) {
        uint64_t first = b->ents.v[0].index;
        if (first <= d->snap.index) {
            fail(s, "member %" PRIu64 " persisting index %" PRIu64 " at/below its snapshot",
                 m->id, first);
            return;
        }
        size_t keep = (size_t)(first - d->snap.index - 1);
        if (keep > d->log.n) {
            fail(s, "member %" PRIu64 ": gap in the log on disk", m->id);
            return;
        }
        el_truncate(&d->log, keep);
        for (size_t i = 0; i < b->ents.n; i++) {
            ent *e = &b->ents.v[i];
            raft_entry x = { e->term, e->index, e->type, e->len, e->data, NULL };
            el_push(&d->log, &x);
        }
    }
    if (b->has_hs)
        d->hs = b->hs;
    if (b->ents.n) {
        ent *l = &b->ents.v[b->ents.n - 1];
        raft_persisted(m->r, l->index, l->term);
    } else if (b->has_snap) {
        raft_persisted(m->r, b->snap.index, b->snap.term);
    }
    for (size_t i = 0; i < b->n_after; i++) {
        raft_msg msg;
        raft_entry eb[4];
        size_t need;
        if (raft_msg_decode(b->after[i], b->after_len[i], &msg, eb, 4, &need) == RAFT_OK)
            net_send(s, &msg);
    }
}

static void wal_run(sim *s, member *m)
{
    while (m->up && m->wal_head && m->wal_head->done_at <= s->now) {
        batch *b = m->wal_head;
        m->wal_head = b->next;
        if (!m->wal_head)
            m->wal_tail = NULL;
        wal_complete(s, m, b);
        batch_free(b);
    }
}

static void check_read(sim *s, member *m, const raft_read_state *rs)
{
    pending_read **pp = &m->reads;
    while (*pp && (*pp)->ctx != rs->ctx)
        pp = &(*pp)->next;
    if (!*pp)
        return; /* a duplicated request answered twice, or from before a crash */
    pending_read *p = *pp;
    if (rs->index < p->w)
        fail(s, "linearizability: read ctx %" PRIu64 " on %" PRIu64 " got index %" PRIu64
                " but write %" PRIu64 " was acknowledged before it began",
             rs->ctx, m->id, rs->index, p->w);
    *pp = p->next;
    free(p);
    s->reads_ok++;
}

static void apply_entry(sim *s, member *m, const raft_entry *e)
{
    if (e->index != m->sm.applied + 1) {
        fail(s, "member %" PRIu64 " applies index %" PRIu64 " after %" PRIu64, m->id, e->index,
             m->sm.applied);
        return;
    }
    uint64_t h = mix(mix(e->term, e->type), e->len);
    for (uint32_t i = 0; i < e->len; i++)
        h = mix(h, e->data[i]);
    /* the state hash covers client data only, so it is well defined no
     * matter in which term an entry was committed */
    uint64_t st = e->type == RAFT_ENTRY_NORMAL && e->len ? mix(m->sm.hash, h ^ e->index) : m->sm.hash;
    grow_u64(&s->ent_hash, &s->ent_cap, e->index, 3, &s->ent_term, &s->state_hash);
    if (s->ent_hash[e->index] == 0) {
        s->ent_hash[e->index] = h | 1;
        s->ent_term[e->index] = e->term;
        s->state_hash[e->index] = st | 1;
    } else if (s->ent_hash[e->index] != (h | 1) || s->state_hash[e->index] != (st | 1)) {
        fail(s, "state machine safety: member %" PRIu64 " applied a different entry at %" PRIu64,
             m->id, e->index);
        return;
    }
    m->sm.applied = e->index;
    m->sm.hash = st;
    if (e->index > s->max_applied)
        s->max_applied = e->index;
    s->applied_total++;
    if (s->sm_durable)
        m->d.sm_durable = m->sm;
}

static void handle_ready(sim *s, member *m)
{
    raft_ready rd;
    raft_ready_get(m->r, &rd);
    batch *b = calloc(1, sizeof(*b));
    if (rd.snapshot) {
        b->has_snap = true;
        trace(s, "member %" PRIu64 " installs snapshot %" PRIu64 " (sm at %" PRIu64 ")", m->id,
              rd.snapshot->meta.index, m->sm.applied);
        b->snap = rd.snapshot->meta;
        b->snap_len = rd.snapshot->len;
        b->snap_data = malloc(rd.snapshot->len + 1);
        memcpy(b->snap_data, rd.snapshot->data, rd.snapshot->len);
        /* install into the state machine */
        if (rd.snapshot->len >= 16) {
            memcpy(&m->sm.applied, rd.snapshot->data, 8);
            memcpy(&m->sm.hash, rd.snapshot->data + 8, 8);
        }
        if (m->sm.applied != rd.snapshot->meta.index)
            fail(s, "snapshot image/meta mismatch on %" PRIu64, m->id);
        if (s->state_hash && m->sm.applied < s->ent_cap && s->state_hash[m->sm.applied] &&
            s->state_hash[m->sm.applied] != (m->sm.hash | 1))
            fail(s, "snapshot state differs at %" PRIu64, m->sm.applied);
    }
    for (size_t i = 0; i < rd.n_entries; i++)
        el_push(&b->ents, &rd.entries[i]);
    b->has_hs = rd.hard_state_changed;
    b->hs = rd.hard_state;
    for (size_t i = 0; i < rd.n_msgs; i++)
        net_send(s, &rd.msgs[i]);
    if (rd.n_msgs_after_persist) {
        b->after = malloc(rd.n_msgs_after_persist * sizeof(*b->after));
        b->after_len = malloc(rd.n_msgs_after_persist * sizeof(size_t));
        for (size_t i = 0; i < rd.n_msgs_after_persist; i++) {
            size_t len = raft_msg_encoded_size(&rd.msgs_after_persist[i]);
            b->after[i] = malloc(len);
            raft_msg_encode(&rd.msgs_after_persist[i], b->after[i], len, &b->after_len[i]);
        }
        b->n_after = rd.n_msgs_after_persist;
    }
    if (rd.n_committed)
        trace(s, "member %" PRIu64 " applies %" PRIu64 "..%" PRIu64, m->id,
              rd.committed_entries[0].index, rd.committed_entries[rd.n_committed - 1].index);
    for (size_t i = 0; i < rd.n_committed && !failed; i++)
        apply_entry(s, m, &rd.committed_entries[i]);
    for (size_t i = 0; i < rd.n_read_states; i++)
        check_read(s, m, &rd.read_states[i]);
    if (rd.conf_changed)
        m->conf = rd.conf;
    for (size_t i = 0; i < rd.n_committed; i++) {
        const raft_entry *e = &rd.committed_entries[i];
        raft_conf_change cc;
        if (e->type == RAFT_ENTRY_CONF_CHANGE &&
            raft_conf_change_decode(e->data, e->len, &cc) == RAFT_OK &&
            cc.type == RAFT_CC_REMOVE_NODE && cc.node_id == m->id && !m->removed) {
            m->removed = true;
            trace(s, "member %" PRIu64 " applied its own removal", m->id);
        }
    }
    raft_ready_advance(m->r, &rd);
    uint64_t lat = (uint64_t)s->fsync_min + rndn(&s->g, (uint64_t)(s->fsync_max - s->fsync_min + 1));
    b->done_at = s->now + lat;
    if (b->done_at < m->wal_last_done)
        b->done_at = m->wal_last_done; /* the WAL is FIFO */
    m->wal_last_done = b->done_at;
    if (m->wal_tail)
        m->wal_tail->next = b;
    else
        m->wal_head = b;
    m->wal_tail = b;
}

/* ---- checks -------------------------------------------------------------- */

static void check_member(sim *s, member *m)
{
    raft_status st;
    raft_status_get(m->r, &st);
    if (st.commit < m->last_commit)
        fail(s, "commit went backwards on %" PRIu64 ": %" PRIu64 " -> %" PRIu64, m->id,
             m->last_commit, st.commit);
    m->last_commit = st.commit;
    if (st.role == RAFT_LEADER) {
        grow_u64(&s->leader_of, &s->leader_cap, st.term, 1, NULL, NULL);
        if (s->leader_of[st.term] && s->leader_of[st.term] != m->id)
            fail(s, "two leaders in term %" PRIu64 ": %" PRIu64 " and %" PRIu64, st.term,
                 s->leader_of[st.term], m->id);
        s->leader_of[st.term] = m->id;
        if (m->last_role != RAFT_LEADER) {
            trace(s, "member %" PRIu64 " leads term %" PRIu64, m->id, st.term);
            /* leader completeness */
            for (uint64_t i = st.snap_index + 1; i <= s->max_applied && i < s->ent_cap; i++) {
                if (!s->ent_term[i])
                    continue;
                if (raft_term_at(m->r, i) != s->ent_term[i]) {
                    fail(s, "leader completeness: leader %" PRIu64 " of term %" PRIu64
                            " lacks committed index %" PRIu64, m->id, st.term, i);
                    break;
                }
            }
        }
    }
    m->last_role = st.role;
}

static void check_log_matching(sim *s)
{
    for (int a = 1; a < MAXM; a++)
        for (int b = a + 1; b < MAXM; b++) {
            member *x = &s->m[a], *y = &s->m[b];
            if (!x->up || !y->up)
                continue;
            raft_status sa, sb;
            raft_status_get(x->r, &sa);
            raft_status_get(y->r, &sb);
            uint64_t lo = sa.first_index > sb.first_index ? sa.first_index : sb.first_index;
            uint64_t hi = sa.last_index < sb.last_index ? sa.last_index : sb.last_index;
            uint64_t top = 0;
            for (uint64_t i = hi; i >= lo && i > 0; i--)
                if (raft_term_at(x->r, i) == raft_term_at(y->r, i)) {
                    top = i;
                    break;
                }
            for (uint64_t i = lo; i <= top; i++)
                if (raft_term_at(x->r, i) != raft_term_at(y->r, i)) {
                    fail(s, "log matching: members %d and %d agree at %" PRIu64
                            " but differ at %" PRIu64, a, b, top, i);
                    return;
                }
        }
}

/* ---- chaos --------------------------------------------------------------- */

static member *leader(sim *s)
{
    member *best = NULL;
    uint64_t bt = 0;
    for (int i = 1; i < MAXM; i++) {
        member *m = &s->m[i];
        if (!m->up)
            continue;
        raft_status st;
        raft_status_get(m->r, &st);
        if (st.role == RAFT_LEADER && st.term >= bt) {
            best = m;
            bt = st.term;
        }
    }
    return best;
}

static member *random_up(sim *s)
{
    int ids[MAXM], n = 0;
    for (int i = 1; i < MAXM; i++)
        if (s->m[i].up)
            ids[n++] = i;
    return n ? &s->m[ids[rndn(&s->g, (uint64_t)n)]] : NULL;
}

static void propose(sim *s, member *m)
{
    uint32_t len = 8 + (uint32_t)rndn(&s->g, 64);
    uint8_t *d = malloc(len);
    uint64_t id = ++s->next_prop;
    memcpy(d, &id, 8);
    for (uint32_t i = 8; i < len; i++)
        d[i] = (uint8_t)rnd(&s->g);
    if (raft_propose(m->r, d, len) != RAFT_OK)
        free(d);
}

static void do_read(sim *s, member *m)
{
    uint64_t ctx = ++s->next_ctx;
    if (raft_read_index(m->r, ctx) != RAFT_OK)
        return;
    pending_read *p = malloc(sizeof(*p));
    p->ctx = ctx;
    p->w = s->max_applied;
    p->next = m->reads;
    m->reads = p;
}

static void conf_change(sim *s, member *l)
{
    raft_status st;
    raft_status_get(l->r, &st);
    int pick = (int)rndn(&s->g, 3);
    if (pick == 0) { /* add a learner: a new member, started empty */
        for (int i = 1; i < MAXM; i++) {
            member *m = &s->m[i];
            if (m->exists || st.conf.n_voters + st.conf.n_learners >= 6)
                continue;
            if (raft_propose_conf_change(l->r, RAFT_CC_ADD_LEARNER, m->id, NULL, 0) == RAFT_OK) {
                trace(s, "propose add learner %d", i);
                memset(&m->d, 0, sizeof(m->d));
                member_start(s, m, false);
            }
            return;
        }
    } else if (pick == 1 && st.conf.n_learners) { /* promote */
        uint64_t id = st.conf.learners[rndn(&s->g, st.conf.n_learners)];
        if (raft_propose_conf_change(l->r, RAFT_CC_ADD_NODE, id, NULL, 0) == RAFT_OK)
            trace(s, "propose promote %" PRIu64, id);
    } else if (pick == 2 && st.conf.n_voters >= 3) { /* remove a voter, maybe itself */
        uint64_t id = st.conf.voters[rndn(&s->g, st.conf.n_voters)];
        if (raft_propose_conf_change(l->r, RAFT_CC_REMOVE_NODE, id, NULL, 0) == RAFT_OK)
            trace(s, "propose remove %" PRIu64, id);
    }
}

static void compact(sim *s, member *m)
{
    raft_status st;
    raft_status_get(m->r, &st);
    uint64_t idx = m->sm.applied;
    if (idx <= st.snap_index || idx > st.persisted || idx != st.applied)
        return;
    size_t len;
    uint8_t *img = snap_image(m->sm, &len);
    raft_snapshot_meta meta = { idx, raft_term_at(m->r, idx), m->conf };
    if (raft_compact(m->r, idx, img, len) != RAFT_OK) {
        free(img);
        return;
    }
    /* disk: save the snapshot, then drop the log it covers */
    disk *d = &m->d;
    free(d->snap_data);
    d->snap = meta;
    d->snap_data = malloc(len);
    memcpy(d->snap_data, img, len);
    d->snap_len = len;
    size_t k = 0;
    while (k < d->log.n && d->log.v[k].index <= idx)
        k++;
    for (size_t i = 0; i < k; i++)
        free(d->log.v[i].data);
    memmove(d->log.v, d->log.v + k, (d->log.n - k) * sizeof(ent));
    d->log.n -= k;
    trace(s, "member %" PRIu64 " compacts to %" PRIu64, m->id, idx);
}

static void partition(sim *s)
{
    memset(s->blocked, 0, sizeof(s->blocked));
    int kind = (int)rndn(&s->g, 3);
    if (kind == 0) { /* isolate one member */
        int v = 1 + (int)rndn(&s->g, MAXM - 1);
        for (int i = 1; i < MAXM; i++)
            s->blocked[i][v] = s->blocked[v][i] = true;
        trace(s, "partition: isolate %d", v);
    } else if (kind == 1) { /* random split */
        bool side[MAXM];
        for (int i = 1; i < MAXM; i++)
            side[i] = chance(&s->g, 500);
        for (int i = 1; i < MAXM; i++)
            for (int j = 1; j < MAXM; j++)
                s->blocked[i][j] = side[i] != side[j];
        trace(s, "partition: split");
    } else { /* one-way links */
        for (int k = 0; k < 3; k++) {
            int a = 1 + (int)rndn(&s->g, MAXM - 1), b = 1 + (int)rndn(&s->g, MAXM - 1);
            s->blocked[a][b] = true;
            trace(s, "partition: %d -/-> %d", a, b);
        }
    }
}

static void chaos(sim *s)
{
    rng *g = &s->g;
    member *l = leader(s);
    if (chance(g, 60)) {
        member *m = random_up(s);
        if (m)
            propose(s, m);
    }
    if (chance(g, 20)) {
        member *m = random_up(s);
        if (m)
            do_read(s, m);
    }
    if (chance(g, s->p_crash)) {
        /* sometimes together with the leader: the worst moment for data
         * that was acknowledged but not durable */
        member *m = random_up(s);
        if (m) {
            member_crash(s, m);
            m->down_until = s->now + 20 + rndn(g, 400);
        }
        if (l && l->up && chance(g, 300)) {
            member_crash(s, l);
            l->down_until = s->now + 20 + rndn(g, 400);
        }
    }
    if (chance(g, 3)) {
        if (chance(g, 500))
            partition(s);
        else {
            memset(s->blocked, 0, sizeof(s->blocked));
            trace(s, "heal");
        }
    }
    if (l && !l->up)
        l = NULL;
    if (l && s->n_init > 1 && chance(g, 2))
        conf_change(s, l);
    if (l && chance(g, 2)) {
        raft_status st;
        raft_status_get(l->r, &st);
        uint64_t to = st.conf.voters[rndn(g, st.conf.n_voters)];
        trace(s, "transfer %" PRIu64 " -> %" PRIu64, l->id, to);
        raft_transfer_leader(l->r, to);
    }
    if (chance(g, 10)) {
        member *m = random_up(s);
        if (m)
            compact(s, m);
    }
}

/* ---- the loop ------------------------------------------------------------ */

static void step(sim *s)
{
    s->now++;
    for (int i = 1; i < MAXM; i++) {
        member *m = &s->m[i];
        if (!m->exists)
            continue;
        if (!m->up && !m->removed && s->now >= m->down_until && m->down_until) {
            /* an initial member that never made its bootstrap durable boots
             * afresh, as a server with an empty data dir would */
            bool empty = !m->d.hs.term && !m->d.log.n && !m->d.snap.index;
            member_start(s, m, empty && m->id <= (uint64_t)s->n_init);
        }
        if (!m->up)
            continue;
        if ((int)s->now >= m->next_tick) {
            raft_tick(m->r);
            m->next_tick += m->tick_period;
        }
    }
    net_run(s);
    for (int i = 1; i < MAXM && !failed; i++) {
        member *m = &s->m[i];
        if (!m->up)
            continue;
        wal_run(s, m);
        if (!m->up)
            continue;
        while (raft_has_ready(m->r) && !failed)
            handle_ready(s, m);
        check_member(s, m);
    }
    if (s->step_n++ % 64 == 0)
        check_log_matching(s);
}

static bool all_applied(sim *s, uint64_t idx, member *l)
{
    raft_status st;
    raft_status_get(l->r, &st);
    for (uint32_t i = 0; i < st.conf.n_voters + st.conf.n_learners; i++) {
        uint64_t id = i < st.conf.n_voters ? st.conf.voters[i] : st.conf.learners[i - st.conf.n_voters];
        member *m = &s->m[id];
        if (!m->up || m->sm.applied < idx)
            return false;
    }
    return true;
}

static int run_seed(uint64_t seed, int chaos_steps, int calm_ticks)
{
    sim *s = calloc(1, sizeof(*s));
    failed = 0;
    fail_msg[0] = 0;
    s->seed = seed;
    s->g.s = seed * 0x2545F4914F6CDD1Dull + 7;
    int sizes[3] = { 1, 3, 5 };
    s->n_init = sizes[rndn(&s->g, 3)];
    s->p_drop = (int)rndn(&s->g, 150);
    s->p_dup = (int)rndn(&s->g, 50);
    s->max_delay = 1 + (int)rndn(&s->g, 30);
    s->fsync_min = 1 + (int)rndn(&s->g, 3);
    s->fsync_max = s->fsync_min + (int)rndn(&s->g, chance(&s->g, 300) ? 60 : 15);
    s->p_crash = 1 + (int)rndn(&s->g, 6);
    s->sm_durable = chance(&s->g, 500);
    s->pre_vote = chance(&s->g, 800);     /* etcd lets both be turned off */
    s->check_quorum = chance(&s->g, 800);
    s->max_msg_bytes = 256 + rndn(&s->g, 4096);
    for (int i = 1; i < MAXM; i++) {
        s->m[i].id = (uint64_t)i;
        s->m[i].tick_period = 9 + (int)rndn(&s->g, 3); /* drift: 9..11 units */
    }
    for (int i = 1; i <= s->n_init; i++)
        member_start(s, &s->m[i], true);
    trace(s, "seed %" PRIu64 ": %d members drop=%d dup=%d delay<=%d fsync %d..%d pre-vote=%d "
             "check-quorum=%d", seed, s->n_init, s->p_drop, s->p_dup, s->max_delay, s->fsync_min,
          s->fsync_max, s->pre_vote, s->check_quorum);
    for (int i = 0; i < chaos_steps && !failed; i++) {
        chaos(s);
        step(s);
    }
    /* liveness: heal, restart everyone, then demand progress */
    s->calm = true;
    memset(s->blocked, 0, sizeof(s->blocked));
    /* Raft's liveness needs broadcast time (network + fsync, twice per
     * election round) well below the election timeout (10..20 ticks of ~10
     * units): with 6-tick fsyncs two voters can split their votes for ever. */
    if (s->fsync_max > 20)
        s->fsync_max = 20;
    if (s->fsync_min > s->fsync_max)
        s->fsync_min = s->fsync_max;
    if (s->max_delay > 15)
        s->max_delay = 15;
    for (int i = 1; i < MAXM; i++) {
        member *m = &s->m[i];
        bool empty = !m->d.hs.term && !m->d.log.n && !m->d.snap.index;
        if (m->exists && !m->up && !m->removed)
            member_start(s, m, empty && m->id <= (uint64_t)s->n_init);
    }
    trace(s, "calm");
    uint64_t deadline = s->now + (uint64_t)calm_ticks * 11;
    member *l = NULL;
    uint64_t target = 0;
    int proposed = 0;
    while (!failed && s->now < deadline) {
        step(s);
        l = leader(s);
        if (!l)
            continue;
        raft_status st;
        raft_status_get(l->r, &st);
        if (!target || st.last_index < target || raft_term_at(l->r, target) != st.term) {
            for (int k = 0; k < 3; k++)
                propose(s, l);
            raft_status_get(l->r, &st);
            target = st.last_index;
            proposed++;
        }
        if (target && raft_term_at(l->r, target) == st.term && all_applied(s, target, l))
            break;
    }
    if (!failed && (!l || !target || !all_applied(s, target, l)))
        fail(s, "liveness: no leader/progress %d ticks after healing (leader %" PRIu64
                ", target %" PRIu64 ")", calm_ticks, l ? l->id : 0, target);
    for (int i = 1; i < MAXM; i++)
        if (s->m[i].up)
            member_crash(s, &s->m[i]);
    for (int i = 1; i < MAXM; i++) {
        el_free(&s->m[i].d.log);
        free(s->m[i].d.snap_data);
    }
    for (size_t i = 0; i < s->n_net; i++)
        free(s->net[i].buf);
    if (verbose)
        printf("applied %" PRIu64 " entries, %" PRIu64 " reads checked\n", s->applied_total,
               s->reads_ok);
    free(s->leader_of);
    free(s->ent_hash);
    free(s->ent_term);
    free(s->state_hash);
    free(s);
    return failed;
}

int main(int argc, char **argv)
{
    uint64_t from = 1, n = 3000;
    int single = 0, chaos_steps = 5000, calm_ticks = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--from") && i + 1 < argc)
            from = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            from = strtoull(argv[++i], NULL, 10);
            n = 1;
            single = 1;
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            chaos_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-v"))
            verbose = 1;
        else {
            fprintf(stderr, "usage: %s [--seeds N] [--from S] [--seed S] [--steps K] [-v]\n",
                    argv[0]);
            return 2;
        }
    }
    /* seeds that once found bugs run on every multi-seed invocation */
    static const uint64_t regress[] = { 789, 26799, 39176, 39689, 49624, 62652, 304958, 417993 };
    uint64_t seeds_n = n + (single ? 0 : sizeof(regress) / sizeof(regress[0]));
    uint64_t passed = 0, nfailed = 0;
    for (uint64_t k = 0; k < seeds_n; k++) {
        uint64_t sd = k < n ? from + k : regress[k - n];
        if (run_seed(sd, chaos_steps, calm_ticks)) {
            nfailed++;
            printf("FAIL seed %" PRIu64 ": %s\n  replay: %s --seed %" PRIu64 " -v\n", sd,
                   fail_msg, argv[0], sd);
        } else {
            passed++;
        }
    }
    printf("%" PRIu64 " passed, %" PRIu64 " failed\n", passed, nfailed);
    return nfailed ? 1 : 0;
}
