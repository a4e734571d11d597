/* membership.c — one-at-a-time configuration changes (thesis §4.1), learners.
 *
 * A conf-change entry takes effect when it is handed out in committed
 * entries (as etcd's ApplyConfChange after apply). The leader refuses a new
 * change while one is unapplied (pending_conf_index > applied), so any two
 * configurations in use overlap in a majority. Payload: [u8 type][u64 id LE]
 * [ctx bytes]. Each applied change is recorded with its index so that a
 * later compaction knows the membership as of the snapshot's index. */
#include "raft/raft_int.h"

static bool ids_has(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static void ids_del(uint64_t *ids, uint32_t *n, uint64_t id)
{
    for (uint32_t i = 0; i < *n; i++)
        if (ids[i] == id) {
            ids[i] = ids[--*n];
            return;
        }
}

bool raft_conf_is_voter(const raft_conf_state *c, uint64_t id)
{
    return ids_has(c->voters, c->n_voters, id);
}

bool raft_conf_is_learner(const raft_conf_state *c, uint64_t id)
{
    return ids_has(c->learners, c->n_learners, id);
}

bool raft_promotable(const raft *r)
{
    return raft_conf_is_voter(&r->conf, r->id);
}

size_t raft_quorum(const raft *r)
{
    return r->conf.n_voters / 2 + 1;
}

/* Rebuilds the progress table for configuration c, keeping what is known
 * about members that stay. */
int raft_conf_apply_state(raft *r, const raft_conf_state *c)
{
    raft_progress old[RAFT_MAX_MEMBERS];
    uint32_t n_old = r->n_prs;
    memcpy(old, r->prs, sizeof(old));
    r->conf = *c;
    r->n_prs = 0;
    for (uint32_t k = 0; k < c->n_voters + c->n_learners; k++) {
        bool learner = k >= c->n_voters;
        uint64_t id = learner ? c->learners[k - c->n_voters] : c->voters[k];
        raft_progress *pr = &r->prs[r->n_prs++];
        bool found = false;
        for (uint32_t i = 0; i < n_old; i++)
            if (old[i].id == id) {
                *pr = old[i];
                old[i].id = RAFT_NONE; /* ownership of inflights moved */
                found = true;
                break;
            }
        if (!found) {
            memset(pr, 0, sizeof(*pr));
            pr->id = id;
            pr->next = r->last_index + 1;
            pr->match = id == r->id ? r->persisted : 0;
            pr->recent_active = true;
        }
        pr->learner = learner;
    }
    for (uint32_t i = 0; i < n_old; i++)
        if (old[i].id != RAFT_NONE)
            raft_inflights_free(&old[i].ins);
    return RAFT_OK;
}

static int hist_push(raft *r, uint64_t index)
{
    if (r->n_hist == r->hist_cap) {
        size_t cap = r->hist_cap ? r->hist_cap * 2 : 8;
        raft_conf_hist *h = realloc(r->hist, cap * sizeof(*h));
        if (!h)
            return RAFT_ERR_NOMEM;
        r->hist = h;
        r->hist_cap = cap;
    }
    r->hist[r->n_hist].index = index;
    r->hist[r->n_hist].conf = r->conf;
    r->n_hist++;
    return RAFT_OK;
}

/* Membership as of index (index >= snap_index). */
void raft_conf_at(const raft *r, uint64_t index, raft_conf_state *out)
{
    *out = r->snap_meta.conf;
    for (size_t i = 0; i < r->n_hist; i++)
        if (r->hist[i].index <= index)
            *out = r->hist[i].conf;
}

/* Forgets history entries made obsolete by a snapshot at index. */
void raft_hist_compact(raft *r, uint64_t index)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n_hist; i++)
        if (r->hist[i].index > index)
            r->hist[k++] = r->hist[i];
    r->n_hist = k;
}

int raft_conf_change_decode(const uint8_t *buf, size_t len, raft_conf_change *out)
{
    if (!buf || len < 9 || buf[0] > RAFT_CC_ADD_LEARNER || len - 9 > UINT32_MAX)
        return RAFT_ERR_INVALID;
    out->type = buf[0];
    out->node_id = 0;
    for (int i = 0; i < 8; i++)
        out->node_id |= (uint64_t)buf[1 + i] << (8 * i);
    out->ctx_len = (uint32_t)(len - 9);
    out->ctx = buf + 9;
    return out->node_id == RAFT_NONE ? RAFT_ERR_INVALID : RAFT_OK;
}

int raft_conf_change_encode(uint8_t type, uint64_t node_id, const uint8_t *ctx,
                            uint32_t ctx_len, uint8_t **out, uint32_t *out_len)
{
    uint8_t *b = malloc((size_t)ctx_len + 9);
    if (!b)
        return RAFT_ERR_NOMEM;
    b[0] = type;
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(node_id >> (8 * i));
    if (ctx_len)
        memcpy(b + 9, ctx, ctx_len);
    *out = b;
    *out_len = ctx_len + 9;
    return RAFT_OK;
}

static void conf_mutate(raft_conf_state *c, const raft_conf_change *cc)
{
    switch (cc->type) {
    case RAFT_CC_ADD_NODE:
        ids_del(c->learners, &c->n_learners, cc->node_id);
        if (!ids_has(c->voters, c->n_voters, cc->node_id) &&
            c->n_voters + c->n_learners < RAFT_MAX_MEMBERS)
            c->voters[c->n_voters++] = cc->node_id;
        break;
    case RAFT_CC_ADD_LEARNER:
        /* demoting a voter is not supported one-at-a-time: ignore it */
        if (!ids_has(c->voters, c->n_voters, cc->node_id) &&
            !ids_has(c->learners, c->n_learners, cc->node_id) &&
            c->n_voters + c->n_learners < RAFT_MAX_MEMBERS)
            c->learners[c->n_learners++] = cc->node_id;
        break;
    case RAFT_CC_REMOVE_NODE:
        ids_del(c->voters, &c->n_voters, cc->node_id);
        ids_del(c->learners, &c->n_learners, cc->node_id);
        break;
    }
}

/* Applies the conf-change entry e (being handed out as committed). */
int raft_conf_apply_entry(raft *r, const raft_entry *e)
{
    raft_conf_change cc;
    if (raft_conf_change_decode(e->data, e->len, &cc) != RAFT_OK)
        return RAFT_ERR_INVALID; /* unreadable change: a no-op, like etcd */
    raft_conf_state c = r->conf;
    conf_mutate(&c, &cc);
    raft_conf_apply_state(r, &c);
    int rc = hist_push(r, e->index);
    r->conf_changed = true;
    if (r->lead_transferee && !raft_conf_is_voter(&r->conf, r->lead_transferee))
        r->lead_transferee = RAFT_NONE;
    if (r->role == RAFT_LEADER) {
        if (!raft_conf_is_voter(&r->conf, r->id)) {
            /* A leader removing itself (thesis §4.2.2): tell the others the
             * commit index, then step down and stay quiet. */
            raft_bcast_append(r);
            raft_become_follower(r, r->term, RAFT_NONE);
        } else if (raft_maybe_commit(r)) {
            raft_bcast_append(r);
        } else {
            r->need_bcast = true;
        }
    }
    return rc;
}
