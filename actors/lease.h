/*
 * lease.h -- leases across the actors.
 *
 * Who owns what (see DESIGN.md's actor table; the lease "actor" is the apply
 * thread, see lease_apply.c for why):
 *   net loops   lease_service.c: decode the etcdserverpb.Lease calls; propose
 *               LeaseGrant (choosing the ID as etcd does) and LeaseRevoke;
 *               collect each turn's keepalives into one MSG_LEASE_RENEW;
 *               send LeaseTimeToLive / LeaseLeases as MSG_LEASE_QUERY.
 *   apply       lease_apply.c: the lessor (store/lessor.h): grants and
 *               revokes from committed entries (persisted with mvcc_meta_*,
 *               in the same LevelDB write as the batch), key attachment
 *               through mvcc_lease_hooks, renewals and queries from the
 *               loops, and, on the leader, expiry: revoke proposals pushed to
 *               raft at most LESSOR_REVOKE_RATE per second.
 */
#ifndef CETCD_ACTORS_LEASE_H
#define CETCD_ACTORS_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "actors/server.h"
#include "internal.pb-c.h"

/* Method ids of the Lease service (kv_service.c's method table holds the
 * paths; ids from here on belong to lease_service.c). */
enum lease_method {
  M_LEASE_GRANT = 100,
  M_LEASE_REVOKE,
  M_LEASE_KEEPALIVE,
  M_LEASE_TTL,
  M_LEASE_LEASES,
  M_LEASE_LAST_ = M_LEASE_LEASES
};

/* InternalRequest oneof field numbers (msg/proto/internal.proto). */
#define PROPOSAL_FIELD_LEASE_GRANT 15
#define PROPOSAL_FIELD_LEASE_REVOKE 16

/* --- net side (lease_service.c), each net loop's own state --------------- */
typedef struct lease_loop lease_loop;
lease_loop *lease_loop_new(server *s, net_loop *loop);
void lease_loop_free(lease_loop *ll);
void lease_on_message(lease_loop *ll, net_call call, int method, const uint8_t *msg, size_t len);
void lease_on_stream_end(lease_loop *ll, net_call call, int method, net_end_reason why);
/* End of a loop turn / tick: hand the turn's keepalives to apply. */
void lease_loop_flush(lease_loop *ll);
/* Seeds the lease ID generator (etcd's idutil: member id, start time). */
void lease_service_init(server *s);

/* --- apply side (lease_apply.c) ------------------------------------------- */
typedef struct lease_state lease_state;
/* On the apply thread before its first batch: loads persisted leases and
 * their keys, installs the mvcc lease hooks. NULL on allocation failure. */
lease_state *lease_state_open(server *s);
void lease_state_close(lease_state *ls);
/* Committed requests; return the packed response or NULL with *err. */
uint8_t *lease_apply_grant(lease_state *ls, const Etcdserverpb__LeaseGrantRequest *req, size_t *len, int *err);
uint8_t *lease_apply_revoke(lease_state *ls, const Etcdserverpb__LeaseRevokeRequest *req, arena *a,
                            size_t *len, int *err);
/* A new leader's empty entry applied: promote if this member leads. */
void lease_on_leader_entry(lease_state *ls);
/* One keepalive: the packed LeaseKeepAliveResponse (NULL: out of memory). */
uint8_t *lease_renew(lease_state *ls, int64_t id, size_t *len);
uint8_t *lease_query(lease_state *ls, const msg_lease_query *q, size_t *len, int *err);
/* Expiry (leader only) and leadership changes; returns the ms until it
 * wants to run again (-1: nothing scheduled). */
int lease_tick(lease_state *ls);

#endif
