/* progress.c — the leader's view of each follower (etcd's tracker package).
 *
 * PROBE: one MsgApp at a time until the follower's match is found (after a
 * rejection or on a new leader). REPLICATE: optimistic pipelining; `next`
 * moves ahead as MsgApps are sent, bounded by the in-flight window (count
 * and bytes). SNAPSHOT: the follower needs the snapshot; appends pause until
 * it acks an index at or past the snapshot. */
#include "raft/raft_int.h"

void raft_inflights_free(raft_inflights *in)
{
    free(in->last);
    free(in->bytes);
    memset(in, 0, sizeof(*in));
}

void raft_inflights_reset(raft_inflights *in)
{
    in->start = 0;
    in->count = 0;
    in->total_bytes = 0;
}

int raft_inflights_add(raft_inflights *in, uint64_t last, uint64_t bytes)
{
    if (in->count == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 16;
        uint64_t *nl = malloc(cap * sizeof(*nl));
        uint64_t *nb = malloc(cap * sizeof(*nb));
        if (!nl || !nb) {
            free(nl);
            free(nb);
            return RAFT_ERR_NOMEM;
        }
        for (size_t i = 0; i < in->count; i++) {
            nl[i] = in->last[(in->start + i) % in->cap];
            nb[i] = in->bytes[(in->start + i) % in->cap];
        }
        free(in->last);
        free(in->bytes);
        in->last = nl;
        in->bytes = nb;
        in->cap = cap;
        in->start = 0;
    }
    size_t slot = (in->start + in->count) % in->cap;
    in->last[slot] = last;
    in->bytes[slot] = bytes;
    in->count++;
    in->total_bytes += bytes;
    return RAFT_OK;
}

/* Frees every in-flight MsgApp whose last index is <= to. */
void raft_inflights_free_to(raft_inflights *in, uint64_t to)
{
    while (in->count && in->last[in->start] <= to) {
        in->total_bytes -= in->bytes[in->start];
        in->start = (in->start + 1) % in->cap;
        in->count--;
    }
    if (!in->count)
        in->start = 0;
}

void raft_inflights_free_first(raft_inflights *in)
{
    if (in->count)
        raft_inflights_free_to(in, in->last[in->start]);
}

bool raft_pr_paused(const raft *r, const raft_progress *pr)
{
    switch (pr->state) {
    case PR_PROBE:
        return pr->probe_sent;
    case PR_REPLICATE:
        if (pr->ins.count >= r->cfg.max_inflight_msgs)
            return true;
        return r->cfg.max_inflight_bytes &&
               pr->ins.total_bytes >= r->cfg.max_inflight_bytes;
    default:
        return true;
    }
}

void raft_pr_become_probe(raft_progress *pr)
{
    pr->state = PR_PROBE;
    pr->probe_sent = false;
    pr->next = pr->match + 1;
    pr->pending_snapshot = 0;
    raft_inflights_reset(&pr->ins);
}

void raft_pr_become_replicate(raft_progress *pr)
{
    pr->state = PR_REPLICATE;
    pr->probe_sent = false;
    pr->next = pr->match + 1;
    pr->pending_snapshot = 0;
    raft_inflights_reset(&pr->ins);
}

/* An ack for index n: returns true if match moved. */
bool raft_pr_maybe_update(raft_progress *pr, uint64_t n)
{
    bool updated = false;
    if (pr->match < n) {
        pr->match = n;
        updated = true;
        pr->probe_sent = false;
    }
    if (pr->next < n + 1)
        pr->next = n + 1;
    return updated;
}

/* A rejection of the MsgApp whose prev index was `rejected`; `hint` is the
 * index the follower suggests probing from. Returns false if stale. */
bool raft_pr_maybe_decr(raft_progress *pr, uint64_t rejected, uint64_t hint)
{
    if (pr->state == PR_REPLICATE) {
        if (rejected <= pr->match)
            return false;
        pr->next = pr->match + 1;
        return true;
    }
    if (pr->next == 0 || pr->next - 1 != rejected)
        return false;
    uint64_t n = rejected < hint + 1 ? rejected : hint + 1;
    if (n < pr->match + 1)
        n = pr->match + 1;
    pr->next = n ? n : 1;
    pr->probe_sent = false;
    return true;
}

raft_progress *raft_pr_get(raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

const raft_progress *raft_pr_cget(const raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}
