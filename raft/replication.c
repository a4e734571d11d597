/* replication.c — AppendEntries both ways, heartbeats, the commit rule.
 *
 * Leader: entries go out before they are durable locally (thesis §10.2.1);
 * the leader's own match is its raft_persisted index, and an index commits
 * only when a quorum's match covers it AND it holds an entry of the current
 * term (§5.4.2). Followers ack only durable entries: the ack for entries not
 * yet persisted is produced by raft_persisted (raft_follower_ack), bounded by
 * ack_limit, the prefix verified equal to the current leader's log, so an
 * old durable suffix from an earlier term is never acked to a new leader.
 * Rejections carry a (hint index, hint term) so the leader skips a whole
 * conflicting term per round trip. */
#include "raft/raft_int.h"

/* Copies the data of entries [0, n) into one refcounted block. */
static int copy_entries_in(raft *r, const raft_entry *src, size_t n, uint64_t from_index)
{
    size_t total = 0;
    uint32_t refs = 0;
    for (size_t i = 0; i < n; i++)
        if (src[i].index >= from_index && src[i].len) {
            total += src[i].len;
            refs++;
        }
    raft_blk *blk = NULL;
    if (total) {
        blk = malloc(sizeof(*blk) + total);
        if (!blk)
            return RAFT_ERR_NOMEM;
        blk->refs = refs;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i].index < from_index)
            continue;
        raft_entry e = src[i];
        if (e.len) {
            memcpy(blk->data + off, src[i].data, e.len);
            e.data = blk->data + off;
            e.owner = blk;
            off += e.len;
        } else {
            e.data = NULL;
            e.owner = NULL;
        }
        if (raft_log_append(r, &e) != RAFT_OK) {
            /* cannot happen after the checks in the callers, but never leak */
            if (e.len && --blk->refs == 0)
                free(blk);
            return RAFT_ERR_NOMEM;
        }
    }
    return RAFT_OK;
}

int raft_append_local(raft *r, uint8_t type, uint8_t *data, uint32_t len, void *owner)
{
    raft_entry e = { .term = r->term, .index = r->last_index + 1, .type = type,
                     .len = len, .data = len ? data : NULL, .owner = owner };
    int rc = raft_log_append(r, &e);
    if (rc != RAFT_OK)
        return rc;
    r->need_bcast = true;
    return RAFT_OK;
}

/* Sends what pr needs next; returns true if a message went out. */
static bool send_append_once(raft *r, raft_progress *pr, bool send_empty)
{
    if (pr->id == r->id || raft_pr_paused(r, pr))
        return false;
    if (pr->next < r->first_index) {
        if (!pr->recent_active)
            return false;
        pr->state = PR_SNAPSHOT;
        pr->pending_snapshot = r->snap_meta.index;
        pr->snap_offset = 0;
        pr->snap_idle_ticks = 0;
        raft_inflights_reset(&pr->ins);
        raft_send_snapshot_chunk(r, pr);
        return true;
    }
    size_t n = 0;
    uint64_t bytes = 0;
    for (uint64_t i = pr->next; i <= r->last_index; i++) {
        const raft_entry *e = raft_log_at(r, i);
        if (n && bytes + e->len > r->cfg.max_msg_bytes)
            break;
        bytes += e->len;
        n++;
    }
    if (!n && !send_empty)
        return false;
    raft_msg *m = raft_send(r, RAFT_MSG_APP, pr->id, false);
    if (!m)
        return false;
    m->index = pr->next - 1;
    m->log_term = raft_log_term(r, m->index);
    m->commit = r->commit;
    if (n) {
        raft_entry *ents = raft_ents_alloc(r, n);
        if (!ents) {
            r->n_msgs--;
            return false;
        }
        for (size_t k = 0; k < n; k++)
            ents[k] = *raft_log_at(r, pr->next + k);
        m->entries = ents;
        m->n_entries = n;
    }
    if (pr->state == PR_REPLICATE && n) {
        uint64_t last = pr->next + n - 1;
        if (raft_inflights_add(&pr->ins, last, bytes) != RAFT_OK)
            r->nomem = true;
        pr->next = last + 1;
    } else if (pr->state == PR_PROBE) {
        pr->probe_sent = true;
    }
    return true;
}

void raft_send_append(raft *r, raft_progress *pr, bool send_empty)
{
    if (!send_append_once(r, pr, send_empty))
        return;
    while (pr->state == PR_REPLICATE && pr->next <= r->last_index &&
           send_append_once(r, pr, false))
        ;
}

void raft_bcast_append(raft *r)
{
    r->need_bcast = false;
    for (uint32_t i = 0; i < r->n_prs; i++)
        raft_send_append(r, &r->prs[i], true);
}

void raft_bcast_heartbeat(raft *r, uint64_t ctx)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const raft_progress *pr = &r->prs[i];
        if (pr->id == r->id)
            continue;
        raft_msg *m = raft_send(r, RAFT_MSG_HEARTBEAT, pr->id, false);
        if (!m)
            return;
        m->commit = pr->match < r->commit ? pr->match : r->commit;
        m->ctx = ctx;
    }
}

bool raft_maybe_commit(raft *r)
{
    uint64_t m[RAFT_MAX_MEMBERS];
    size_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].learner)
            continue;
        uint64_t v = r->prs[i].id == r->id ? r->persisted : r->prs[i].match;
        size_t k = n++;
        while (k > 0 && m[k - 1] < v) { /* insertion sort, descending */
            m[k] = m[k - 1];
            k--;
        }
        m[k] = v;
    }
    size_t q = raft_quorum(r);
    if (n < q)
        return false;
    uint64_t mci = m[q - 1];
    if (mci <= r->commit || raft_log_term(r, mci) != r->term)
        return false;
    r->commit = mci;
    raft_reads_on_commit(r);
    return true;
}

static void send_app_resp(raft *r, uint64_t to, uint64_t index)
{
    raft_msg *m = raft_send(r, RAFT_MSG_APP_RESP, to, false);
    if (m)
        m->index = index;
}

void raft_follower_ack(raft *r)
{
    if (r->role != RAFT_FOLLOWER || r->lead == RAFT_NONE)
        return;
    uint64_t a = r->ack_limit < r->persisted ? r->ack_limit : r->persisted;
    if (a > r->acked) {
        send_app_resp(r, r->lead, a);
        r->acked = a;
    }
}

static void reject_append(raft *r, const raft_msg *m)
{
    raft_msg *resp = raft_send(r, RAFT_MSG_APP_RESP, m->from, false);
    if (!resp)
        return;
    uint64_t hint = raft_log_conflict_hint(r, m->index < r->last_index ? m->index : r->last_index,
                                           m->log_term);
    resp->index = m->index;
    resp->reject = true;
    resp->reject_hint = hint;
    resp->hint_term = raft_log_term(r, hint);
}

void raft_handle_append(raft *r, const raft_msg *m)
{
    if (m->index < r->commit) {
        /* stale or duplicate: re-ack what is committed AND durable here. An
         * ack of a non-durable index would let the leader's heartbeat commit
         * stale entries this member still has on disk after a crash. */
        send_app_resp(r, m->from, r->commit < r->persisted ? r->commit : r->persisted);
        return;
    }
    if (raft_log_term(r, m->index) != m->log_term) {
        reject_append(r, m);
        return;
    }
    uint64_t conflict = 0;
    for (size_t i = 0; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        if (e->index > r->last_index || raft_log_term(r, e->index) != e->term) {
            conflict = e->index;
            break;
        }
    }
    if (conflict) {
        if (RAFT_NEVER(conflict <= r->commit))
            return; /* would rewrite committed history: refuse */
        if (conflict <= r->last_index)
            raft_log_truncate(r, conflict);
        if (copy_entries_in(r, m->entries, m->n_entries, conflict) != RAFT_OK) {
            r->nomem = true;
            return;
        }
    }
    uint64_t lastnew = m->index + m->n_entries;
    if (lastnew > r->ack_limit)
        r->ack_limit = lastnew;
    uint64_t c = m->commit < lastnew ? m->commit : lastnew;
    if (c > r->commit)
        r->commit = c;
    if (lastnew <= r->persisted) {
        send_app_resp(r, m->from, lastnew);
        if (lastnew > r->acked)
            r->acked = lastnew;
    } else {
        raft_follower_ack(r);
    }
}

void raft_handle_heartbeat(raft *r, const raft_msg *m)
{
    uint64_t c = m->commit < r->last_index ? m->commit : r->last_index;
    if (c > r->commit)
        r->commit = c;
    raft_msg *resp = raft_send(r, RAFT_MSG_HEARTBEAT_RESP, m->from, false);
    if (resp)
        resp->ctx = m->ctx;
}

static void maybe_send_timeout_now(raft *r, const raft_progress *pr)
{
    if (pr->id == r->lead_transferee && pr->match == r->last_index)
        raft_send(r, RAFT_MSG_TIMEOUT_NOW, pr->id, false);
}

static void append_rejected(raft *r, raft_progress *pr, const raft_msg *m)
{
    if (m->reject_hint < pr->match) {
        /* The follower lost entries it had acked (restarted with an empty
         * disk). Start over from what it really has. */
        pr->match = m->reject_hint;
        raft_pr_become_probe(pr);
        raft_send_append(r, pr, true);
        return;
    }
    uint64_t hint = m->reject_hint;
    if (m->hint_term)
        hint = raft_log_conflict_hint(r, m->reject_hint, m->hint_term);
    if (raft_pr_maybe_decr(pr, m->index, hint)) {
        if (pr->state == PR_REPLICATE)
            raft_pr_become_probe(pr);
        raft_send_append(r, pr, true);
    }
}

void raft_handle_append_resp(raft *r, const raft_msg *m)
{
    raft_progress *pr = raft_pr_get(r, m->from);
    if (!pr)
        return;
    pr->recent_active = true;
    if (m->reject) {
        append_rejected(r, pr, m);
        return;
    }
    bool old_paused = raft_pr_paused(r, pr);
    if (!raft_pr_maybe_update(pr, m->index))
        return;
    if (pr->state == PR_PROBE)
        raft_pr_become_replicate(pr);
    else if (pr->state == PR_SNAPSHOT && pr->match >= pr->pending_snapshot)
        raft_pr_become_probe(pr);
    else if (pr->state == PR_REPLICATE)
        raft_inflights_free_to(&pr->ins, m->index);
    if (raft_maybe_commit(r))
        r->need_bcast = true;
    if (old_paused || pr->state != PR_SNAPSHOT)
        raft_send_append(r, pr, false);
    maybe_send_timeout_now(r, pr);
}

void raft_handle_heartbeat_resp(raft *r, const raft_msg *m)
{
    raft_progress *pr = raft_pr_get(r, m->from);
    if (!pr)
        return;
    pr->recent_active = true;
    pr->probe_sent = false;
    if (pr->state == PR_REPLICATE && pr->ins.count >= r->cfg.max_inflight_msgs)
        raft_inflights_free_first(&pr->ins);
    if (pr->match < r->last_index)
        raft_send_append(r, pr, true);
    if (m->ctx > pr->read_round) {
        pr->read_round = m->ctx;
        raft_reads_on_round(r);
    }
    maybe_send_timeout_now(r, pr); /* the first TimeoutNow may have been lost */
}

/* A follower forwarded proposals (MSG_PROP) to us, the leader. */
void raft_handle_prop(raft *r, const raft_msg *m)
{
    if (r->lead_transferee != RAFT_NONE || !raft_pr_get(r, r->id))
        return; /* dropped, as etcd does; the client retries */
    uint64_t bytes = 0;
    for (size_t i = 0; i < m->n_entries; i++)
        bytes += m->entries[i].len;
    if (r->cfg.max_uncommitted_bytes && r->uncommitted_bytes &&
        r->uncommitted_bytes + bytes > r->cfg.max_uncommitted_bytes)
        return;
    raft_entry ents[64];
    for (size_t i = 0; i < m->n_entries; i += 64) {
        size_t n = m->n_entries - i < 64 ? m->n_entries - i : 64;
        for (size_t k = 0; k < n; k++) {
            ents[k] = m->entries[i + k];
            ents[k].type = RAFT_ENTRY_NORMAL;
            ents[k].term = r->term;
            ents[k].index = r->last_index + 1 + k;
        }
        if (copy_entries_in(r, ents, n, 0) != RAFT_OK) {
            r->nomem = true;
            return;
        }
    }
    r->uncommitted_bytes += bytes;
    r->need_bcast = true;
}
