/*
 * watch.h -- etcd's Watch service: the watch actor (actors/watch_actor.c) and
 * its net-loop half (actors/watch_service.c).
 *
 *   apply --MSG_WATCH_EVENTS--> watch actor --MSG_WATCH_OUT--> net loop --> stream
 *   net loop --MSG_WATCH_REQ--> watch actor
 *
 * The watcher registry itself (the "hub") is a pure core: no thread, no
 * clock, no mailbox. It reads history from the store and hands finished
 * output to a post callback. The actor drives it; unit tests drive it
 * directly (tests/unit/test_watch.c).
 */
#ifndef CETCD_ACTORS_WATCH_H
#define CETCD_ACTORS_WATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "msg/msgs.h"
#include "store/mvcc.h"

struct server;

/* --- limits ----------------------------------------------------------------
 * A stream whose unsent output (posted to its loop and not yet taken, plus
 * what the loop could not hand to the socket) exceeds HIGH gets no more
 * live events: its watchers move to the unsynced group. They are fed from
 * history again once it is below LOW. */
#define WATCH_STREAM_HIGH_BYTES (256 * 1024)
#define WATCH_STREAM_LOW_BYTES (64 * 1024)
/* The budget: watch output produced and not yet written to a socket, across
 * all streams (records the actor holds, posted to a loop, queued on a stream,
 * serialized on a connection; server.watch_unsent). Beyond it a stream above
 * LOW gets no more live events (it stalls, as a slow stream does, and its
 * watchers catch up from history later) and catch-up waits. So the total
 * stays under the budget plus, per stream, LOW and one revision's output
 * (plus a catch-up chunk), however many streams there are: 1,000 streams of
 * 100 watchers of one key each held up to HIGH, 256 MB, and with the copies
 * on their way through the loops the server peaked at 1.3-1.5 GB of RSS
 * against etcd's 220 MB. 64 MiB is ~40 responses of etcd's largest request
 * size (--max-request-bytes 1.5 MiB), and several hundred MB/s of sockets
 * drain it in a fraction of a second, so a reading client never waits on it.
 * While over it, one catch-up chunk still goes every WATCH_BUDGET_TRICKLE_MS:
 * streams that do not read cannot starve the ones that do. */
#define WATCH_UNSENT_BUDGET_BYTES (64 * 1024 * 1024)
#define WATCH_BUDGET_TRICKLE_MS 100
/* Records examined per catch-up chunk (store/mvcc_history.h), and bytes
 * read: WATCH_CATCHUP_BYTES shared by the watchers the chunk is for (each
 * gets its own copy of what matches), at least WATCH_CATCHUP_BYTES_MIN. So
 * one chunk's output stays around a MiB, and a response stays far below a
 * client's default 4 MiB receive limit. */
#define WATCH_CATCHUP_EVENTS 1024
#define WATCH_CATCHUP_BYTES (1024 * 1024)
#define WATCH_CATCHUP_BYTES_MIN (16 * 1024)
/* Watchers one chunk is for, at most (they take turns; etcd syncs 512 per
 * round): so n * WATCH_CATCHUP_BYTES_MIN stays within WATCH_CATCHUP_BYTES.
 * Without it, 10,000 watchers of one key that fell behind together got
 * 16 KiB of history each from one chunk: ~160 MB of output in one burst. */
#define WATCH_CATCHUP_WATCHERS (WATCH_CATCHUP_BYTES / WATCH_CATCHUP_BYTES_MIN)
/* MSG_WATCH_OUTs posted to one net loop and not handled yet, at most: the
 * watch actor never waits on a loop's mailbox (net_post would), since that
 * loop may itself be waiting for room in the watch mailbox. A stream whose
 * loop is that far behind keeps its records and counts as slow. */
#define WATCH_LOOP_MAX_MSGS 16384
/* Slots of the watch actor's mailbox. */
#define WATCH_MAILBOX_SLOTS 1024

/* --- the hub: the registry and the fan-out --------------------------------- */

typedef struct watch_hub watch_hub;

typedef struct watch_hub_env {
  mvcc *store;
  uint64_t cluster_id, member_id;
  _Atomic uint64_t *term;     /* raft term for headers (may be NULL: 0) */
  size_t max_request_bytes;   /* fragment size for fragment=true watchers */
  /* Takes ownership of m; returns 0, or -1 when it could not be delivered
   * (then it frees m, and releases m->fb). */
  int (*post)(void *arg, msg_watch_out *m);
  void *post_arg;
  _Atomic uint32_t *count;    /* watchers registered, for apply (may be NULL) */
  uint32_t n_loops;           /* net loops (call.loop < n_loops) */
  _Atomic uint64_t *loop_handled; /* [n_loops]: MSG_WATCH_OUTs each loop handled
                               * (NULL: no per-loop bound, e.g. unit tests) */
  _Atomic int64_t *unsent;    /* watch output not yet written, server-wide (the
                               * hub adds what it produces; whoever takes a
                               * MSG_WATCH_OUT subtracts its len, see
                               * msg_watch_out.unsent). NULL: the hub's own */
  size_t budget_bytes;        /* on *unsent (0: no budget) */
  uint64_t progress_ms;       /* progress-notify interval (0: no ticks) */
  uint64_t seed;              /* for the per-stream jitter of the ticks */
} watch_hub_env;

/* cur_rev: the store revision whose events are already applied (the hub
 * expects MSG_WATCH_EVENTS from cur_rev + 1 on). */
watch_hub *watch_hub_new(const watch_hub_env *env, int64_t cur_rev);
void watch_hub_free(watch_hub *h);

/* A request from a stream (takes nothing: m stays the caller's). */
void watch_hub_request(watch_hub *h, const msg_watch_req *m);
/* An applied batch (m stays the caller's). */
void watch_hub_events(watch_hub *h, const msg_watch_events *m);
/* Events up to `rev` may have been lost (a dropped batch): synced watchers
 * catch up from history. */
void watch_hub_gap(watch_hub *h, int64_t rev);
/* One bounded chunk of catch-up for unsynced watchers whose streams have
 * room. Returns true if it did something (call again soon). */
bool watch_hub_catch_up(watch_hub *h);
/* Periodic: probes stalled streams for their backlog. */
void watch_hub_tick(watch_hub *h);
/* The hub's clock (the driver's monotonic milliseconds): set it before
 * handing the hub requests, and before watch_hub_progress. */
void watch_hub_clock(watch_hub *h, uint64_t now_ms);
/* Progress notifications, etcd 3.4's per-stream ticker (v3rpc sendLoop):
 * each stream ticks every env.progress_ms plus a jitter below a tenth of it,
 * drawn once per stream, from when the hub first heard of the stream. At
 * its tick each synced progress_notify watcher of the stream that got no
 * event since the stream's last tick gets a notification. Runs the ticks
 * due by the clock. */
void watch_hub_progress(watch_hub *h);
/* When the next tick is due (UINT64_MAX: none). */
uint64_t watch_hub_progress_due(const watch_hub *h);
/* The filter of what is watched, for apply (watch_actor.c, "The filter").
 * Due when watchers came or went and the rate limit allows (by the clock);
 * _ms: when (UINT64_MAX: not needed). Build: a new filter of every watcher,
 * the hub's next generation (NULL: out of memory, still due). */
struct watch_filter;
bool watch_hub_filter_due(const watch_hub *h);
uint64_t watch_hub_filter_due_ms(const watch_hub *h);
struct watch_filter *watch_hub_filter_build(watch_hub *h);
/* True while some unsynced watcher waits for a stream to drain. */
bool watch_hub_waiting(const watch_hub *h);

typedef struct watch_hub_stats {
  uint64_t watchers, synced, unsynced, streams;
  uint64_t stalls;        /* streams moved to catch-up for being slow */
  uint64_t gaps;          /* batches lost or omitted that synced watchers needed */
  uint64_t fresh_gaps;    /* batches filtered before a new watcher was in the filter */
  uint64_t catchup_chunks;
  uint64_t budget_stalls; /* stalls (of those) for the budget, not HIGH */
  uint64_t budget_waits;  /* catch-up rounds that waited for the budget */
  int64_t unsent_peak;    /* the most *unsent the hub saw, bytes */
  int64_t cur_rev;
} watch_hub_stats;
void watch_hub_get_stats(const watch_hub *h, watch_hub_stats *st);

/* Batch helpers (apply side and catch-up). */
int watch_batch_add(watch_batch *b, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev);
void watch_batch_reset(watch_batch *b);
void watch_batch_free(watch_batch *b);
/* Releases one reference of fb (frees it at zero). */
void watch_feedback_release(watch_feedback *fb);
void watch_out_free(msg_watch_out *m);

/* --- the actor -------------------------------------------------------------- */

/* Before apply starts: mailbox, hub at the store's current revision, and
 * the apply side's collector. */
int watch_actor_init(struct server *s);
int watch_actor_start(struct server *s);
/* Before net_server_stop: no more posts to the net loops after it. */
void watch_actor_stop(struct server *s);
/* After apply and net stopped: frees what is left. */
void watch_actor_destroy(struct server *s);

/* Apply thread: around each batch (mvcc_set_event_fn is pointed at
 * watch_apply_event by watch_actor_init). */
void watch_apply_begin(struct server *s);
void watch_apply_event(void *arg, int type, const Mvccpb__KeyValue *kv, const Mvccpb__KeyValue *prev_kv);
bool watch_apply_want(void *arg, const uint8_t *key, size_t len); /* mvcc_event_want_fn */
void watch_apply_commit(struct server *s);
/* After the batch's replies were posted: wakes the watch actor if it must
 * see the batch now (it holds events, was dropped, or a new filter was
 * published since it began). */
void watch_apply_notify(struct server *s);

/* --- the net side (actors/watch_service.c), on the loop threads ------------- */
void watch_service_on_message(struct server *s, net_loop *loop, net_call call, const uint8_t *msg, size_t len);
void watch_service_on_stream_end(struct server *s, net_loop *loop, net_call call, net_end_reason why);
/* MSG_WATCH_OUT: sends, reports back, frees m. */
void watch_service_on_post(struct server *s, net_loop *loop, msg_watch_out *m);

#endif
