/* log.c — the in-memory Raft log since the last compaction.
 *
 * Entries [first_index, last_index] live by value in a ring whose capacity is
 * a power of two and doubles when full, so appending is amortised O(1) with
 * no allocation in the steady state. Below first_index sits the snapshot
 * (snap_index, snap_term). Entry data bytes never move: when entries leave
 * the log (compaction, truncation) their bytes go to the garbage list, freed
 * at the next raft_ready_advance, so pointers handed out in a ready or in a
 * message not yet encoded stay valid. */
#include "raft/raft_int.h"

int raft_log_init(raft *r, size_t cap)
{
    size_t c = 64;
    while (c < cap)
        c <<= 1;
    r->ring = calloc(c, sizeof(*r->ring));
    if (!r->ring)
        return RAFT_ERR_NOMEM;
    r->ring_cap = c;
    r->ring_head = 0;
    return RAFT_OK;
}

void raft_log_free(raft *r)
{
    for (uint64_t i = r->first_index; i <= r->last_index && r->last_index; i++) {
        raft_entry *e = raft_log_at(r, i);
        raft_data_free(r, e->data, e->owner);
    }
    free(r->ring);
    r->ring = NULL;
}

raft_entry *raft_log_at(const raft *r, uint64_t index)
{
    if (index < r->first_index || index > r->last_index)
        return NULL;
    size_t off = (size_t)(index - r->first_index);
    return &r->ring[(r->ring_head + off) & (r->ring_cap - 1)];
}

/* Term of the entry at index; the snapshot's term at snap_index; 0 outside. */
uint64_t raft_log_term(const raft *r, uint64_t index)
{
    if (index == r->snap_index)
        return r->snap_term;
    const raft_entry *e = raft_log_at(r, index);
    return e ? e->term : 0;
}

static int log_grow(raft *r)
{
    size_t n = (size_t)(r->last_index + 1 - r->first_index);
    size_t cap = r->ring_cap * 2;
    raft_entry *nr = malloc(cap * sizeof(*nr));
    if (!nr)
        return RAFT_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        nr[i] = r->ring[(r->ring_head + i) & (r->ring_cap - 1)];
    free(r->ring);
    r->ring = nr;
    r->ring_cap = cap;
    r->ring_head = 0;
    return RAFT_OK;
}

/* Appends e (its index must be last_index + 1). */
int raft_log_append(raft *r, const raft_entry *e)
{
    size_t n = (size_t)(r->last_index + 1 - r->first_index);
    if (RAFT_NEVER(e->index != r->last_index + 1))
        return RAFT_ERR_INVALID;
    if (n == r->ring_cap && log_grow(r) != RAFT_OK)
        return RAFT_ERR_NOMEM;
    r->ring[(r->ring_head + n) & (r->ring_cap - 1)] = *e;
    r->last_index = e->index;
    return RAFT_OK;
}

/* Drops entries at and above `from` (a conflicting leader replaced them). */
void raft_log_truncate(raft *r, uint64_t from)
{
    if (from < r->first_index)
        from = r->first_index;
    for (uint64_t i = from; i <= r->last_index; i++) {
        raft_entry *e = raft_log_at(r, i);
        raft_garbage_add(r, e->data, e->owner);
    }
    if (from <= r->last_index)
        r->last_index = from - 1;
    if (r->unstable > from)
        r->unstable = from;
    if (r->persisted >= from)
        r->persisted = from - 1;
    if (r->ack_limit >= from)
        r->ack_limit = from - 1;
}

/* Drops entries up to and including `upto`, which becomes the snapshot. */
void raft_log_compact(raft *r, uint64_t upto)
{
    uint64_t t = raft_log_term(r, upto);
    while (r->first_index <= upto && r->first_index <= r->last_index) {
        raft_entry *e = raft_log_at(r, r->first_index);
        raft_garbage_add(r, e->data, e->owner);
        r->ring_head = (r->ring_head + 1) & (r->ring_cap - 1);
        r->first_index++;
    }
    r->snap_index = upto;
    r->snap_term = t;
    if (r->first_index <= upto)
        r->first_index = upto + 1;
    if (r->last_index < upto)
        r->last_index = upto;
}

/* Throws the whole log away: the log now starts after a restored snapshot. */
void raft_log_reset(raft *r, uint64_t snap_index, uint64_t snap_term)
{
    raft_log_truncate(r, r->first_index);
    r->ring_head = 0;
    r->snap_index = snap_index;
    r->snap_term = snap_term;
    r->first_index = snap_index + 1;
    r->last_index = snap_index;
    r->unstable = snap_index + 1;
}

/* §5.4.1: is a candidate whose last entry is (index, term) at least as
 * up-to-date as this log? */
bool raft_log_up_to_date(const raft *r, uint64_t index, uint64_t term)
{
    uint64_t lt = raft_log_term(r, r->last_index);
    return term > lt || (term == lt && index >= r->last_index);
}

/* The largest index <= `index` whose term is <= `term`: where the logs can
 * agree at the earliest, skipping a whole term of conflicts per round trip
 * (etcd's findConflictByTerm). */
uint64_t raft_log_conflict_hint(const raft *r, uint64_t index, uint64_t term)
{
    if (index > r->last_index)
        index = r->last_index;
    while (index > r->snap_index) {
        uint64_t t = raft_log_term(r, index);
        if (t <= term)
            break;
        index--;
    }
    return index;
}
