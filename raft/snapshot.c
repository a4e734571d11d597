/* snapshot.c — InstallSnapshot in chunks.
 *
 * The leader keeps the image given to raft_compact (or received, or booted
 * from). A follower whose next index was compacted away gets the image in
 * chunks of max_msg_bytes, stop-and-wait: each MSG_SNAP_RESP says how many
 * bytes the follower holds, and the leader sends the next chunk from there.
 * A lost chunk is resent after an election timeout without progress. When
 * the last chunk arrives the follower restores: its log becomes empty after
 * the snapshot, commit/applied jump to its index, the membership is the
 * snapshot's, and the image appears in the next ready (rd.snapshot). Its
 * ack (MSG_APP_RESP at the snapshot index) waits in msgs_after_persist. */
#include "raft/raft_int.h"

/* Replaces the image the core keeps. */
void raft_snap_set(raft *r, const raft_snapshot_meta *meta, uint8_t *data, size_t len,
                   void *owner)
{
    if (r->snap_data)
        raft_garbage_add(r, r->snap_data, r->snap_owner);
    r->snap_meta = *meta;
    r->snap_data = data;
    r->snap_len = len;
    r->snap_owner = owner;
}

void raft_send_snapshot_chunk(raft *r, raft_progress *pr)
{
    if (pr->pending_snapshot != r->snap_meta.index) {
        pr->pending_snapshot = r->snap_meta.index; /* a newer image: restart */
        pr->snap_offset = 0;
    }
    uint64_t off = pr->snap_offset;
    if (off > r->snap_len)
        off = 0;
    uint64_t left = r->snap_len - off;
    uint64_t chunk = left < r->cfg.max_msg_bytes ? left : r->cfg.max_msg_bytes;
    raft_msg *m = raft_send(r, RAFT_MSG_SNAP, pr->id, false);
    if (!m)
        return;
    m->snap = r->snap_meta;
    m->snap_offset = off;
    m->snap_total = r->snap_len;
    m->snap_len = (uint32_t)chunk;
    m->snap_data = chunk ? r->snap_data + off : NULL;
    m->snap_last = off + chunk == r->snap_len;
}

void raft_handle_snap_resp(raft *r, const raft_msg *m)
{
    raft_progress *pr = raft_pr_get(r, m->from);
    if (!pr)
        return;
    pr->recent_active = true;
    if (pr->state != PR_SNAPSHOT || m->snap.index != r->snap_meta.index ||
        pr->pending_snapshot != r->snap_meta.index)
        return;
    pr->snap_idle_ticks = 0;
    if (m->snap_offset < r->snap_len || m->reject) {
        pr->snap_offset = m->snap_offset;
        raft_send_snapshot_chunk(r, pr);
    }
}

static void snap_resp(raft *r, const raft_msg *m, uint64_t have, bool reject)
{
    raft_msg *resp = raft_send(r, RAFT_MSG_SNAP_RESP, m->from, false);
    if (!resp)
        return;
    resp->snap = m->snap;
    resp->snap_offset = have;
    resp->snap_total = m->snap_total;
    resp->reject = reject;
}

static void restore(raft *r)
{
    const raft_snapshot_meta *meta = &r->in_meta;
    raft_log_reset(r, meta->index, meta->term);
    raft_snap_set(r, meta, r->in_buf, (size_t)r->in_total, &raft_owner_malloc);
    r->in_buf = NULL;
    r->in_cap = 0;
    r->in_active = false;
    r->commit = meta->index;
    r->applied = meta->index;
    r->ack_limit = meta->index;
    r->acked = meta->index;
    r->n_hist = 0;
    raft_conf_apply_state(r, &meta->conf);
    r->conf_changed = true;
    r->snap_pending_ready = true;
    r->ready_snap.meta = *meta;
    r->ready_snap.data = r->snap_data;
    r->ready_snap.len = r->snap_len;
}

void raft_handle_snap(raft *r, const raft_msg *m)
{
    const raft_snapshot_meta *sm = &m->snap;
    if (sm->index <= r->commit) {
        raft_msg *resp = raft_send(r, RAFT_MSG_APP_RESP, m->from, false);
        if (resp) /* durable acks only, as in raft_handle_append */
            resp->index = r->commit < r->persisted ? r->commit : r->persisted;
        return;
    }
    if (m->snap_offset == 0) {
        free(r->in_buf);
        r->in_buf = NULL;
        r->in_cap = 0;
        r->in_cap = 0;
        r->in_meta = *sm;
        r->in_total = m->snap_total;
        r->in_have = 0;
        r->in_active = true;
    }
    bool same = r->in_active && r->in_meta.index == sm->index && r->in_meta.term == sm->term &&
                r->in_total == m->snap_total;
    if (!same || m->snap_offset != r->in_have ||
        m->snap_offset + m->snap_len > r->in_total) {
        snap_resp(r, m, same ? r->in_have : 0, true);
        return;
    }
    if (r->in_have + m->snap_len > r->in_cap || !r->in_buf) {
        /* grow with the data actually received, never by what the sender
         * claims the total is */
        uint64_t cap = r->in_cap ? r->in_cap : 4096;
        while (cap < r->in_have + m->snap_len)
            cap *= 2;
        if (cap > r->in_total)
            cap = r->in_total ? r->in_total : 1;
        uint8_t *nb = cap <= SIZE_MAX ? realloc(r->in_buf, (size_t)cap) : NULL;
        if (!nb) {
            r->nomem = true;
            return;
        }
        r->in_buf = nb;
        r->in_cap = cap;
    }
    if (m->snap_len)
        memcpy(r->in_buf + r->in_have, m->snap_data, m->snap_len);
    r->in_have += m->snap_len;
    if (r->in_have < r->in_total) {
        snap_resp(r, m, r->in_have, false);
        return;
    }
    /* complete: fast-forward if our log already holds it, else restore */
    if (raft_log_term(r, sm->index) == sm->term && sm->index <= r->last_index) {
        free(r->in_buf);
        r->in_buf = NULL;
        r->in_cap = 0;
        r->in_active = false;
        r->commit = sm->index;
        if (sm->index > r->ack_limit)
            r->ack_limit = sm->index;
        raft_follower_ack(r);
        snap_resp(r, m, r->in_total, false);
        return;
    }
    restore(r);
    snap_resp(r, m, r->in_total, false);
    raft_msg *ack = raft_send(r, RAFT_MSG_APP_RESP, m->from, true);
    if (ack)
        ack->index = sm->index;
}
