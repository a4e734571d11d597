/* election.c — roles, timeouts, pre-vote, votes, check-quorum.
 *
 * Randomized election timeouts in [election_tick, 2*election_tick) from the
 * caller's seed (§5.2). Pre-vote (thesis §9.6): a would-be candidate first
 * asks whether it could win at term+1 without changing anyone's term, so a
 * member rejoining after a partition cannot depose a healthy leader.
 * Check-quorum: a leader that has not heard from a quorum during an election
 * timeout steps down, and a follower that heard from its leader within the
 * timeout ignores (pre-)vote requests ("leader lease"), unless the request
 * carries the transfer flag of a TimeoutNow (ctx == 1). */
#include "raft/raft_int.h"

static void votes_reset(raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        r->prs[i].vote_responded = false;
        r->prs[i].vote_granted = false;
    }
}

void raft_become_follower(raft *r, uint64_t term, uint64_t lead)
{
    if (term != r->term) {
        r->term = term;
        r->vote = RAFT_NONE;
    }
    if (lead != r->lead || r->role != RAFT_FOLLOWER) {
        r->ack_limit = 0;
        r->acked = 0;
    }
    if (r->role == RAFT_LEADER)
        raft_reads_reset(r);
    r->role = RAFT_FOLLOWER;
    r->lead = lead;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->lead_transferee = RAFT_NONE;
    r->need_bcast = false;
    raft_reset_randomized_timeout(r);
}

void raft_become_leader(raft *r)
{
    r->role = RAFT_LEADER;
    r->lead = r->id;
    r->lead_transferee = RAFT_NONE;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->uncommitted_bytes = 0;
    r->pending_conf_index = r->last_index;
    raft_reads_reset(r);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        raft_progress *pr = &r->prs[i];
        pr->match = pr->id == r->id ? r->persisted : 0;
        pr->next = r->last_index + 1;
        pr->recent_active = true;
        pr->read_round = 0;
        pr->snap_idle_ticks = 0;
        raft_pr_become_probe(pr);
        pr->next = r->last_index + 1;
        if (pr->id == r->id)
            pr->state = PR_REPLICATE;
    }
    /* An empty entry of the new term: committing it commits everything
     * before it (§5.4.2) and enables ReadIndex (§6.4). */
    raft_append_local(r, RAFT_ENTRY_NORMAL, NULL, 0, NULL);
    r->need_bcast = true;
}

static int poll_votes(raft *r, size_t *granted, size_t *rejected)
{
    *granted = *rejected = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const raft_progress *pr = &r->prs[i];
        if (pr->learner || !pr->vote_responded)
            continue;
        if (pr->vote_granted)
            (*granted)++;
        else
            (*rejected)++;
    }
    if (*granted >= raft_quorum(r))
        return 1;
    if (*rejected > r->conf.n_voters - raft_quorum(r))
        return -1;
    return 0;
}

static void campaign_won(raft *r, bool transfer)
{
    if (r->role == RAFT_PRE_CANDIDATE)
        raft_campaign_start(r, false, transfer);
    else
        raft_become_leader(r);
}

void raft_campaign_start(raft *r, bool pre, bool transfer)
{
    if (!raft_promotable(r))
        return;
    uint64_t vote_term;
    if (pre) {
        r->role = RAFT_PRE_CANDIDATE;
        r->lead = RAFT_NONE;
        vote_term = r->term + 1;
    } else {
        raft_become_follower(r, r->term + 1, RAFT_NONE);
        r->role = RAFT_CANDIDATE;
        r->vote = r->id;
        vote_term = r->term;
    }
    r->election_elapsed = 0;
    raft_reset_randomized_timeout(r);
    votes_reset(r);
    raft_progress *self = raft_pr_get(r, r->id);
    self->vote_responded = self->vote_granted = true;
    size_t g, j;
    if (poll_votes(r, &g, &j) == 1) {
        campaign_won(r, transfer);
        return;
    }
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const raft_progress *pr = &r->prs[i];
        if (pr->learner || pr->id == r->id)
            continue;
        /* A real vote request carries our own vote for ourselves, which must
         * be durable first; a pre-vote promises nothing. */
        raft_msg *m = raft_send(r, pre ? RAFT_MSG_PRE_VOTE : RAFT_MSG_VOTE,
                                pr->id, !pre);
        if (!m)
            return;
        m->term = vote_term;
        m->index = r->last_index;
        m->log_term = raft_log_term(r, r->last_index);
        m->ctx = transfer ? 1 : 0;
    }
}

/* (Pre-)vote request already past the term checks in raft_step. */
int raft_step_vote(raft *r, const raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PRE_VOTE;
    bool can = r->vote == m->from || (r->vote == RAFT_NONE && r->lead == RAFT_NONE) ||
               (pre && m->term > r->term);
    bool grant = can && raft_log_up_to_date(r, m->index, m->log_term);
    raft_msg *resp = raft_send(r, pre ? RAFT_MSG_PRE_VOTE_RESP : RAFT_MSG_VOTE_RESP,
                               m->from, !pre);
    if (!resp)
        return RAFT_ERR_NOMEM;
    resp->reject = !grant;
    /* a pre-vote grant answers at the proposed term so the asker counts it */
    resp->term = (grant && pre) ? m->term : r->term;
    if (grant && !pre) {
        r->election_elapsed = 0;
        r->vote = m->from;
    }
    return RAFT_OK;
}

void raft_step_vote_resp(raft *r, const raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PRE_VOTE_RESP;
    if ((pre && r->role != RAFT_PRE_CANDIDATE) || (!pre && r->role != RAFT_CANDIDATE))
        return;
    raft_progress *pr = raft_pr_get(r, m->from);
    if (!pr || pr->vote_responded)
        return;
    pr->vote_responded = true;
    pr->vote_granted = !m->reject;
    size_t g, j;
    int res = poll_votes(r, &g, &j);
    if (res == 1)
        campaign_won(r, false);
    else if (res == -1)
        raft_become_follower(r, r->term, RAFT_NONE);
}

void raft_tick_election(raft *r)
{
    r->election_elapsed++;
    if (raft_promotable(r) && r->election_elapsed >= r->randomized_timeout) {
        r->election_elapsed = 0;
        raft_campaign_start(r, r->cfg.pre_vote, false);
    }
}

static bool quorum_active(raft *r)
{
    size_t act = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        raft_progress *pr = &r->prs[i];
        if (pr->learner)
            continue;
        if (pr->id == r->id || pr->recent_active)
            act++;
        if (pr->id != r->id)
            pr->recent_active = false;
    }
    return act >= raft_quorum(r);
}

void raft_tick_heartbeat(raft *r)
{
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_tick) {
        r->election_elapsed = 0;
        if (r->cfg.check_quorum && !quorum_active(r)) {
            raft_become_follower(r, r->term, RAFT_NONE);
            return;
        }
        r->lead_transferee = RAFT_NONE; /* transfer timed out */
    }
    for (uint32_t i = 0; i < r->n_prs; i++) {
        raft_progress *pr = &r->prs[i];
        if (pr->state == PR_SNAPSHOT && ++pr->snap_idle_ticks >= r->cfg.election_tick) {
            pr->snap_idle_ticks = 0;
            raft_send_snapshot_chunk(r, pr);
        }
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        raft_bcast_heartbeat(r, r->read_round);
    }
}
