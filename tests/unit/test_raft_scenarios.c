/* test_raft_scenarios.c — the known hard cases of Raft as readable traces,
 * plus the single-member behaviour the server's raft actor depends on.
 *
 * A small harness drives up to 5 cores by hand: messages are queued (encoded
 * through the wire codec, so they outlive the ready), delivered on request,
 * optionally filtered or cut per link; storage is a per-member "disk" that
 * gets each ready's entries and hard state at once (instant fsync), so a
 * crash + restart boots from exactly what the member had persisted. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

#define N_MAX 6

typedef struct dent {
    raft_entry e; /* data malloc'd */
} dent;

typedef struct node {
    raft *r;
    bool up;
    raft_hard_state hs;
    raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;
    raft_entry *log; /* snap.index+1 .. */
    size_t n_log, cap_log;
    uint64_t applied;
    uint64_t applied_term[512]; /* term of the entry applied at each index */
    uint8_t applied_byte[512];  /* first data byte (0 if none) */
    raft_read_state reads[64];
    size_t n_reads;
} node;

typedef struct qmsg {
    uint64_t from, to;
    uint8_t *buf;
    size_t len;
} qmsg;

typedef struct cluster {
    int n;
    node nd[N_MAX + 1];
    qmsg q[8192];
    size_t nq;
    bool cut[N_MAX + 1][N_MAX + 1];
    bool pre_vote, check_quorum;
    size_t max_msg_bytes;
    size_t max_inflight_msgs, max_inflight_bytes;
    /* test hook: may edit the message; false drops it */
    bool (*keep)(struct cluster *c, raft_msg *m);
} cluster;

static void cfg_for(cluster *c, raft_config *cfg, uint64_t id)
{
    raft_config_default(cfg, id, 1000 + id);
    cfg->pre_vote = c->pre_vote;
    cfg->check_quorum = c->check_quorum;
    if (c->max_msg_bytes)
        cfg->max_msg_bytes = c->max_msg_bytes;
    if (c->max_inflight_msgs)
        cfg->max_inflight_msgs = c->max_inflight_msgs;
    cfg->max_inflight_bytes = c->max_inflight_bytes;
}

static void queue_msg(cluster *c, const raft_msg *m)
{
    if (c->nq >= 8192)
        return;
    qmsg *q = &c->q[c->nq++];
    q->len = raft_msg_encoded_size(m);
    q->buf = malloc(q->len);
    size_t w;
    CU_ASSERT_EQUAL(raft_msg_encode(m, q->buf, q->len, &w), RAFT_OK);
    q->from = m->from;
    q->to = m->to;
}

static void disk_append(node *n, const raft_entry *e)
{
    /* entries replace everything from their index on */
    size_t keep = (size_t)(e->index - n->snap.index - 1);
    while (n->n_log > keep)
        free(n->log[--n->n_log].data);
    if (n->n_log == n->cap_log) {
        n->cap_log = n->cap_log ? n->cap_log * 2 : 64;
        n->log = realloc(n->log, n->cap_log * sizeof(raft_entry));
    }
    raft_entry x = *e;
    x.owner = NULL;
    x.data = NULL;
    if (e->len) {
        x.data = malloc(e->len);
        memcpy(x.data, e->data, e->len);
    }
    n->log[n->n_log++] = x;
}

/* One ready, persisted at once. */
static void node_ready(cluster *c, int id)
{
    node *n = &c->nd[id];
    raft_ready rd;
    raft_ready_get(n->r, &rd);
    if (rd.snapshot) {
        free(n->snap_data);
        n->snap = rd.snapshot->meta;
        n->snap_len = rd.snapshot->len;
        n->snap_data = malloc(rd.snapshot->len + 1);
        memcpy(n->snap_data, rd.snapshot->data, rd.snapshot->len);
        while (n->n_log)
            free(n->log[--n->n_log].data);
        n->applied = rd.snapshot->meta.index;
    }
    for (size_t i = 0; i < rd.n_entries; i++)
        disk_append(n, &rd.entries[i]);
    if (rd.hard_state_changed)
        n->hs = rd.hard_state;
    for (size_t i = 0; i < rd.n_msgs; i++)
        queue_msg(c, &rd.msgs[i]);
    for (size_t i = 0; i < rd.n_committed; i++) {
        const raft_entry *e = &rd.committed_entries[i];
        CU_ASSERT_EQUAL(e->index, n->applied + 1);
        n->applied = e->index;
        if (e->index < 512) {
            n->applied_term[e->index] = e->term;
            n->applied_byte[e->index] = e->len ? e->data[0] : 0;
        }
    }
    for (size_t i = 0; i < rd.n_read_states && n->n_reads < 64; i++)
        n->reads[n->n_reads++] = rd.read_states[i];
    /* capture what is needed for the persisted call before advance */
    uint64_t pi = 0, pt = 0;
    if (rd.n_entries) {
        pi = rd.entries[rd.n_entries - 1].index;
        pt = rd.entries[rd.n_entries - 1].term;
    } else if (rd.snapshot) {
        pi = rd.snapshot->meta.index;
        pt = rd.snapshot->meta.term;
    }
    size_t na = rd.n_msgs_after_persist;
    /* everything in this ready is durable now: */
    for (size_t i = 0; i < na; i++)
        queue_msg(c, &rd.msgs_after_persist[i]);
    raft_ready_advance(n->r, &rd);
    if (pi)
        raft_persisted(n->r, pi, pt);
}

static void settle(cluster *c)
{
    for (int i = 1; i <= c->n; i++)
        while (c->nd[i].up && raft_has_ready(c->nd[i].r))
            node_ready(c, i);
}

/* Delivers queued messages until quiet (max rounds). */
static void deliver(cluster *c)
{
    for (int round = 0; round < 1000; round++) {
        settle(c);
        if (!c->nq)
            return;
        size_t nq = c->nq;
        qmsg *batch = malloc(nq * sizeof(*batch));
        memcpy(batch, c->q, nq * sizeof(*batch));
        c->nq = 0;
        for (size_t i = 0; i < nq; i++) {
            qmsg *q = &batch[i];
            node *to = (q->to >= 1 && q->to <= (uint64_t)c->n) ? &c->nd[q->to] : NULL;
            if (to && to->up && !c->cut[q->from][q->to]) {
                raft_msg m;
                raft_entry ents[64];
                size_t need;
                CU_ASSERT_EQUAL_FATAL(raft_msg_decode(q->buf, q->len, &m, ents, 64, &need), RAFT_OK);
                if (!c->keep || c->keep(c, &m))
                    raft_step(to->r, &m);
            }
            free(q->buf);
        }
        free(batch);
    }
}

/* Delivers round by round until member id leads (its ready not yet taken). */
static void deliver_until_leader(cluster *c, int id)
{
    for (int round = 0; round < 100; round++) {
        settle(c);
        if (!c->nq)
            return;
        size_t nq = c->nq;
        qmsg *batch = malloc(nq * sizeof(*batch));
        memcpy(batch, c->q, nq * sizeof(*batch));
        c->nq = 0;
        for (size_t i = 0; i < nq; i++) {
            qmsg *q = &batch[i];
            node *to = (q->to >= 1 && q->to <= (uint64_t)c->n) ? &c->nd[q->to] : NULL;
            if (to && to->up && !c->cut[q->from][q->to]) {
                raft_msg m;
                raft_entry ents[64];
                size_t need;
                if (raft_msg_decode(q->buf, q->len, &m, ents, 64, &need) == RAFT_OK)
                    raft_step(to->r, &m);
            }
            free(q->buf);
        }
        free(batch);
        raft_status st;
        raft_status_get(c->nd[id].r, &st);
        if (st.role == RAFT_LEADER)
            return;
    }
}

static void drop_queue(cluster *c)
{
    for (size_t i = 0; i < c->nq; i++)
        free(c->q[i].buf);
    c->nq = 0;
}

static void node_boot(cluster *c, int id, bool fresh)
{
    node *n = &c->nd[id];
    raft_config cfg;
    cfg_for(c, &cfg, (uint64_t)id);
    raft_boot b;
    memset(&b, 0, sizeof(b));
    if (fresh) {
        b.fresh = true;
        for (int i = 1; i <= c->n; i++)
            b.conf.voters[b.conf.n_voters++] = (uint64_t)i;
        n->applied = 0;
    } else {
        b.hs = n->hs;
        b.snap = n->snap;
        if (n->snap_len) {
            b.snap_data = malloc(n->snap_len);
            memcpy(b.snap_data, n->snap_data, n->snap_len);
            b.snap_len = n->snap_len;
        }
        b.entries = calloc(n->n_log + 1, sizeof(raft_entry));
        b.n_entries = n->n_log;
        for (size_t i = 0; i < n->n_log; i++) {
            b.entries[i] = n->log[i];
            if (n->log[i].len) {
                b.entries[i].data = malloc(n->log[i].len);
                memcpy(b.entries[i].data, n->log[i].data, n->log[i].len);
            }
        }
        cfg.applied = n->applied;
    }
    CU_ASSERT_EQUAL_FATAL(raft_new(&cfg, &b, &n->r), RAFT_OK);
    free(b.entries);
    n->up = true;
}

static void cl_init(cluster *c, int n, bool pre_vote, bool check_quorum)
{
    memset(c, 0, sizeof(*c));
    c->n = n;
    c->pre_vote = pre_vote;
    c->check_quorum = check_quorum;
    for (int i = 1; i <= n; i++)
        node_boot(c, i, true);
    settle(c);
}

static void node_crash(cluster *c, int id)
{
    raft_free(c->nd[id].r);
    c->nd[id].r = NULL;
    c->nd[id].up = false;
}

static void node_wipe(cluster *c, int id)
{
    node *n = &c->nd[id];
    while (n->n_log)
        free(n->log[--n->n_log].data);
    free(n->snap_data);
    n->snap_data = NULL;
    n->snap_len = 0;
    memset(&n->snap, 0, sizeof(n->snap));
    memset(&n->hs, 0, sizeof(n->hs));
    n->applied = 0;
}

static void cl_free(cluster *c)
{
    drop_queue(c);
    for (int i = 1; i <= N_MAX; i++) {
        if (c->nd[i].up)
            node_crash(c, i);
        node_wipe(c, i);
        free(c->nd[i].log);
    }
}

static void isolate(cluster *c, int id, bool on)
{
    for (int i = 1; i <= N_MAX; i++) {
        c->cut[id][i] = on;
        c->cut[i][id] = on;
    }
}

static raft_status st_of(cluster *c, int id)
{
    raft_status st;
    raft_status_get(c->nd[id].r, &st);
    return st;
}

static void tick(cluster *c, int id, int n)
{
    for (int i = 0; i < n; i++)
        raft_tick(c->nd[id].r);
}

static int propose_byte(cluster *c, int id, uint8_t v, uint32_t len)
{
    uint8_t *d = malloc(len);
    memset(d, v, len);
    int rc = raft_propose(c->nd[id].r, d, len);
    if (rc != RAFT_OK)
        free(d);
    return rc;
}

static void elect(cluster *c, int id)
{
    CU_ASSERT_EQUAL(raft_campaign(c->nd[id].r), RAFT_OK);
    deliver(c);
    CU_ASSERT_EQUAL(st_of(c, id).role, RAFT_LEADER);
}

/* ---- single member: what the server's raft actor relies on --------------- */

static void test_single_member_fresh_boot(void)
{
    raft_config cfg;
    raft_config_default(&cfg, 1, 42);
    raft_boot b;
    memset(&b, 0, sizeof(b));
    b.fresh = true;
    b.conf.voters[0] = 1;
    b.conf.n_voters = 1;
    raft *r;
    CU_ASSERT_EQUAL_FATAL(raft_new(&cfg, &b, &r), RAFT_OK);

    /* the bootstrap: one conf-change entry at term 1, committed */
    raft_ready rd;
    CU_ASSERT_TRUE(raft_has_ready(r));
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_entries, 1);
    CU_ASSERT_EQUAL(rd.entries[0].index, 1);
    CU_ASSERT_EQUAL(rd.entries[0].term, 1);
    CU_ASSERT_EQUAL(rd.entries[0].type, RAFT_ENTRY_CONF_CHANGE);
    raft_conf_change cc;
    CU_ASSERT_EQUAL(raft_conf_change_decode(rd.entries[0].data, rd.entries[0].len, &cc), RAFT_OK);
    CU_ASSERT_EQUAL(cc.type, RAFT_CC_ADD_NODE);
    CU_ASSERT_EQUAL(cc.node_id, 1);
    CU_ASSERT_TRUE(rd.hard_state_changed);
    CU_ASSERT_EQUAL(rd.hard_state.term, 1);
    CU_ASSERT_EQUAL(rd.hard_state.commit, 1);
    CU_ASSERT_EQUAL(rd.n_committed, 0); /* not durable yet */
    raft_ready_advance(r, &rd);
    raft_persisted(r, 1, 1);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_committed, 1);
    raft_ready_advance(r, &rd);

    /* no leader yet: proposals and reads are refused with a clear code */
    uint8_t x = 1;
    CU_ASSERT_EQUAL(raft_propose(r, &x, 1), RAFT_ERR_NO_LEADER);
    CU_ASSERT_EQUAL(raft_read_index(r, 7), RAFT_ERR_NO_LEADER);

    /* campaign: leader at term 2, with an empty entry of its term */
    CU_ASSERT_EQUAL(raft_campaign(r), RAFT_OK);
    raft_status st;
    raft_status_get(r, &st);
    CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
    CU_ASSERT_EQUAL(st.term, 2);
    CU_ASSERT_EQUAL(st.lead, 1);

    /* a read before the term's first commit waits ... */
    CU_ASSERT_EQUAL(raft_read_index(r, 7), RAFT_OK);
    raft_ready_get(r, &rd);
    CU_ASSERT_TRUE(rd.soft_state_changed);
    CU_ASSERT_EQUAL(rd.n_entries, 1);
    CU_ASSERT_EQUAL(rd.entries[0].index, 2);
    CU_ASSERT_EQUAL(rd.entries[0].term, 2);
    CU_ASSERT_EQUAL(rd.n_read_states, 0);
    CU_ASSERT_EQUAL(rd.n_msgs, 0);
    raft_ready_advance(r, &rd);
    /* ... and is answered once that entry is durable (and so committed) */
    raft_persisted(r, 2, 2);
    raft_status_get(r, &st);
    CU_ASSERT_EQUAL(st.commit, 2);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_read_states, 1);
    CU_ASSERT_EQUAL(rd.read_states[0].index, 2);
    CU_ASSERT_EQUAL(rd.read_states[0].ctx, 7);
    CU_ASSERT_EQUAL(rd.n_committed, 1);
    raft_ready_advance(r, &rd);

    /* proposals: batched into one ready, committed as soon as persisted,
     * never handed out before that */
    for (int i = 0; i < 3; i++) {
        uint8_t *d = malloc(4);
        memcpy(d, "abc", 4);
        CU_ASSERT_EQUAL(raft_propose(r, d, 4), RAFT_OK);
    }
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_entries, 3);
    CU_ASSERT_EQUAL(rd.n_committed, 0);
    CU_ASSERT_EQUAL(rd.hard_state_changed, false);
    uint8_t *keep = rd.entries[2].data;
    raft_ready_advance(r, &rd);
    raft_persisted(r, 4, 2); /* only two of three durable yet */
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_committed, 2);
    CU_ASSERT_EQUAL(rd.hard_state.commit, 4);
    raft_ready_advance(r, &rd);
    raft_persisted(r, 5, 2);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL_FATAL(rd.n_committed, 1);
    CU_ASSERT_PTR_EQUAL(rd.committed_entries[0].data, keep); /* bytes never moved */
    CU_ASSERT_EQUAL(memcmp(rd.committed_entries[0].data, "abc", 4), 0);
    raft_ready_advance(r, &rd);
    /* a read now returns at once with the commit index */
    CU_ASSERT_EQUAL(raft_read_index(r, 8), RAFT_OK);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL_FATAL(rd.n_read_states, 1);
    CU_ASSERT_EQUAL(rd.read_states[0].index, 5);
    raft_ready_advance(r, &rd);
    CU_ASSERT_FALSE(raft_has_ready(r));

    /* compaction keeps the log from index 4 on */
    CU_ASSERT_EQUAL(raft_compact(r, 3, NULL, 0), RAFT_OK);
    CU_ASSERT_EQUAL(raft_compact(r, 3, NULL, 0), RAFT_ERR_COMPACTED);
    CU_ASSERT_EQUAL(raft_compact(r, 9, NULL, 0), RAFT_ERR_UNAVAILABLE);
    raft_status_get(r, &st);
    CU_ASSERT_EQUAL(st.first_index, 4);
    CU_ASSERT_EQUAL(st.snap_index, 3);
    CU_ASSERT_EQUAL(raft_term_at(r, 3), 2);
    raft_free(r);
}

/* The state machine applied further than the durable hard state says. */
static void test_single_member_restart_applied_ahead(void)
{
    raft_config cfg;
    raft_config_default(&cfg, 1, 42);
    cfg.applied = 4;
    raft_entry ents[5];
    memset(ents, 0, sizeof(ents));
    for (int i = 0; i < 5; i++) {
        ents[i].index = (uint64_t)i + 1;
        ents[i].term = i == 0 ? 1 : 2;
    }
    uint8_t cc[9] = { RAFT_CC_ADD_NODE, 1 };
    ents[0].type = RAFT_ENTRY_CONF_CHANGE;
    ents[0].data = malloc(9);
    memcpy(ents[0].data, cc, 9);
    ents[0].len = 9;
    raft_boot b;
    memset(&b, 0, sizeof(b));
    b.hs = (raft_hard_state){ 2, 1, 2 };
    b.entries = ents;
    b.n_entries = 5;
    b.snap.conf.n_voters = 0;
    raft *r;
    CU_ASSERT_EQUAL_FATAL(raft_new(&cfg, &b, &r), RAFT_OK);
    raft_status st;
    raft_status_get(r, &st);
    CU_ASSERT_EQUAL(st.commit, 4);
    CU_ASSERT_EQUAL(st.applied, 4);
    CU_ASSERT_EQUAL(st.term, 2);
    CU_ASSERT_EQUAL(st.conf.n_voters, 1); /* conf change at index 1 <= applied */
    raft_ready rd;
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_entries, 0);     /* all of it was durable */
    CU_ASSERT_EQUAL(rd.n_committed, 0);   /* nothing re-applied */
    CU_ASSERT_EQUAL(rd.hard_state.commit, 4);
    raft_ready_advance(r, &rd);
    CU_ASSERT_EQUAL(raft_campaign(r), RAFT_OK);
    raft_status_get(r, &st);
    CU_ASSERT_EQUAL(st.role, RAFT_LEADER);
    CU_ASSERT_EQUAL(st.term, 3);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_entries, 1);
    raft_ready_advance(r, &rd);
    raft_persisted(r, 6, 3);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL_FATAL(rd.n_committed, 2); /* 5 and the new 6 */
    CU_ASSERT_EQUAL(rd.committed_entries[0].index, 5);
    raft_ready_advance(r, &rd);
    raft_free(r);
}

/* Durability rules of the ready contract in a 3-member cluster. */
static void test_durability_rules(void)
{
    cluster c;
    cl_init(&c, 3, true, false);
    elect(&c, 1);
    node *n2 = &c.nd[2];
    /* a vote request is only sent once the candidate's own vote is durable */
    isolate(&c, 1, true);
    raft_campaign(n2->r); /* pre-vote first: pre-votes go out at once */
    raft_ready rd;
    raft_ready_get(n2->r, &rd);
    CU_ASSERT_TRUE(rd.n_msgs >= 1);
    CU_ASSERT_EQUAL(rd.n_msgs_after_persist, 0);
    CU_ASSERT_EQUAL(rd.msgs[0].type, RAFT_MSG_PRE_VOTE);
    raft_ready_advance(n2->r, &rd);
    raft_msg grant = { .type = RAFT_MSG_PRE_VOTE_RESP, .from = 3, .to = 2,
                       .term = st_of(&c, 2).term + 1 };
    raft_step(n2->r, &grant);
    raft_ready_get(n2->r, &rd);
    CU_ASSERT_TRUE(rd.hard_state_changed); /* term+1, vote for itself */
    CU_ASSERT_EQUAL(rd.n_msgs_after_persist, 2); /* VOTE to 1 and 3 */
    CU_ASSERT_EQUAL(rd.msgs_after_persist[0].type, RAFT_MSG_VOTE);
    raft_ready_advance(n2->r, &rd);

    /* a follower acks appends only after raft_persisted */
    raft_msg vote_ok = { .type = RAFT_MSG_VOTE_RESP, .from = 3, .to = 2,
                         .term = st_of(&c, 2).term };
    raft_step(n2->r, &vote_ok);
    CU_ASSERT_EQUAL(st_of(&c, 2).role, RAFT_LEADER);
    raft_ready_get(n2->r, &rd);
    const raft_msg *app = NULL;
    for (size_t i = 0; i < rd.n_msgs; i++)
        if (rd.msgs[i].to == 3 && rd.msgs[i].type == RAFT_MSG_APP)
            app = &rd.msgs[i];
    CU_ASSERT_PTR_NOT_NULL_FATAL(app);
    raft_msg app_copy = *app;
    raft_entry e0 = app->n_entries ? app->entries[0] : (raft_entry){ 0 };
    app_copy.entries = app->n_entries ? &e0 : NULL;
    raft_step(c.nd[3].r, &app_copy);
    raft_ready_advance(n2->r, &rd);
    raft_ready rd3;
    raft_ready_get(c.nd[3].r, &rd3);
    CU_ASSERT_FATAL(rd3.n_entries >= 1);
    uint64_t li = rd3.entries[rd3.n_entries - 1].index, lt = rd3.entries[rd3.n_entries - 1].term;
    bool acked = false;
    for (size_t i = 0; i < rd3.n_msgs; i++)
        if (rd3.msgs[i].type == RAFT_MSG_APP_RESP && !rd3.msgs[i].reject &&
            rd3.msgs[i].index >= li)
            acked = true;
    CU_ASSERT_FALSE(acked); /* the new entry is not durable on 3 yet */
    raft_ready_advance(c.nd[3].r, &rd3);
    raft_persisted(c.nd[3].r, li, lt);
    raft_ready_get(c.nd[3].r, &rd3);
    CU_ASSERT_EQUAL_FATAL(rd3.n_msgs, 1);
    CU_ASSERT_EQUAL(rd3.msgs[0].type, RAFT_MSG_APP_RESP);
    CU_ASSERT_EQUAL(rd3.msgs[0].index, li);
    raft_ready_advance(c.nd[3].r, &rd3);
    cl_free(&c);
}

/* ---- Figure 8 of the Raft paper --------------------------------------------
 * Five members, pre-vote and check-quorum off (the paper's protocol). Boot
 * entries occupy 1..5; S1 leads term 2 and its empty entry 6 commits.
 * (a) S1 appends X at 7 (term 2), reaching only S2.
 * (b) S1 crashes; S5 wins term 3 with S3, S4; its empty entry 7 (term 3)
 *     stays local.
 * (c) S5 crashes; S1 restarts and wins term 4 with S2, S3; X reaches S3, so
 *     X is on a majority — but it is from term 2 and MUST NOT commit.
 * (d) S1 crashes; S5 restarts and wins (its last term 3 beats 2), overwrites
 *     index 7 everywhere. Nobody ever applied X. */
static int fig8_block_term4_entries;

static bool fig8_keep(cluster *c, raft_msg *m)
{
    (void)c;
    if (!fig8_block_term4_entries || m->type != RAFT_MSG_APP)
        return true;
    for (size_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].term == 4) {
            m->n_entries = i; /* term-4 entries are lost on the way */
            break;
        }
    return true;
}

static void test_figure8(void)
{
    cluster c;
    cl_init(&c, 5, false, false);
    c.max_msg_bytes = 16;
    c.keep = fig8_keep;
    for (int i = 1; i <= 5; i++) { /* reboot with the small message size */
        node_crash(&c, i);
        node_boot(&c, i, false);
    }
    elect(&c, 1);
    CU_ASSERT_EQUAL(st_of(&c, 1).term, 2);
    CU_ASSERT_EQUAL(st_of(&c, 1).commit, 6);
    /* (a) */
    isolate(&c, 1, true);
    c.cut[1][2] = c.cut[2][1] = false;
    CU_ASSERT_EQUAL(propose_byte(&c, 1, 'X', 32), RAFT_OK);
    deliver(&c);
    CU_ASSERT_EQUAL(raft_term_at(c.nd[2].r, 7), 2);
    CU_ASSERT_EQUAL(st_of(&c, 1).commit, 6);
    /* (b) */
    node_crash(&c, 1);
    isolate(&c, 1, false);
    isolate(&c, 2, true); /* S2 takes no part */
    CU_ASSERT_EQUAL(raft_campaign(c.nd[5].r), RAFT_OK);
    deliver_until_leader(&c, 5); /* vote requests and grants; S5 leads */
    CU_ASSERT_EQUAL(st_of(&c, 5).role, RAFT_LEADER);
    isolate(&c, 5, true); /* its entry 7 is written but goes nowhere */
    settle(&c);
    drop_queue(&c);
    isolate(&c, 5, false);
    CU_ASSERT_EQUAL(st_of(&c, 5).term, 3);
    CU_ASSERT_EQUAL(raft_term_at(c.nd[5].r, 7), 3);
    /* (c): S5 crashes before its entry 7 left; S1 restarts */
    node_crash(&c, 5);
    isolate(&c, 2, false);
    node_boot(&c, 1, false);
    fig8_block_term4_entries = 1;
    /* S1 needs a term above 3: two campaigns (the first one teaches it 3) */
    for (int k = 0; k < 3 && st_of(&c, 1).role != RAFT_LEADER; k++) {
        raft_campaign(c.nd[1].r);
        deliver(&c);
    }
    CU_ASSERT_EQUAL_FATAL(st_of(&c, 1).role, RAFT_LEADER);
    CU_ASSERT_EQUAL(st_of(&c, 1).term, 4);
    CU_ASSERT_EQUAL(raft_term_at(c.nd[3].r, 7), 2); /* X is on S1, S2, S3 */
    CU_ASSERT_EQUAL(raft_term_at(c.nd[2].r, 7), 2);
    CU_ASSERT_EQUAL(st_of(&c, 1).commit, 6);          /* §5.4.2: not committed */
    for (int i = 1; i <= 4; i++)
        CU_ASSERT_TRUE(c.nd[i].applied < 7);
    /* (d) */
    node_crash(&c, 1);
    fig8_block_term4_entries = 0;
    node_boot(&c, 5, false);
    for (int k = 0; k < 4 && st_of(&c, 5).role != RAFT_LEADER; k++) {
        raft_campaign(c.nd[5].r);
        deliver(&c);
    }
    CU_ASSERT_EQUAL_FATAL(st_of(&c, 5).role, RAFT_LEADER);
    deliver(&c);
    for (int i = 2; i <= 5; i++) {
        CU_ASSERT_EQUAL(raft_term_at(c.nd[i].r, 7), 3);
        CU_ASSERT_TRUE(c.nd[i].applied >= 7);
        CU_ASSERT_EQUAL(c.nd[i].applied_term[7], 3);
        CU_ASSERT_NOT_EQUAL(c.nd[i].applied_byte[7], 'X');
    }
    cl_free(&c);
}

/* ---- a partitioned old leader ------------------------------------------- */
static void test_partitioned_old_leader(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    elect(&c, 1);
    isolate(&c, 1, true);
    /* the old leader still takes a proposal and a read, but neither can
     * complete without a quorum */
    CU_ASSERT_EQUAL(propose_byte(&c, 1, 'o', 4), RAFT_OK);
    CU_ASSERT_EQUAL(raft_read_index(c.nd[1].r, 99), RAFT_OK);
    deliver(&c);
    uint64_t old_commit = st_of(&c, 1).commit;
    /* the others time out (lease expired) and elect one of them */
    int nl = 0;
    for (int k = 0; k < 60 && !nl; k++) {
        tick(&c, 2, 1);
        tick(&c, 3, 1);
        deliver(&c);
        nl = st_of(&c, 2).role == RAFT_LEADER ? 2 : st_of(&c, 3).role == RAFT_LEADER ? 3 : 0;
    }
    CU_ASSERT_FATAL(nl != 0);
    uint64_t new_term = st_of(&c, nl).term;
    CU_ASSERT_TRUE(new_term > st_of(&c, 1).term);
    CU_ASSERT_EQUAL(st_of(&c, 1).role, RAFT_LEADER); /* it does not know yet */
    CU_ASSERT_EQUAL(propose_byte(&c, nl, 'n', 4), RAFT_OK);
    deliver(&c);
    /* check-quorum: the old leader steps down by itself */
    tick(&c, 1, 25);
    CU_ASSERT_EQUAL(st_of(&c, 1).role, RAFT_FOLLOWER);
    CU_ASSERT_EQUAL(st_of(&c, 1).commit, old_commit);
    CU_ASSERT_EQUAL(c.nd[1].n_reads, 0); /* the stale read never came back */
    /* heal: the old leader's uncommitted entry is replaced */
    isolate(&c, 1, false);
    for (int k = 0; k < 5; k++) {
        tick(&c, nl, 1);
        deliver(&c);
    }
    CU_ASSERT_EQUAL(st_of(&c, 1).term, new_term);
    CU_ASSERT_EQUAL(st_of(&c, 1).lead, (uint64_t)nl);
    uint64_t ci = st_of(&c, nl).commit;
    CU_ASSERT_EQUAL(c.nd[1].applied, ci);
    for (uint64_t i = old_commit + 1; i <= ci; i++)
        CU_ASSERT_NOT_EQUAL(c.nd[1].applied_byte[i], 'o');
    CU_ASSERT_EQUAL(c.nd[1].applied_byte[ci], 'n');
    cl_free(&c);
}

/* ---- a member restarting with an empty disk -------------------------------- */
static void test_restart_empty_disk(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    c.max_msg_bytes = 64;
    elect(&c, 1);
    for (int i = 0; i < 20; i++)
        propose_byte(&c, 1, (uint8_t)('a' + i), 10);
    deliver(&c);
    uint64_t ci = st_of(&c, 1).commit;
    CU_ASSERT_EQUAL(c.nd[3].applied, ci);
    /* the leader compacts: the snapshot image is 300 bytes, sent in chunks */
    uint8_t *img = malloc(300);
    for (int i = 0; i < 300; i++)
        img[i] = (uint8_t)i;
    CU_ASSERT_EQUAL(raft_compact(c.nd[1].r, ci, img, 300), RAFT_OK);
    /* member 3 loses its disk */
    node_crash(&c, 3);
    node_wipe(&c, 3);
    node_boot(&c, 3, false);
    CU_ASSERT_EQUAL(st_of(&c, 3).conf.n_voters, 0); /* knows nothing: cannot campaign */
    CU_ASSERT_EQUAL(raft_campaign(c.nd[3].r), RAFT_ERR_REMOVED);
    propose_byte(&c, 1, 'z', 10);
    for (int k = 0; k < 20; k++) {
        tick(&c, 1, 1);
        deliver(&c);
    }
    CU_ASSERT_EQUAL(c.nd[3].snap.index, ci);
    CU_ASSERT_EQUAL(c.nd[3].snap_len, 300);
    CU_ASSERT_EQUAL(memcmp(c.nd[3].snap_data, img, 300), 0);
    CU_ASSERT_EQUAL(st_of(&c, 3).conf.n_voters, 3);
    CU_ASSERT_EQUAL(c.nd[3].applied, st_of(&c, 1).commit);
    CU_ASSERT_EQUAL(c.nd[3].applied_byte[ci + 1], 'z');
    cl_free(&c);
}

/* ---- a disruptive rejoining member stopped by pre-vote ------------------- */
static void disruptive(bool pre_vote, uint64_t *term_before, uint64_t *term_after,
                       int *leader_after)
{
    cluster c;
    cl_init(&c, 3, pre_vote, false);
    elect(&c, 1);
    *term_before = st_of(&c, 1).term;
    isolate(&c, 3, true);
    for (int k = 0; k < 100; k++) { /* 3 times out over and over, alone */
        tick(&c, 3, 1);
        tick(&c, 1, 1);
        if (k % 10 == 0)
            propose_byte(&c, 1, 'w', 1); /* the others move on */
        deliver(&c);
    }
    isolate(&c, 3, false);
    for (int k = 0; k < 25; k++) { /* 3 asks again, now heard */
        tick(&c, 3, 1);
        tick(&c, 1, 1);
        deliver(&c);
    }
    *term_after = st_of(&c, 1).term > st_of(&c, 2).term ? st_of(&c, 1).term : st_of(&c, 2).term;
    *leader_after = st_of(&c, 1).role == RAFT_LEADER ? 1 : 0;
    cl_free(&c);
}

static void test_disruptive_member_prevote(void)
{
    uint64_t before, after;
    int still;
    disruptive(true, &before, &after, &still);
    CU_ASSERT_EQUAL(after, before);
    CU_ASSERT_EQUAL(still, 1);
    /* without pre-vote the same member deposes the healthy leader */
    disruptive(false, &before, &after, &still);
    CU_ASSERT_TRUE(after > before);
}

/* ---- a leader removing itself ------------------------------------------- */
static void test_leader_removes_itself(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    elect(&c, 1);
    CU_ASSERT_EQUAL(raft_propose_conf_change(c.nd[1].r, RAFT_CC_REMOVE_NODE, 1, NULL, 0), RAFT_OK);
    /* one change at a time */
    CU_ASSERT_EQUAL(raft_propose_conf_change(c.nd[1].r, RAFT_CC_ADD_LEARNER, 4, NULL, 0),
                    RAFT_ERR_CONF_CHANGE_PENDING);
    deliver(&c);
    raft_status s1 = st_of(&c, 1);
    CU_ASSERT_EQUAL(s1.role, RAFT_FOLLOWER);
    CU_ASSERT_EQUAL(s1.conf.n_voters, 2);
    CU_ASSERT_EQUAL(raft_campaign(c.nd[1].r), RAFT_ERR_REMOVED);
    CU_ASSERT_EQUAL(st_of(&c, 2).conf.n_voters, 2);
    CU_ASSERT_EQUAL(st_of(&c, 3).conf.n_voters, 2);
    /* the remaining two elect a leader and keep committing */
    int lead = 0;
    for (int k = 0; k < 40 && !lead; k++) {
        tick(&c, 2, 1);
        tick(&c, 3, 1);
        deliver(&c);
        lead = st_of(&c, 2).role == RAFT_LEADER ? 2 : st_of(&c, 3).role == RAFT_LEADER ? 3 : 0;
    }
    CU_ASSERT_FATAL(lead != 0);
    CU_ASSERT_EQUAL(propose_byte(&c, lead, 'q', 3), RAFT_OK);
    deliver(&c);
    uint64_t ci = st_of(&c, lead).commit;
    CU_ASSERT_EQUAL(c.nd[2].applied, ci);
    CU_ASSERT_EQUAL(c.nd[3].applied, ci);
    CU_ASSERT_EQUAL(c.nd[2].applied_byte[ci], 'q');
    cl_free(&c);
}

/* ---- a learner promoted while behind ------------------------------------ */
static void test_learner_promoted_behind(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    c.n = 4; /* member 4 exists but starts empty */
    node_boot(&c, 4, false);
    elect(&c, 1);
    CU_ASSERT_EQUAL(raft_propose_conf_change(c.nd[1].r, RAFT_CC_ADD_LEARNER, 4, NULL, 0), RAFT_OK);
    deliver(&c);
    CU_ASSERT_EQUAL(st_of(&c, 1).conf.n_learners, 1);
    CU_ASSERT_TRUE(st_of(&c, 4).is_learner);
    isolate(&c, 4, true); /* the learner falls behind */
    for (int i = 0; i < 10; i++)
        propose_byte(&c, 1, 'b', 5);
    deliver(&c);
    uint64_t ci = st_of(&c, 1).commit;
    CU_ASSERT_TRUE(c.nd[4].applied < ci);
    /* a learner does not count: commits went on with 3 voters */
    CU_ASSERT_EQUAL(c.nd[3].applied, ci);
    /* promote it while it is still behind and unreachable */
    CU_ASSERT_EQUAL(raft_propose_conf_change(c.nd[1].r, RAFT_CC_ADD_NODE, 4, NULL, 0), RAFT_OK);
    deliver(&c);
    CU_ASSERT_EQUAL(st_of(&c, 1).conf.n_voters, 4);
    /* 4 voters, quorum 3: with 2 cut off as well, nothing commits */
    isolate(&c, 2, true);
    uint64_t before = st_of(&c, 1).commit;
    propose_byte(&c, 1, 'c', 5);
    deliver(&c);
    CU_ASSERT_EQUAL(st_of(&c, 1).commit, before);
    /* the promoted member catches up and completes the quorum */
    isolate(&c, 4, false);
    for (int k = 0; k < 5; k++) {
        tick(&c, 1, 1);
        deliver(&c);
    }
    CU_ASSERT_TRUE(st_of(&c, 1).commit > before);
    CU_ASSERT_EQUAL(c.nd[4].applied, st_of(&c, 1).commit);
    CU_ASSERT_FALSE(st_of(&c, 4).is_learner);
    cl_free(&c);
}

/* ---- leadership transfer, forwarding, read index from a follower ------- */
static void test_transfer_and_forwarding(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    elect(&c, 1);
    /* a follower forwards proposals and reads to the leader */
    CU_ASSERT_EQUAL(propose_byte(&c, 2, 'f', 2), RAFT_OK);
    deliver(&c);
    uint64_t ci = st_of(&c, 1).commit;
    CU_ASSERT_EQUAL(c.nd[2].applied_byte[ci], 'f');
    CU_ASSERT_EQUAL(raft_read_index(c.nd[3].r, 55), RAFT_OK);
    deliver(&c);
    for (int k = 0; k < 2; k++) {
        tick(&c, 1, 1);
        deliver(&c);
    }
    CU_ASSERT_EQUAL_FATAL(c.nd[3].n_reads, 1);
    CU_ASSERT_EQUAL(c.nd[3].reads[0].ctx, 55);
    CU_ASSERT_EQUAL(c.nd[3].reads[0].index, ci);
    /* transfer to 3 while 3 is cut off: proposals are refused meanwhile */
    isolate(&c, 3, true);
    CU_ASSERT_EQUAL(raft_transfer_leader(c.nd[1].r, 3), RAFT_OK);
    CU_ASSERT_EQUAL(propose_byte(&c, 1, 'x', 2), RAFT_ERR_TRANSFER_IN_PROGRESS);
    deliver(&c);
    isolate(&c, 3, false);
    for (int k = 0; k < 3 && st_of(&c, 3).role != RAFT_LEADER; k++) {
        tick(&c, 1, 1);
        deliver(&c);
    }
    CU_ASSERT_EQUAL(st_of(&c, 3).role, RAFT_LEADER);
    CU_ASSERT_EQUAL(st_of(&c, 1).role, RAFT_FOLLOWER);
    CU_ASSERT_EQUAL(st_of(&c, 1).lead, 3);
    CU_ASSERT_EQUAL(propose_byte(&c, 1, 'y', 2), RAFT_OK); /* forwarded to 3 */
    deliver(&c);
    ci = st_of(&c, 3).commit;
    CU_ASSERT_EQUAL(c.nd[1].applied_byte[ci], 'y');
    cl_free(&c);
}

/* ---- ReadIndex batching: one heartbeat round for all queued reads ------- */
static void test_read_index_batch(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    elect(&c, 1);
    raft *r = c.nd[1].r;
    for (uint64_t k = 1; k <= 5; k++)
        CU_ASSERT_EQUAL(raft_read_index(r, 100 + k), RAFT_OK);
    raft_ready rd;
    raft_ready_get(r, &rd);
    size_t hb = 0;
    uint64_t round = 0;
    for (size_t i = 0; i < rd.n_msgs; i++)
        if (rd.msgs[i].type == RAFT_MSG_HEARTBEAT) {
            hb++;
            round = rd.msgs[i].ctx;
        }
    CU_ASSERT_EQUAL(hb, 2); /* one per follower, for all five reads */
    CU_ASSERT_EQUAL(rd.n_read_states, 0);
    raft_ready_advance(r, &rd);
    /* one follower's ack makes a quorum: all five are released at once */
    raft_msg ack = { .type = RAFT_MSG_HEARTBEAT_RESP, .from = 3, .to = 1,
                     .term = st_of(&c, 1).term, .ctx = round };
    CU_ASSERT_EQUAL(raft_step(r, &ack), RAFT_OK);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL_FATAL(rd.n_read_states, 5);
    for (size_t i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(rd.read_states[i].ctx, 101 + i);
        CU_ASSERT_EQUAL(rd.read_states[i].index, st_of(&c, 1).commit);
    }
    raft_ready_advance(r, &rd);
    /* an ack of an older round confirms nothing newer */
    CU_ASSERT_EQUAL(raft_read_index(r, 200), RAFT_OK);
    raft_ready_get(r, &rd);
    raft_ready_advance(r, &rd);
    CU_ASSERT_EQUAL(raft_step(r, &ack), RAFT_OK);
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(rd.n_read_states, 0);
    raft_ready_advance(r, &rd);
    drop_queue(&c);
    cl_free(&c);
}

/* ---- flow control: in-flight window by count and bytes ------------------ */
static size_t count_apps(const raft_ready *rd, uint64_t to)
{
    size_t n = 0;
    for (size_t i = 0; i < rd->n_msgs; i++)
        if (rd->msgs[i].type == RAFT_MSG_APP && rd->msgs[i].to == to && rd->msgs[i].n_entries)
            n++;
    return n;
}

static void test_inflight_window(void)
{
    cluster c;
    cl_init(&c, 3, true, true);
    c.max_msg_bytes = 100;
    for (int i = 1; i <= 3; i++) {
        node_crash(&c, i);
        node_boot(&c, i, false);
    }
    elect(&c, 1);
    propose_byte(&c, 1, 'p', 10); /* one round trip puts 2 and 3 in replicate */
    deliver(&c);
    raft *r = c.nd[1].r;
    isolate(&c, 3, true); /* 3 stops acking; 2 keeps going */
    /* 40 entries of 100 bytes: one MsgApp each; window is 256 by default,
     * so all go out to 3 at once, pipelined */
    for (int k = 0; k < 40; k++)
        propose_byte(&c, 1, 'q', 100);
    raft_ready rd;
    raft_ready_get(r, &rd);
    CU_ASSERT_EQUAL(count_apps(&rd, 3), 40);
    raft_ready_advance(r, &rd);
    raft_status st;
    raft_status_get(r, &st);
    for (uint32_t i = 0; i < st.n_progress; i++)
        if (st.progress[i].id == 3) {
            CU_ASSERT_EQUAL(st.progress[i].state, 1); /* replicate */
            CU_ASSERT_EQUAL(st.progress[i].inflight, 40);
        }
    cl_free(&c);

    /* the same with a window of 4 messages and 250 bytes */
    cluster d;
    cl_init(&d, 3, true, true);
    d.max_msg_bytes = 100;
    d.max_inflight_msgs = 4;
    d.max_inflight_bytes = 250;
    for (int i = 1; i <= 3; i++) {
        node_crash(&d, i);
        node_boot(&d, i, false);
    }
    elect(&d, 1);
    propose_byte(&d, 1, 'p', 10);
    deliver(&d);
    isolate(&d, 3, true);
    isolate(&d, 2, true);
    for (int k = 0; k < 40; k++)
        propose_byte(&d, 1, 'q', 100);
    raft_ready_get(d.nd[1].r, &rd);
    CU_ASSERT_EQUAL(count_apps(&rd, 3), 3); /* 3 x 100 bytes reach the 250 limit */
    CU_ASSERT_EQUAL(count_apps(&rd, 2), 3);
    raft_ready_advance(d.nd[1].r, &rd);
    cl_free(&d);
}

/* ---- proposals refused when too many bytes are uncommitted -------------- */
static void test_uncommitted_limit(void)
{
    raft_config cfg;
    raft_config_default(&cfg, 1, 3);
    cfg.max_uncommitted_bytes = 1000;
    raft_boot b;
    memset(&b, 0, sizeof(b));
    b.fresh = true;
    b.conf.n_voters = 1;
    b.conf.voters[0] = 1;
    raft *r;
    CU_ASSERT_EQUAL_FATAL(raft_new(&cfg, &b, &r), RAFT_OK);
    raft_campaign(r);
    int ok = 0, refused = 0;
    for (int k = 0; k < 20; k++) {
        uint8_t *d = calloc(1, 100);
        int rc = raft_propose(r, d, 100);
        if (rc == RAFT_OK)
            ok++;
        else {
            CU_ASSERT_EQUAL(rc, RAFT_ERR_TOO_MANY_UNCOMMITTED);
            refused++;
            free(d);
        }
    }
    CU_ASSERT_EQUAL(ok, 10);
    CU_ASSERT_EQUAL(refused, 10);
    /* once applied, there is room again */
    raft_ready rd;
    raft_ready_get(r, &rd);
    uint64_t li = rd.entries[rd.n_entries - 1].index, lt = rd.entries[rd.n_entries - 1].term;
    raft_ready_advance(r, &rd);
    raft_persisted(r, li, lt);
    raft_ready_get(r, &rd);
    CU_ASSERT_TRUE(rd.n_committed >= 10);
    raft_ready_advance(r, &rd);
    uint8_t *d = calloc(1, 100);
    CU_ASSERT_EQUAL(raft_propose(r, d, 100), RAFT_OK);
    raft_free(r);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("raft_scenarios", NULL, NULL);
    CU_add_test(s, "single member: fresh boot, term 2, commit on persist, read index",
                test_single_member_fresh_boot);
    CU_add_test(s, "single member: restart with applied > hard-state commit",
                test_single_member_restart_applied_ahead);
    CU_add_test(s, "durability: votes after persist, acks after raft_persisted",
                test_durability_rules);
    CU_add_test(s, "figure 8 of the Raft paper", test_figure8);
    CU_add_test(s, "partitioned old leader", test_partitioned_old_leader);
    CU_add_test(s, "member restarting with an empty disk", test_restart_empty_disk);
    CU_add_test(s, "disruptive rejoining member stopped by pre-vote",
                test_disruptive_member_prevote);
    CU_add_test(s, "leader removing itself", test_leader_removes_itself);
    CU_add_test(s, "learner promoted while behind", test_learner_promoted_behind);
    CU_add_test(s, "leadership transfer, forwarded proposals and reads",
                test_transfer_and_forwarding);
    CU_add_test(s, "read index: one heartbeat round for a batch of reads", test_read_index_batch);
    CU_add_test(s, "flow control: in-flight window by count and bytes", test_inflight_window);
    CU_add_test(s, "proposals refused over max_uncommitted_bytes", test_uncommitted_limit);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
