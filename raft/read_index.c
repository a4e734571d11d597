/* read_index.c — linearizable reads without log writes (thesis §6.4).
 *
 * A read accepted by the leader records the commit index at that moment.
 * Reads accepted since the last round are stamped with a new round number,
 * and ONE heartbeat broadcast carrying that number confirms all of them
 * (batched: the round starts when the next ready is collected). A follower's
 * ack of round k confirms every read stamped <= k, so periodic heartbeats
 * confirm too. Until the leader has committed an entry of its own term its
 * commit index may be stale, so reads wait (index 0) until then. Reads
 * forwarded by followers are answered with MSG_READ_INDEX_RESP. */
#include "raft/raft_int.h"

static raft_read_req *req_at(raft *r, size_t i)
{
    return &r->reads[(r->reads_head + i) % r->reads_cap];
}

void raft_reads_reset(raft *r)
{
    r->reads_head = 0;
    r->reads_count = 0;
    r->need_read_round = false;
}

static bool committed_in_term(const raft *r)
{
    return raft_log_term(r, r->commit) == r->term;
}

int raft_read_state_push(raft *r, uint64_t index, uint64_t ctx)
{
    if (r->n_read_states == r->read_states_cap) {
        size_t cap = r->read_states_cap ? r->read_states_cap * 2 : 64;
        raft_read_state *n = realloc(r->read_states, cap * sizeof(*n));
        if (!n)
            return RAFT_ERR_NOMEM;
        r->read_states = n;
        r->read_states_cap = cap;
    }
    r->read_states[r->n_read_states].index = index;
    r->read_states[r->n_read_states].ctx = ctx;
    r->n_read_states++;
    return RAFT_OK;
}

static void release(raft *r, const raft_read_req *q)
{
    if (q->from == r->id) {
        if (raft_read_state_push(r, q->index, q->ctx) != RAFT_OK)
            r->nomem = true;
        return;
    }
    raft_msg *m = raft_send(r, RAFT_MSG_READ_INDEX_RESP, q->from, false);
    if (m) {
        m->index = q->index;
        m->ctx = q->ctx;
    }
}

int raft_read_req_add(raft *r, uint64_t ctx, uint64_t from)
{
    raft_read_req q = { .ctx = ctx, .from = from };
    if (committed_in_term(r))
        q.index = r->commit;
    if (q.index && r->conf.n_voters == 1 && raft_conf_is_voter(&r->conf, r->id)) {
        release(r, &q); /* a single voter is its own quorum */
        return RAFT_OK;
    }
    if (r->reads_count == r->reads_cap) {
        size_t cap = r->reads_cap ? r->reads_cap * 2 : 64;
        raft_read_req *n = malloc(cap * sizeof(*n));
        if (!n)
            return RAFT_ERR_NOMEM;
        for (size_t i = 0; i < r->reads_count; i++)
            n[i] = *req_at(r, i);
        free(r->reads);
        r->reads = n;
        r->reads_cap = cap;
        r->reads_head = 0;
    }
    *req_at(r, r->reads_count++) = q;
    if (q.index)
        r->need_read_round = true;
    return RAFT_OK;
}

/* The leader's first commit in its term: waiting reads get an index. */
void raft_reads_on_commit(raft *r)
{
    if (!committed_in_term(r))
        return;
    bool single = r->conf.n_voters == 1 && raft_conf_is_voter(&r->conf, r->id);
    for (size_t i = 0; i < r->reads_count; i++) {
        raft_read_req *q = req_at(r, i);
        if (!q->index) {
            q->index = r->commit;
            r->need_read_round = true;
        }
    }
    if (single) {
        while (r->reads_count) {
            release(r, req_at(r, 0));
            r->reads_head = (r->reads_head + 1) % r->reads_cap;
            r->reads_count--;
        }
        r->need_read_round = false;
    }
}

/* Stamps unstamped reads with a new round and broadcasts it. */
void raft_reads_flush_round(raft *r)
{
    r->need_read_round = false;
    if (r->role != RAFT_LEADER)
        return;
    r->read_round++;
    for (size_t i = 0; i < r->reads_count; i++) {
        raft_read_req *q = req_at(r, i);
        if (q->index && !q->round)
            q->round = r->read_round;
    }
    raft_bcast_heartbeat(r, r->read_round);
}

/* A heartbeat ack advanced some member's round: release confirmed reads. */
void raft_reads_on_round(raft *r)
{
    uint64_t v[RAFT_MAX_MEMBERS];
    size_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const raft_progress *pr = &r->prs[i];
        if (pr->learner)
            continue;
        uint64_t x = pr->id == r->id ? r->read_round : pr->read_round;
        size_t k = n++;
        while (k > 0 && v[k - 1] < x) {
            v[k] = v[k - 1];
            k--;
        }
        v[k] = x;
    }
    size_t q = raft_quorum(r);
    if (n < q)
        return;
    uint64_t confirmed = v[q - 1];
    while (r->reads_count) {
        raft_read_req *h = req_at(r, 0);
        if (!h->round || h->round > confirmed)
            break;
        release(r, h);
        r->reads_head = (r->reads_head + 1) % r->reads_cap;
        r->reads_count--;
    }
}

void raft_handle_read_index(raft *r, const raft_msg *m)
{
    if (r->role != RAFT_LEADER)
        return;
    if (raft_read_req_add(r, m->ctx, m->from) != RAFT_OK)
        r->nomem = true;
}

void raft_handle_read_index_resp(raft *r, const raft_msg *m)
{
    if (m->reject)
        return;
    if (raft_read_state_push(r, m->index, m->ctx) != RAFT_OK)
        r->nomem = true;
}
