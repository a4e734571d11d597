/*
 * server.h -- one cetcd member: the actors, their mailboxes, and what they
 * publish to each other.
 *
 * Threads (see DESIGN.md):
 *   net loops  net/server.c + actors/kv_service.c: decode, validate, serve
 *              serializable reads, propose writes, batch linearizable reads
 *   raft       actors/raft_actor.c: the Raft core, ticks, ready handling
 *   wal        actors/wal_actor.c: append + one fdatasync per batch
 *   apply      actors/apply_actor.c: committed entries -> MVCC, replies;
 *              the lease state (actors/lease_apply.c, see actors/lease.h)
 *   watch      actors/watch_actor.c: the watcher registry, event fan-out,
 *              catch-up from history (net side: actors/watch_service.c)
 *
 * Shared fields written by one actor and read by others are atomics, named
 * for the actor that writes them.
 */
#ifndef CETCD_ACTORS_SERVER_H
#define CETCD_ACTORS_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "msg/mailbox.h"
#include "msg/msgs.h"
#include "net/server.h"
#include "raft/raft.h"
#include "store/mvcc.h"
#include "store/wal.h"

typedef struct kv_loop kv_loop;

typedef struct server_opts {
  const char *name;
  const char *data_dir;
  const char *const *listen_client; /* host:port */
  size_t n_listen_client;
  const char *const *advertise_client_urls;
  size_t n_advertise_client;
  uint64_t member_id;       /* from flags; a restart takes the WAL's */
  uint64_t cluster_id;
  uint64_t max_request_bytes;
  uint32_t max_txn_ops;
  int64_t quota_bytes;      /* writes refused past this store size; <= 0: no limit */
  uint64_t snapshot_count;  /* applied entries between store syncs + WAL releases */
  uint32_t heartbeat_ms;
  uint32_t election_ms;
  uint32_t net_loops;
  int64_t watch_progress_ns; /* --experimental-watch-progress-notify-interval; <= 0: 10m (watch) */
} server_opts;

typedef struct server {
  server_opts opt;
  uint64_t member_id;
  uint64_t cluster_id;
  uint64_t boot_nonce;      /* this process incarnation: replies go only to it */

  mvcc *store;
  wal *wal;
  /* set by main once the member is ready, before any client can send; freed
   * only after every actor that posts to it has stopped */
  net_server *_Atomic net;
  kv_loop **loops;          /* per net loop, created on that loop's thread */

  mailbox raft_mb;          /* proposals and read batches from the net loops */
  mailbox raft_ctl_mb;      /* durable notices from the WAL, store-synced notices
                             * from apply: never behind proposals, so a full
                             * proposal ring cannot stall the WAL */
  mailbox wal_mb;           /* record batches */
  mailbox apply_mb;         /* committed entries, read batches */

  pthread_t raft_th, wal_th, apply_th;

  /* --- watch (actors/watch.h) --- */
  mailbox watch_mb;         /* event batches from apply, requests from the net loops */
  pthread_t watch_th;
  struct watch_actor *watch; /* owned by the watch actor; NULL when not started */
  _Atomic uint32_t watch_count;  /* watchers registered (written by watch; apply
                                  * filters events by the watch actor's filter) */
  _Atomic int watch_dropped;     /* apply: an event batch did not fit the watch
                                  * mailbox (watch clears it and catches up) */
  _Atomic int watch_stopped;     /* main: the watch actor is stopping; nobody
                                  * pushes to watch_mb any more */
  _Atomic int64_t watch_unsent;  /* watch output not yet written to a socket,
                                  * bytes (watch: + produced; net: - written;
                                  * actors/watch.h, "the budget") */

  /* Restart state read from the WAL before the raft actor starts; the raft
   * actor takes ownership of the entries. */
  raft_boot boot;
  uint64_t wal_last_index;

  /* written by raft */
  _Atomic uint64_t term;
  _Atomic uint64_t leader;
  _Atomic uint64_t commit_index;
  /* written by apply */
  _Atomic uint64_t applied_index;
  struct alarm_view *alarms; /* RCU: rcu_dereference under rcu_read_lock
                              * (actors/maint.h); NULL before apply starts */
  /* written by main */
  _Atomic int stopping;
  _Atomic int fatal;        /* an actor hit an unrecoverable error */
} server;

/* WAL record payloads written by the raft actor (little-endian). */
size_t rec_entry_size(uint32_t data_len);
/* | term u64 | type u8 | data | */
void rec_entry_encode(uint8_t *out, uint64_t term, uint8_t type, const uint8_t *data, uint32_t len);
int rec_entry_decode(const uint8_t *buf, size_t len, uint64_t *term, uint8_t *type,
                     const uint8_t **data, uint32_t *data_len);
/* | term | vote | commit | */
void rec_hard_state_encode(uint8_t out[24], const raft_hard_state *hs);
int rec_hard_state_decode(const uint8_t *buf, size_t len, raft_hard_state *hs);
/* | index | term | n_voters u32 | voters u64... | */
size_t rec_snapshot_encode(uint8_t *out, size_t cap, const raft_snapshot_meta *m);
int rec_snapshot_decode(const uint8_t *buf, size_t len, raft_snapshot_meta *m);
/* | member_id | cluster_id | */
void rec_meta_encode(uint8_t out[16], uint64_t member_id, uint64_t cluster_id);
int rec_meta_decode(const uint8_t *buf, size_t len, uint64_t *member_id, uint64_t *cluster_id);

/* Little-endian helpers. */
static inline void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t get_u64le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Actors. Each *_start spawns its thread; they stop when s->stopping is set
 * and a MSG_STOP reaches their mailbox. */
int wal_actor_start(server *s);
int raft_actor_start(server *s);
int apply_actor_start(server *s);
/* Loads the WAL (replay) into s->boot; opens s->wal. */
int server_load_wal(server *s, const char *wal_dir, char *err, size_t err_len);

/* Net side: handlers for the KV, Watch, Lease and Maintenance services and
 * the unimplemented ones. */
void kv_service_config(server *s, net_config *cfg, net_handlers *h);
/* The Raft log entry for a client request: an InternalRequest naming this
 * member and `call`, with `msg` as its request oneof field `field`.
 * Allocated here; NULL if out of memory. */
msg_propose *server_proposal_new(server *s, net_call call, unsigned field, const uint8_t *msg, size_t len);
/* Posts a batch of replies for loop `loop` (takes ownership of m). */
void server_post_replies(server *s, uint32_t loop, msg_replies *m);

void server_fatal(server *s, const char *what, int err);

#endif
