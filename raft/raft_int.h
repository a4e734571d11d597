/* raft_int.h — the core's private state, shared by the files of raft/.
 * Nothing here is part of the interface; raft.h is. */
#ifndef CETCD_RAFT_RAFT_INT_H
#define CETCD_RAFT_RAFT_INT_H

#include "raft/raft.h"

#include <stdlib.h>
#include <string.h>

#define RAFT_ALWAYS(x) (__builtin_expect(!!(x), 1))
#define RAFT_NEVER(x) (__builtin_expect(!!(x), 0))

enum { PR_PROBE = 0, PR_REPLICATE = 1, PR_SNAPSHOT = 2 };

/* Sliding window of MsgApps in flight to one follower: the last index each
 * carried and its bytes, oldest first. Freed when acks pass them. */
typedef struct raft_inflights {
    uint64_t *last;
    uint64_t *bytes;
    size_t start, count, cap;
    uint64_t total_bytes;
} raft_inflights;

typedef struct raft_progress {
    uint64_t id;
    uint64_t match;             /* highest index known replicated (durable) */
    uint64_t next;              /* next index to send */
    uint8_t state;              /* PR_* */
    bool learner;
    bool probe_sent;            /* probe: one MsgApp outstanding, pause */
    bool recent_active;         /* heard from it this election period */
    bool vote_responded, vote_granted;
    uint64_t read_round;        /* highest heartbeat round it acked */
    uint64_t pending_snapshot;  /* snapshot state: index being sent */
    uint64_t snap_offset;       /* snapshot state: bytes the follower holds */
    int snap_idle_ticks;
    raft_inflights ins;
} raft_progress;

/* Refcounted buffer holding the data of several entries copied from one
 * message (followers) — one malloc per message, not per entry. */
typedef struct raft_blk {
    uint32_t refs;
    uint8_t data[];
} raft_blk;

/* Marks data allocated by the core with a single malloc (snapshot images). */
extern char raft_owner_malloc;

typedef struct raft_garbage {
    uint8_t *data;
    void *owner;
} raft_garbage;

/* Bump allocator of entry structs with stable addresses until reset. */
typedef struct raft_ent_block {
    struct raft_ent_block *next;
    size_t cap, used;
    raft_entry ents[];
} raft_ent_block;

typedef struct raft_read_req {
    uint64_t ctx;
    uint64_t from;              /* member asking; self for local reads */
    uint64_t index;             /* commit at acceptance; 0 = not yet known */
    uint64_t round;             /* heartbeat round that confirms it; 0 = none yet */
} raft_read_req;

typedef struct raft_conf_hist {
    uint64_t index;             /* conf change entry index */
    raft_conf_state conf;       /* membership after applying it */
} raft_conf_hist;

struct raft {
    raft_config cfg;
    uint64_t id;
    uint64_t rng;

    /* persistent + volatile Raft state */
    uint8_t role;
    uint64_t term, vote, lead;
    uint64_t commit;
    uint64_t applied;           /* handed out in committed_entries (after advance) */
    uint64_t persisted;         /* durable log prefix (raft_persisted) */
    uint64_t ack_limit;         /* follower: log known equal to the leader's up to here */
    uint64_t acked;             /* follower: highest index acked to lead this term */

    /* the log: [first_index, last_index] in a ring, snapshot below it */
    raft_entry *ring;
    size_t ring_cap, ring_head;
    uint64_t first_index, last_index;
    uint64_t snap_index, snap_term;
    uint64_t unstable;          /* first index not yet handed out in ready.entries */

    /* snapshot image kept for lagging followers */
    raft_snapshot_meta snap_meta;
    uint8_t *snap_data;
    size_t snap_len;
    void *snap_owner;
    /* incoming snapshot being assembled from chunks */
    raft_snapshot_meta in_meta;
    uint8_t *in_buf;
    uint64_t in_total, in_have, in_cap;
    bool in_active;
    bool snap_pending_ready;    /* a restored snapshot waits for ready */
    raft_snapshot ready_snap;

    /* membership */
    raft_conf_state conf;
    uint32_t n_prs;
    raft_progress prs[RAFT_MAX_MEMBERS];
    raft_conf_hist *hist;
    size_t n_hist, hist_cap;
    uint64_t pending_conf_index;
    uint64_t conf_applied_to;   /* conf changes up to here are in conf */
    bool conf_changed;

    /* timers */
    int election_elapsed, heartbeat_elapsed, randomized_timeout;
    int transfer_elapsed;
    uint64_t lead_transferee;
    uint64_t uncommitted_bytes;

    /* read index */
    raft_read_req *reads;
    size_t reads_head, reads_count, reads_cap;
    uint64_t read_round;
    bool need_read_round;
    raft_read_state *read_states;
    size_t n_read_states, read_states_cap;

    /* deferred work batched per ready */
    bool need_bcast;

    /* outputs */
    raft_msg *msgs;
    size_t n_msgs, msgs_cap;
    raft_msg *msgs_after;
    size_t n_msgs_after, msgs_after_cap;
    raft_ent_block *eblocks, *ecur;
    raft_garbage *garbage;
    size_t n_garbage, garbage_cap;
    raft_hard_state prev_hs;
    uint64_t prev_lead;
    uint8_t prev_role;
    uint64_t ready_applied_to;  /* set by ready_get, used by advance */
    uint64_t ready_stable_to;
    bool nomem;                 /* an allocation failed; reported by step */
};

/* raft.c */
uint64_t raft_rand(raft *r);
void raft_reset_randomized_timeout(raft *r);
raft_msg *raft_msg_push(raft *r, bool after_persist);
raft_msg *raft_send(raft *r, uint8_t type, uint64_t to, bool after_persist);
raft_entry *raft_ents_alloc(raft *r, size_t n);
void raft_garbage_add(raft *r, uint8_t *data, void *owner);
void raft_data_free(raft *r, uint8_t *data, void *owner);

/* log.c */
int raft_log_init(raft *r, size_t cap);
void raft_log_free(raft *r);
raft_entry *raft_log_at(const raft *r, uint64_t index);
uint64_t raft_log_term(const raft *r, uint64_t index);
int raft_log_append(raft *r, const raft_entry *e);
void raft_log_truncate(raft *r, uint64_t from);
void raft_log_compact(raft *r, uint64_t upto);
void raft_log_reset(raft *r, uint64_t snap_index, uint64_t snap_term);
bool raft_log_up_to_date(const raft *r, uint64_t index, uint64_t term);
uint64_t raft_log_conflict_hint(const raft *r, uint64_t index, uint64_t term);

/* progress.c */
void raft_inflights_free(raft_inflights *in);
int raft_inflights_add(raft_inflights *in, uint64_t last, uint64_t bytes);
void raft_inflights_free_to(raft_inflights *in, uint64_t to);
void raft_inflights_free_first(raft_inflights *in);
void raft_inflights_reset(raft_inflights *in);
bool raft_pr_paused(const raft *r, const raft_progress *pr);
void raft_pr_become_probe(raft_progress *pr);
void raft_pr_become_replicate(raft_progress *pr);
bool raft_pr_maybe_update(raft_progress *pr, uint64_t n);
bool raft_pr_maybe_decr(raft_progress *pr, uint64_t rejected, uint64_t hint);
raft_progress *raft_pr_get(raft *r, uint64_t id);
const raft_progress *raft_pr_cget(const raft *r, uint64_t id);

/* membership.c */
bool raft_conf_is_voter(const raft_conf_state *c, uint64_t id);
bool raft_conf_is_learner(const raft_conf_state *c, uint64_t id);
bool raft_promotable(const raft *r);
size_t raft_quorum(const raft *r);
int raft_conf_apply_state(raft *r, const raft_conf_state *c);
int raft_conf_apply_entry(raft *r, const raft_entry *e);
int raft_conf_change_encode(uint8_t type, uint64_t node_id, const uint8_t *ctx,
                            uint32_t ctx_len, uint8_t **out, uint32_t *out_len);
void raft_conf_at(const raft *r, uint64_t index, raft_conf_state *out);
void raft_hist_compact(raft *r, uint64_t index);

/* election.c */
void raft_become_follower(raft *r, uint64_t term, uint64_t lead);
void raft_become_leader(raft *r);
void raft_campaign_start(raft *r, bool pre, bool transfer);
int raft_step_vote(raft *r, const raft_msg *m);
void raft_step_vote_resp(raft *r, const raft_msg *m);
void raft_tick_election(raft *r);
void raft_tick_heartbeat(raft *r);

/* replication.c */
void raft_send_append(raft *r, raft_progress *pr, bool send_empty);
void raft_bcast_append(raft *r);
void raft_bcast_heartbeat(raft *r, uint64_t ctx);
bool raft_maybe_commit(raft *r);
void raft_handle_append(raft *r, const raft_msg *m);
void raft_handle_append_resp(raft *r, const raft_msg *m);
void raft_handle_heartbeat(raft *r, const raft_msg *m);
void raft_handle_heartbeat_resp(raft *r, const raft_msg *m);
int raft_append_local(raft *r, uint8_t type, uint8_t *data, uint32_t len, void *owner);
void raft_handle_prop(raft *r, const raft_msg *m);
void raft_follower_ack(raft *r);

/* read_index.c */
int raft_read_req_add(raft *r, uint64_t ctx, uint64_t from);
void raft_reads_on_commit(raft *r);
void raft_reads_on_round(raft *r);
void raft_reads_flush_round(raft *r);
void raft_reads_reset(raft *r);
void raft_handle_read_index(raft *r, const raft_msg *m);
void raft_handle_read_index_resp(raft *r, const raft_msg *m);
int raft_read_state_push(raft *r, uint64_t index, uint64_t ctx);

/* snapshot.c */
void raft_send_snapshot_chunk(raft *r, raft_progress *pr);
void raft_handle_snap(raft *r, const raft_msg *m);
void raft_handle_snap_resp(raft *r, const raft_msg *m);
void raft_snap_set(raft *r, const raft_snapshot_meta *meta, uint8_t *data, size_t len, void *owner);

#endif
