/* raft.c — construction, the step dispatcher, the public calls, the ready.
 *
 * Everything the core emits between two readies accumulates in growable
 * arrays owned by the core (messages, entry structs for messages and ready
 * lists, read states, garbage); they are reset, not freed, at advance, so
 * after warm-up a steady stream of proposals allocates nothing here beyond
 * the follower's one data block per received MsgApp. Work that batches well
 * is deferred to raft_ready_get: one MsgApp broadcast for all proposals
 * since the last ready, one heartbeat round for all reads. */
#include "raft/raft_int.h"

char raft_owner_malloc;

const char *raft_rc_str(int rc)
{
    static const char *s[] = { "ok", "proposal dropped", "no leader", "not leader",
                               "leadership transfer in progress", "conf change pending",
                               "too many uncommitted bytes", "compacted", "unavailable",
                               "invalid", "out of memory", "removed" };
    return rc >= 0 && rc <= RAFT_ERR_REMOVED ? s[rc] : "unknown";
}

const char *raft_role_str(int role)
{
    static const char *s[] = { "follower", "pre-candidate", "candidate", "leader" };
    return role >= 0 && role <= RAFT_LEADER ? s[role] : "unknown";
}

void raft_config_default(raft_config *cfg, uint64_t id, uint64_t seed)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = id;
    cfg->seed = seed;
    cfg->election_tick = 10;
    cfg->heartbeat_tick = 1;
    cfg->pre_vote = true;
    cfg->check_quorum = true;
    cfg->max_inflight_msgs = 256;
    cfg->max_msg_bytes = 1u << 20;
}

/* splitmix64: the only randomness, seeded by the caller. */
uint64_t raft_rand(raft *r)
{
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void raft_reset_randomized_timeout(raft *r)
{
    int e = r->cfg.election_tick;
    r->randomized_timeout = e + (int)(raft_rand(r) % (uint64_t)e);
}

raft_msg *raft_msg_push(raft *r, bool after)
{
    raft_msg **arr = after ? &r->msgs_after : &r->msgs;
    size_t *n = after ? &r->n_msgs_after : &r->n_msgs;
    size_t *cap = after ? &r->msgs_after_cap : &r->msgs_cap;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        raft_msg *na = realloc(*arr, c * sizeof(*na));
        if (!na) {
            r->nomem = true;
            return NULL;
        }
        *arr = na;
        *cap = c;
    }
    raft_msg *m = &(*arr)[(*n)++];
    memset(m, 0, sizeof(*m));
    return m;
}

/* The returned pointer is valid until the next raft_send. */
raft_msg *raft_send(raft *r, uint8_t type, uint64_t to, bool after)
{
    raft_msg *m = raft_msg_push(r, after);
    if (m) {
        m->type = type;
        m->from = r->id;
        m->to = to;
        m->term = r->term;
    }
    return m;
}

raft_entry *raft_ents_alloc(raft *r, size_t n)
{
    for (raft_ent_block *b = r->ecur; b; b = b->next) {
        if (b->cap - b->used >= n) {
            raft_entry *e = &b->ents[b->used];
            b->used += n;
            r->ecur = b;
            return e;
        }
        if (b->used == 0)
            break; /* an unused block too small: insert a bigger one */
    }
    size_t cap = n > 4096 ? n : 4096;
    raft_ent_block *nb = malloc(sizeof(*nb) + cap * sizeof(raft_entry));
    if (!nb) {
        r->nomem = true;
        return NULL;
    }
    nb->cap = cap;
    nb->used = n;
    if (r->ecur) {
        nb->next = r->ecur->next;
        r->ecur->next = nb;
    } else {
        nb->next = r->eblocks;
        r->eblocks = nb;
    }
    r->ecur = nb;
    return nb->ents;
}

static void ents_reset(raft *r)
{
    for (raft_ent_block *b = r->eblocks; b; b = b->next)
        b->used = 0;
    r->ecur = r->eblocks;
}

void raft_data_free(raft *r, uint8_t *data, void *owner)
{
    if (!data)
        return;
    if (owner == NULL) {
        if (r->cfg.free_data)
            r->cfg.free_data(r->cfg.free_ctx, data);
        else
            free(data);
    } else if (owner == &raft_owner_malloc) {
        free(data);
    } else {
        raft_blk *b = owner;
        if (--b->refs == 0)
            free(b);
    }
}

void raft_garbage_add(raft *r, uint8_t *data, void *owner)
{
    if (!data)
        return;
    if (r->n_garbage == r->garbage_cap) {
        size_t c = r->garbage_cap ? r->garbage_cap * 2 : 64;
        raft_garbage *g = realloc(r->garbage, c * sizeof(*g));
        if (!g) {
            /* cannot defer: leaking is safer than a dangling pointer */
            r->nomem = true;
            return;
        }
        r->garbage = g;
        r->garbage_cap = c;
    }
    r->garbage[r->n_garbage].data = data;
    r->garbage[r->n_garbage].owner = owner;
    r->n_garbage++;
}

static void garbage_collect(raft *r)
{
    for (size_t i = 0; i < r->n_garbage; i++)
        raft_data_free(r, r->garbage[i].data, r->garbage[i].owner);
    r->n_garbage = 0;
}

/* ---- construction -------------------------------------------------------- */

static int boot_fresh(raft *r, const raft_boot *b)
{
    const raft_conf_state *c = &b->conf;
    if (c->n_voters == 0 || c->n_voters + c->n_learners > RAFT_MAX_MEMBERS)
        return RAFT_ERR_INVALID;
    r->term = 1;
    r->first_index = 1;
    r->unstable = 1;
    for (uint32_t k = 0; k < c->n_voters + c->n_learners; k++) {
        bool learner = k >= c->n_voters;
        uint64_t id = learner ? c->learners[k - c->n_voters] : c->voters[k];
        raft_entry e = { .term = 1, .index = r->last_index + 1, .type = RAFT_ENTRY_CONF_CHANGE,
                         .owner = &raft_owner_malloc };
        int rc = raft_conf_change_encode(learner ? RAFT_CC_ADD_LEARNER : RAFT_CC_ADD_NODE, id,
                                         NULL, 0, &e.data, &e.len);
        if (rc == RAFT_OK && (rc = raft_log_append(r, &e)) != RAFT_OK)
            free(e.data);
        if (rc != RAFT_OK)
            return rc;
        raft_conf_apply_entry(r, &e);
    }
    r->commit = r->last_index;
    r->conf_applied_to = r->last_index;
    return RAFT_OK;
}

static int boot_restart(raft *r, const raft_boot *b)
{
    r->snap_index = b->snap.index;
    r->snap_term = b->snap.term;
    r->first_index = b->snap.index + 1;
    r->last_index = b->snap.index;
    r->snap_meta = b->snap;
    r->snap_data = b->snap_data;
    r->snap_len = b->snap_len;
    r->snap_owner = NULL;
    raft_conf_apply_state(r, &b->snap.conf);
    for (size_t i = 0; i < b->n_entries; i++) {
        raft_entry e = b->entries[i];
        e.owner = NULL; /* the caller's bytes: freed with cfg->free_data */
        int rc = raft_log_append(r, &e);
        if (rc != RAFT_OK)
            return rc;
    }
    r->term = b->hs.term;
    r->vote = b->hs.vote;
    r->persisted = r->last_index;
    r->unstable = r->last_index + 1;
    uint64_t applied = r->cfg.applied > r->last_index ? r->last_index : r->cfg.applied;
    if (applied < r->snap_index)
        applied = r->snap_index;
    r->applied = applied;
    r->commit = b->hs.commit > applied ? b->hs.commit : applied;
    if (r->commit > r->last_index)
        r->commit = r->last_index;
    for (uint64_t i = r->first_index; i <= applied; i++) {
        const raft_entry *e = raft_log_at(r, i);
        if (e->type == RAFT_ENTRY_CONF_CHANGE)
            raft_conf_apply_entry(r, e);
    }
    r->conf_applied_to = applied;
    r->conf_changed = false;
    r->prev_hs = b->hs;
    return RAFT_OK;
}

int raft_new(const raft_config *cfg, const raft_boot *boot, raft **out)
{
    if (!cfg || !boot || !out || cfg->id == RAFT_NONE || cfg->election_tick <= 0 ||
        cfg->heartbeat_tick <= 0 || cfg->heartbeat_tick >= cfg->election_tick)
        return RAFT_ERR_INVALID;
    raft *r = calloc(1, sizeof(*r));
    if (!r)
        return RAFT_ERR_NOMEM;
    r->cfg = *cfg;
    if (!r->cfg.max_inflight_msgs)
        r->cfg.max_inflight_msgs = 256;
    if (!r->cfg.max_msg_bytes)
        r->cfg.max_msg_bytes = 1u << 20;
    r->id = cfg->id;
    r->rng = cfg->seed ^ (cfg->id * 0xD6E8FEB86659FD93ull);
    int rc = raft_log_init(r, 256);
    if (rc == RAFT_OK)
        rc = boot->fresh ? boot_fresh(r, boot) : boot_restart(r, boot);
    if (rc != RAFT_OK) {
        raft_free(r);
        return rc;
    }
    r->role = RAFT_FOLLOWER;
    r->lead = RAFT_NONE;
    raft_reset_randomized_timeout(r);
    *out = r;
    return RAFT_OK;
}

void raft_free(raft *r)
{
    if (!r)
        return;
    garbage_collect(r);
    raft_log_free(r);
    if (r->snap_data)
        raft_data_free(r, r->snap_data, r->snap_owner);
    garbage_collect(r);
    free(r->in_buf);
    for (uint32_t i = 0; i < r->n_prs; i++)
        raft_inflights_free(&r->prs[i].ins);
    while (r->eblocks) {
        raft_ent_block *b = r->eblocks;
        r->eblocks = b->next;
        free(b);
    }
    free(r->garbage);
    free(r->msgs);
    free(r->msgs_after);
    free(r->reads);
    free(r->read_states);
    free(r->hist);
    free(r);
}

/* ---- driving ------------------------------------------------------------- */

int raft_tick(raft *r)
{
    if (r->role == RAFT_LEADER)
        raft_tick_heartbeat(r);
    else
        raft_tick_election(r);
    return RAFT_OK;
}

static bool msg_valid(const raft *r, const raft_msg *m)
{
    if (m->from == RAFT_NONE || m->from == r->id || m->to != r->id || m->type == 0 ||
        m->type >= RAFT_MSG_TYPE_MAX)
        return false;
    if (m->n_entries && !m->entries)
        return false;
    for (size_t i = 0; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        if (e->len && !e->data)
            return false;
        if (m->type == RAFT_MSG_APP &&
            (e->index != m->index + 1 + i || e->term > m->term || e->term < m->log_term ||
             (i && e->term < m->entries[i - 1].term)))
            return false;
    }
    if (m->type == RAFT_MSG_SNAP && m->snap_len && !m->snap_data)
        return false;
    return true;
}

/* §5.1 term rules, with pre-vote and the check-quorum lease. Returns false
 * if the message is to be ignored. */
static bool step_term(raft *r, const raft_msg *m)
{
    uint8_t t = m->type;
    if (m->term > r->term) {
        if (t == RAFT_MSG_VOTE || t == RAFT_MSG_PRE_VOTE) {
            bool in_lease = r->cfg.check_quorum && r->lead != RAFT_NONE &&
                            r->election_elapsed < r->cfg.election_tick;
            if (in_lease && m->ctx != 1)
                return false;
        }
        if (t == RAFT_MSG_PRE_VOTE || (t == RAFT_MSG_PRE_VOTE_RESP && !m->reject))
            return true;
        bool from_leader = t == RAFT_MSG_APP || t == RAFT_MSG_HEARTBEAT || t == RAFT_MSG_SNAP;
        int elapsed = r->election_elapsed, timeout = r->randomized_timeout;
        raft_become_follower(r, m->term, from_leader ? m->from : RAFT_NONE);
        if (t == RAFT_MSG_VOTE) {
            /* Only a granted vote restarts the election timer (Figure 2 of
             * the paper); a candidate with a stale log that we reject must
             * not keep us from timing out, or it can starve the election
             * without pre-vote (sim seed 304958). */
            r->election_elapsed = elapsed;
            r->randomized_timeout = timeout;
        }
        return true;
    }
    if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (t == RAFT_MSG_APP || t == RAFT_MSG_HEARTBEAT)) {
            raft_send(r, RAFT_MSG_APP_RESP, m->from, false); /* depose it */
        } else if (t == RAFT_MSG_PRE_VOTE) {
            raft_msg *resp = raft_send(r, RAFT_MSG_PRE_VOTE_RESP, m->from, false);
            if (resp)
                resp->reject = true;
        }
        return false;
    }
    return true;
}

static void follow(raft *r, uint64_t lead)
{
    if (r->role != RAFT_FOLLOWER || r->lead != lead)
        raft_become_follower(r, r->term, lead);
    r->election_elapsed = 0;
}

static void transfer_to(raft *r, uint64_t to)
{
    raft_progress *pr = raft_pr_get(r, to);
    if (!pr || pr->learner || to == r->id || r->lead_transferee == to)
        return;
    r->lead_transferee = to;
    r->election_elapsed = 0; /* the transfer times out after election_tick */
    if (pr->match == r->last_index)
        raft_send(r, RAFT_MSG_TIMEOUT_NOW, to, false);
    else
        raft_send_append(r, pr, true);
}

static void step_leader(raft *r, const raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APP_RESP: raft_handle_append_resp(r, m); break;
    case RAFT_MSG_HEARTBEAT_RESP: raft_handle_heartbeat_resp(r, m); break;
    case RAFT_MSG_SNAP_RESP: raft_handle_snap_resp(r, m); break;
    case RAFT_MSG_PROP: raft_handle_prop(r, m); break;
    case RAFT_MSG_READ_INDEX: raft_handle_read_index(r, m); break;
    case RAFT_MSG_TRANSFER_LEADER: transfer_to(r, m->from); break;
    default: break;
    }
}

static void step_follower(raft *r, const raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APP:
        follow(r, m->from);
        raft_handle_append(r, m);
        break;
    case RAFT_MSG_HEARTBEAT:
        follow(r, m->from);
        raft_handle_heartbeat(r, m);
        break;
    case RAFT_MSG_SNAP:
        follow(r, m->from);
        raft_handle_snap(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        if (r->role == RAFT_FOLLOWER)
            raft_campaign_start(r, false, true);
        break;
    case RAFT_MSG_READ_INDEX_RESP: raft_handle_read_index_resp(r, m); break;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PRE_VOTE_RESP: raft_step_vote_resp(r, m); break;
    default: break;
    }
}

int raft_step(raft *r, const raft_msg *m)
{
    if (!m || !msg_valid(r, m))
        return RAFT_ERR_INVALID;
    r->nomem = false;
    if (step_term(r, m)) {
        if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PRE_VOTE)
            raft_step_vote(r, m);
        else if (r->role == RAFT_LEADER)
            step_leader(r, m);
        else
            step_follower(r, m);
    }
    return r->nomem ? RAFT_ERR_NOMEM : RAFT_OK;
}

static int propose(raft *r, uint8_t *data, uint32_t len);

int raft_propose(raft *r, uint8_t *data, uint32_t len)
{
    if (len && !data)
        return RAFT_ERR_INVALID;
    int rc = propose(r, len ? data : NULL, len);
    if (rc == RAFT_OK && !len && data)
        raft_garbage_add(r, data, NULL); /* nothing to keep, but it is ours now */
    return rc;
}

static int propose(raft *r, uint8_t *data, uint32_t len)
{
    if (r->role != RAFT_LEADER) {
        if (r->role != RAFT_FOLLOWER || r->lead == RAFT_NONE)
            return RAFT_ERR_NO_LEADER;
        raft_entry *e = raft_ents_alloc(r, 1);
        raft_msg *m = e ? raft_send(r, RAFT_MSG_PROP, r->lead, false) : NULL;
        if (!m)
            return RAFT_ERR_NOMEM;
        memset(e, 0, sizeof(*e));
        e->len = len;
        e->data = len ? data : NULL;
        m->entries = e;
        m->n_entries = 1;
        raft_garbage_add(r, data, NULL); /* freed once encoded, at advance */
        return RAFT_OK;
    }
    if (!raft_pr_get(r, r->id))
        return RAFT_ERR_REMOVED;
    if (r->lead_transferee != RAFT_NONE)
        return RAFT_ERR_TRANSFER_IN_PROGRESS;
    if (r->cfg.max_uncommitted_bytes && r->uncommitted_bytes &&
        r->uncommitted_bytes + len > r->cfg.max_uncommitted_bytes)
        return RAFT_ERR_TOO_MANY_UNCOMMITTED;
    int rc = raft_append_local(r, RAFT_ENTRY_NORMAL, data, len, NULL);
    if (rc == RAFT_OK)
        r->uncommitted_bytes += len;
    return rc;
}

int raft_propose_conf_change(raft *r, uint8_t type, uint64_t node_id, const uint8_t *ctx,
                             uint32_t ctx_len)
{
    if (type > RAFT_CC_ADD_LEARNER || node_id == RAFT_NONE || (ctx_len && !ctx))
        return RAFT_ERR_INVALID;
    if (r->role != RAFT_LEADER)
        return r->lead == RAFT_NONE ? RAFT_ERR_NO_LEADER : RAFT_ERR_NOT_LEADER;
    if (r->lead_transferee != RAFT_NONE)
        return RAFT_ERR_TRANSFER_IN_PROGRESS;
    if (r->pending_conf_index > r->applied)
        return RAFT_ERR_CONF_CHANGE_PENDING;
    if (type != RAFT_CC_REMOVE_NODE &&
        r->conf.n_voters + r->conf.n_learners >= RAFT_MAX_MEMBERS && !raft_pr_get(r, node_id))
        return RAFT_ERR_INVALID;
    uint8_t *data;
    uint32_t len;
    int rc = raft_conf_change_encode(type, node_id, ctx, ctx_len, &data, &len);
    if (rc != RAFT_OK)
        return rc;
    rc = raft_append_local(r, RAFT_ENTRY_CONF_CHANGE, data, len, &raft_owner_malloc);
    if (rc != RAFT_OK) {
        free(data);
        return rc;
    }
    r->pending_conf_index = r->last_index;
    return RAFT_OK;
}

int raft_read_index(raft *r, uint64_t ctx)
{
    if (r->role == RAFT_LEADER)
        return raft_read_req_add(r, ctx, r->id);
    if (r->role != RAFT_FOLLOWER || r->lead == RAFT_NONE)
        return RAFT_ERR_NO_LEADER;
    raft_msg *m = raft_send(r, RAFT_MSG_READ_INDEX, r->lead, false);
    if (!m)
        return RAFT_ERR_NOMEM;
    m->ctx = ctx;
    return RAFT_OK;
}

int raft_campaign(raft *r)
{
    if (r->role == RAFT_LEADER)
        return RAFT_OK;
    if (!raft_promotable(r))
        return RAFT_ERR_REMOVED;
    raft_campaign_start(r, r->cfg.pre_vote, false);
    return RAFT_OK;
}

int raft_transfer_leader(raft *r, uint64_t to)
{
    if (r->role != RAFT_LEADER) {
        if (to != r->id || r->lead == RAFT_NONE)
            return r->lead == RAFT_NONE ? RAFT_ERR_NO_LEADER : RAFT_ERR_NOT_LEADER;
        return raft_send(r, RAFT_MSG_TRANSFER_LEADER, r->lead, false) ? RAFT_OK : RAFT_ERR_NOMEM;
    }
    if (to == r->id)
        return RAFT_OK;
    if (!raft_conf_is_voter(&r->conf, to))
        return RAFT_ERR_INVALID;
    transfer_to(r, to);
    return RAFT_OK;
}

/* ---- ready --------------------------------------------------------------- */

static uint64_t apply_limit(const raft *r)
{
    return r->commit < r->persisted ? r->commit : r->persisted;
}

bool raft_has_ready(const raft *r)
{
    if ((r->need_bcast && r->role == RAFT_LEADER) || r->need_read_round)
        return true;
    if (r->role != r->prev_role || r->lead != r->prev_lead)
        return true;
    if (r->unstable <= r->last_index || r->n_msgs || r->n_msgs_after || r->n_read_states)
        return true;
    if (r->term != r->prev_hs.term || r->vote != r->prev_hs.vote || r->commit != r->prev_hs.commit)
        return true;
    return r->applied < apply_limit(r) || r->snap_pending_ready || r->conf_changed;
}

static void ready_committed(raft *r, raft_ready *rd)
{
    uint64_t lo = r->applied + 1, hi = apply_limit(r);
    size_t max_bytes = r->cfg.max_committed_bytes_per_ready;
    size_t n = 0, bytes = 0;
    for (uint64_t i = lo; i <= hi; i++) {
        const raft_entry *e = raft_log_at(r, i);
        if (n && max_bytes && bytes + e->len > max_bytes)
            break;
        bytes += e->len;
        n++;
    }
    r->ready_applied_to = r->applied;
    if (!n)
        return;
    raft_entry *out = raft_ents_alloc(r, n);
    if (!out)
        return;
    for (size_t k = 0; k < n; k++) {
        out[k] = *raft_log_at(r, lo + k);
        if (out[k].type == RAFT_ENTRY_CONF_CHANGE && out[k].index > r->conf_applied_to) {
            r->conf_applied_to = out[k].index;
            raft_conf_apply_entry(r, &out[k]);
        }
    }
    if (r->role == RAFT_LEADER)
        r->uncommitted_bytes = r->uncommitted_bytes > bytes ? r->uncommitted_bytes - bytes : 0;
    rd->committed_entries = out;
    rd->n_committed = n;
    r->ready_applied_to = lo + n - 1;
}

void raft_ready_get(raft *r, raft_ready *rd)
{
    memset(rd, 0, sizeof(*rd));
    ready_committed(r, rd); /* first: applying conf changes may emit messages */
    if (r->role == RAFT_LEADER && r->need_bcast)
        raft_bcast_append(r);
    if (r->need_read_round)
        raft_reads_flush_round(r);
    r->ready_stable_to = r->unstable - 1;
    if (r->unstable <= r->last_index) {
        size_t n = (size_t)(r->last_index - r->unstable + 1);
        raft_entry *out = raft_ents_alloc(r, n);
        if (out) {
            for (size_t k = 0; k < n; k++)
                out[k] = *raft_log_at(r, r->unstable + k);
            rd->entries = out;
            rd->n_entries = n;
            r->ready_stable_to = r->last_index;
        }
    }
    rd->hard_state = (raft_hard_state){ r->term, r->vote, r->commit };
    rd->hard_state_changed = memcmp(&rd->hard_state, &r->prev_hs, sizeof(rd->hard_state)) != 0;
    rd->soft_state_changed = r->role != r->prev_role || r->lead != r->prev_lead;
    rd->lead = r->lead;
    rd->role = r->role;
    if (r->snap_pending_ready)
        rd->snapshot = &r->ready_snap;
    rd->msgs = r->msgs;
    rd->n_msgs = r->n_msgs;
    rd->msgs_after_persist = r->msgs_after;
    rd->n_msgs_after_persist = r->n_msgs_after;
    rd->read_states = r->read_states;
    rd->n_read_states = r->n_read_states;
    rd->conf_changed = r->conf_changed;
    rd->conf = r->conf;
}

void raft_ready_advance(raft *r, raft_ready *rd)
{
    if (r->ready_applied_to > r->applied)
        r->applied = r->ready_applied_to;
    if (r->ready_stable_to + 1 > r->unstable)
        r->unstable = r->ready_stable_to + 1;
    r->prev_hs = rd->hard_state;
    r->prev_role = rd->role;
    r->prev_lead = rd->lead;
    r->n_msgs = 0;
    r->n_msgs_after = 0;
    r->n_read_states = 0;
    r->snap_pending_ready = false;
    r->conf_changed = false;
    garbage_collect(r);
    ents_reset(r);
}

void raft_persisted(raft *r, uint64_t index, uint64_t term)
{
    if (index <= r->persisted || index > r->last_index || index >= r->unstable ||
        raft_log_term(r, index) != term)
        return;
    r->persisted = index;
    if (r->role == RAFT_LEADER) {
        raft_progress *self = raft_pr_get(r, r->id);
        if (self && index > self->match)
            self->match = index;
        if (raft_maybe_commit(r))
            r->need_bcast = true;
    } else {
        raft_follower_ack(r);
    }
}

int raft_compact(raft *r, uint64_t index, uint8_t *data, size_t len)
{
    if (index <= r->snap_index)
        return RAFT_ERR_COMPACTED;
    if (index > r->applied || index > r->persisted)
        return RAFT_ERR_UNAVAILABLE;
    raft_snapshot_meta meta = { .index = index, .term = raft_log_term(r, index) };
    raft_conf_at(r, index, &meta.conf);
    raft_snap_set(r, &meta, data, len, NULL);
    raft_log_compact(r, index);
    raft_hist_compact(r, index);
    return RAFT_OK;
}

uint64_t raft_term_at(const raft *r, uint64_t index)
{
    return raft_log_term(r, index);
}

void raft_status_get(const raft *r, raft_status *st)
{
    memset(st, 0, sizeof(*st));
    st->id = r->id;
    st->role = r->role;
    st->term = r->term;
    st->vote = r->vote;
    st->lead = r->lead;
    st->commit = r->commit;
    st->applied = r->applied;
    st->persisted = r->persisted;
    st->first_index = r->first_index;
    st->last_index = r->last_index;
    st->snap_index = r->snap_index;
    st->snap_term = r->snap_term;
    st->lead_transferee = r->lead_transferee;
    st->is_learner = raft_conf_is_learner(&r->conf, r->id);
    st->conf = r->conf;
    if (r->role != RAFT_LEADER)
        return;
    st->n_progress = r->n_prs;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const raft_progress *pr = &r->prs[i];
        raft_progress_status *p = &st->progress[i];
        p->id = pr->id;
        p->match = pr->id == r->id ? r->persisted : pr->match;
        p->next = pr->next;
        p->state = pr->state;
        p->learner = pr->learner;
        p->recent_active = pr->recent_active;
        p->inflight = (uint32_t)pr->ins.count;
    }
}
