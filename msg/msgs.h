/*
 * msgs.h -- the messages that cross actors, and who owns what.
 *
 * Every message is one heap block whose first member is a `msg_hdr`. Pushing
 * a message into a mailbox hands the block to the consumer, which frees it
 * (or passes it on, which hands it on again). Pointer fields inside a message
 * say below who allocated them and who frees them.
 *
 *   net  --MSG_PROPOSE------> raft     a client write to put in the log
 *   net  --MSG_READ_INDEX---> raft     a batch of linearizable reads (one per loop turn)
 *   raft --MSG_WAL_BATCH----> wal      encoded records to append + sync
 *   wal  --MSG_WAL_DURABLE--> raft     "log durable up to index/term"
 *   raft --MSG_APPLY--------> apply    committed entries, in log order
 *   raft --MSG_READ_INDEX---> apply    the same read batch, now with its read index
 *   apply --MSG_STORE_SYNCED-> raft    LevelDB durable up to index: WAL before it may go
 *   (apply -> raft: the applied index is an atomic in server.h)
 *   apply/raft --MSG_REPLIES-> net     replies for calls owned by that loop
 *   apply --MSG_READ_INDEX--> net      "applied >= read index: run the batch's reads"
 *   net  --MSG_LEASE_RENEW--> apply    one loop turn's keepalives (answered as
 *                                      stream messages in MSG_REPLIES)
 *   net  --MSG_LEASE_QUERY--> apply    LeaseTimeToLive / LeaseLeases
 *   apply --MSG_PROPOSE-----> raft     revoke of an expired lease (leader only);
 *                                      the NOSPACE alarm a write past the quota raises
 *   net  --MSG_PROPOSE------> raft     also Maintenance.Alarm requests, and the NOSPACE
 *                                      alarm a refused write raises (actors/maint.h)
 *   (apply -> net: the alarm list is an RCU pointer in server.h)
 *   apply --MSG_WATCH_EVENTS-> watch   one applied batch's events, encoded once
 *   net  --MSG_WATCH_REQ----> watch    watch create/cancel/progress, stream gone
 *   watch --MSG_WATCH_OUT---> net      packed WatchResponses for one stream
 */
#ifndef CETCD_MSG_MSGS_H
#define CETCD_MSG_MSGS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/server.h"

typedef enum msg_kind {
  MSG_PROPOSE = 1,
  MSG_READ_INDEX,
  MSG_WAL_BATCH,
  MSG_WAL_DURABLE,
  MSG_APPLY,
  MSG_REPLIES,
  MSG_STORE_SYNCED,
  MSG_STOP,
  MSG_LEASE_RENEW,
  MSG_LEASE_QUERY,
  /* --- watch (actors/watch_actor.c, actors/watch_service.c) --- */
  MSG_WATCH_EVENTS,
  MSG_WATCH_REQ,
  MSG_WATCH_OUT,
} msg_kind;

typedef struct msg_hdr {
  msg_kind kind;
} msg_hdr;

/* net -> raft. One block: the header then `len` bytes of entry data (an
 * encoded cetcdpb.InternalRequest). On a successful raft_propose the core
 * owns the data (and so the whole block: raft_free_data below frees it);
 * otherwise the raft actor replies `call` with an error and frees the block. */
typedef struct msg_propose {
  msg_hdr hdr;
  net_call call;
  uint32_t len;
  _Alignas(8) uint8_t data[];
} msg_propose;

/* Frees a proposal block given its data pointer (raft core's free_data). */
void msg_propose_free_data(void *ctx, uint8_t *data);

/* net -> raft -> apply -> net: one loop's linearizable reads of one turn.
 * Allocated by the net loop, freed by the net loop when it comes back. */
typedef struct msg_read_index {
  msg_hdr hdr;
  uint32_t loop;        /* net loop that owns the reads */
  uint64_t batch;       /* that loop's batch number */
  uint64_t read_index;  /* set by raft: serve once applied >= read_index */
  int err;              /* set by raft: <0 cetcd_err if leadership lost */
} msg_read_index;

/* raft -> wal. `buf` holds encoded WAL records back to back:
 *   | type u8 | index u64 | len u32 | data[len] |  (host order; in-memory only)
 * Allocated and freed together with the block (flexible array). */
typedef struct msg_wal_batch {
  msg_hdr hdr;
  uint64_t last_index;  /* highest entry index in the batch (0 = none) */
  uint64_t last_term;   /* its term */
  uint64_t release_before; /* nonzero: wal_release(release_before) after sync */
  bool sync;            /* must be fdatasynced: entries, a term/vote change or a
                         * snapshot marker. A hard state whose only change is
                         * the commit index need not be (etcd's raft.MustSync):
                         * it is written with the next batch that syncs. */
  size_t len;
  _Alignas(8) uint8_t buf[];
} msg_wal_batch;

/* wal -> raft. Allocated by wal, freed by raft. */
typedef struct msg_wal_durable {
  msg_hdr hdr;
  uint64_t index;
  uint64_t term;
  int err;              /* <0: the WAL failed; the server must stop */
} msg_wal_durable;

/* apply -> raft (control mailbox). Freed by raft. */
typedef struct msg_store_synced {
  msg_hdr hdr;
  uint64_t index;
  uint64_t term;
} msg_store_synced;

/* One committed entry as the apply actor sees it. `data` points into the
 * raft core's memory, valid until the raft actor compacts past `index`
 * (which it does only below the applied index the apply actor reported). */
typedef struct apply_entry {
  uint64_t index;
  uint64_t term;
  uint8_t type;
  uint32_t len;
  const uint8_t *data;
} apply_entry;

/* raft -> apply. Freed by apply. */
typedef struct msg_apply {
  msg_hdr hdr;
  size_t n;
  apply_entry ents[];
} msg_apply;

/* One reply for a call. `buf` (malloc'd by the producer, freed by the net
 * loop) holds the packed response message when status == 0. */
typedef struct reply {
  net_call call;
  int err;              /* 0 = OK, else <0 cetcd_err */
  uint8_t *buf;
  size_t len;
  int stream;           /* 1: one message on a stream (net_stream_send),
                         * not the call's final answer; 2: end the stream
                         * with status OK (net_stream_finish), no message */
} reply;

/* apply/raft -> net loop. Freed by the net loop. */
typedef struct msg_replies {
  msg_hdr hdr;
  size_t n;
  reply r[];
} msg_replies;

/* One keepalive of a LeaseKeepAlive stream; or (finish = 1) the client's
 * half-close, to be answered after the stream's earlier keepalives. */
typedef struct lease_renewal {
  net_call call;
  int64_t id;
  int finish;
} lease_renewal;

/* net -> apply: the keepalives one loop read in one turn. Allocated by the
 * net loop, freed by apply. */
typedef struct msg_lease_renew {
  msg_hdr hdr;
  size_t n;
  lease_renewal r[];
} msg_lease_renew;

/* net -> apply: LeaseTimeToLive (id, keys) or LeaseLeases (list). Freed by
 * apply, which answers `call` through MSG_REPLIES. */
typedef struct msg_lease_query {
  msg_hdr hdr;
  net_call call;
  int list;             /* 1: LeaseLeases, else LeaseTimeToLive */
  int keys;
  int64_t id;
} msg_lease_query;

/* --- watch --------------------------------------------------------------- */

/* One change of an applied batch, as the watch actor needs it. Offsets are
 * into the owning batch's buf. */
typedef struct watch_event {
  int64_t rev;               /* mod revision (main) */
  uint32_t key_off, key_len; /* the key */
  uint32_t ev_off, ev_len;   /* packed mvccpb.Event {type, kv}, no prev_kv */
  uint32_t prev_off, prev_len; /* packed previous KeyValue; prev_len 0 = none */
  uint8_t type;              /* MVCCPB__EVENT__EVENT_TYPE__PUT / __DELETE */
  uint8_t is_create;         /* put with create == mod revision: etcd sends no prev_kv */
} watch_event;

/* A growable list of events; ev and buf are malloc'd by whoever builds it
 * and freed with it (watch_batch_free in actors/watch.h). */
typedef struct watch_batch {
  watch_event *ev;
  size_t n, cap;
  uint8_t *buf;
  size_t len, buf_cap;
} watch_batch;

/* apply -> watch, after the batch's LevelDB commit (so the watch actor's
 * history reads see it). Pushed with try_push: apply never waits for the
 * watch actor; a push that fails sets server.watch_dropped and the watch
 * actor catches its watchers up from history instead. Freed by watch. */
typedef struct msg_watch_events {
  msg_hdr hdr;
  int64_t rev_first, rev_last; /* the revisions this batch took */
  int omitted;                 /* 1: events not collected (out of memory);
                                * synced watchers that needed them catch up
                                * from history */
  int filtered;                /* 1: events no watcher could match were left
                                * out, by the filter of generation filter_gen
                                * or a later one (actors/watch_actor.c, "The
                                * filter"); 0: b holds every event */
  uint64_t filter_gen;
  watch_batch b;
} msg_watch_events;

enum watch_req_op { WATCH_OP_CREATE = 1, WATCH_OP_CANCEL, WATCH_OP_PROGRESS, WATCH_OP_GONE };

/* net -> watch: one decoded WatchRequest, or "the stream is gone". One
 * block (key and range_end follow in data); malloc'd by the net loop, freed
 * by the watch actor. */
typedef struct msg_watch_req {
  msg_hdr hdr;
  net_call call;
  int op;                  /* enum watch_req_op */
  int64_t watch_id;        /* create: client's (0 = assign); cancel: which */
  int64_t start_revision;
  uint8_t progress_notify, prev_kv, fragment, noput, nodelete;
  uint32_t key_len, end_len; /* data = key then range_end, as the client sent */
  _Alignas(8) uint8_t data[];
} msg_watch_req;

/* Shared between the watch actor and the loop of one stream: how much of
 * what the actor posted the loop has taken. Reference counted: the watch
 * actor holds one while it knows the stream, each MSG_WATCH_OUT in flight
 * holds one; the last to drop it frees it. */
typedef struct watch_feedback {
  _Atomic int refs;
  _Atomic uint64_t delivered;     /* bytes of posted records handed to the stream (net) */
  _Atomic uint64_t pending;       /* net_stream_pending_bytes after the last send (net) */
  _Atomic uint64_t probes_done;   /* empty MSG_WATCH_OUTs handled (net) */
} watch_feedback;

/* watch -> net: packed WatchResponses for one stream, each as
 * | len u32 (host order) | bytes |. len == 0 overall: a probe that only asks
 * the loop to refresh fb->pending. buf is malloc'd by the watch actor and
 * freed with the message by the net loop; fb is released (refs) there. */
typedef struct msg_watch_out {
  msg_hdr hdr;
  net_call call;
  watch_feedback *fb;
  _Atomic uint64_t *loop_handled; /* the loop counts the messages it handled
                                   * (owned by the watch actor, outlives the loops) */
  _Atomic int64_t *unsent;        /* the server-wide count of watch output not
                                   * yet written (watch.h, "the budget"): the
                                   * loop subtracts len once it has handed the
                                   * records to the stream, which counts them
                                   * again until the socket takes them (owned
                                   * by the server; NULL: none) */
  uint8_t *buf;
  size_t len;
} msg_watch_out;

#endif
