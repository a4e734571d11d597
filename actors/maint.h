/*
 * maint.h -- the Maintenance service (Status, Alarm), alarms and the space
 * quota, across the actors.
 *
 * Who owns what:
 *   net loops   maint_service.c: Status is answered on the loop from what
 *               the other actors publish (atomics in server.h, the RCU alarm
 *               view below); Alarm requests are proposed, as etcd does
 *               (every action, GET included, goes through the log).
 *               Defragment, Hash, HashKV, Snapshot and MoveLeader answer
 *               UNIMPLEMENTED "method <M> not implemented".
 *   apply       alarm.c: the alarm store (etcd's v3alarm.AlarmStore):
 *               alarms applied from the log, persisted with mvcc_meta_*
 *               in the batch's LevelDB write, loaded at start; the gates
 *               etcd's applierV3Capped / applierV3Corrupt put in front of
 *               the store; publishes the alarm view after each batch commit
 *               that changed it.
 *   quota       etcd's etcdserver/quota.go and v3rpc/quota.go: a write
 *               whose cost would take the store to --quota-backend-bytes is
 *               refused and raises a NOSPACE alarm for this member. The
 *               alarm is sticky: while any NOSPACE alarm is active, apply
 *               refuses puts, txns with puts and lease grants even when
 *               space was freed, until `etcdctl alarm disarm`.
 */
#ifndef CETCD_ACTORS_MAINT_H
#define CETCD_ACTORS_MAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <urcu.h>

#include "actors/server.h"
#include "internal.pb-c.h"

/* Method ids of the Maintenance service (kv_service.c's method table holds
 * the paths; ids from here on belong to maint_service.c). */
enum maint_method {
  M_MAINT_STATUS = 200,
  M_MAINT_ALARM,
  M_MAINT_DEFRAGMENT, /* not served yet: UNIMPLEMENTED, as grpc-go words it */
  M_MAINT_HASH,
  M_MAINT_HASHKV,
  M_MAINT_SNAPSHOT,
  M_MAINT_MOVE_LEADER,
  M_MAINT_LAST_ = M_MAINT_MOVE_LEADER
};

/* InternalRequest oneof field number (msg/proto/internal.proto). */
#define PROPOSAL_FIELD_ALARM 17

/* At most this many alarms are stored. etcd keeps one per (member, type);
 * past the limit an ACTIVATE of a new pair is ignored (deterministically,
 * on every member) and logged. */
#define ALARMS_MAX 1024

typedef struct alarm_member {
  uint64_t member_id;
  int32_t type;         /* ETCDSERVERPB__ALARM_TYPE__* (any value a client sent) */
} alarm_member;

/* The alarms as the net loops see them: immutable once published through
 * server.alarms with rcu_assign_pointer (apply is the only writer); read
 * under rcu_read_lock; the old one is freed after a grace period. Sorted by
 * (type, member). */
typedef struct alarm_view {
  struct rcu_head rcu;
  size_t n;
  alarm_member v[];
} alarm_view;

/* etcd's AlarmMember.String() (gogo CompactTextString): "memberID:<id>
 * alarm:<NAME> " with zero fields left out and a trailing space. Returns the
 * length written (cap >= 64 always suffices). */
size_t alarm_member_text(const alarm_member *m, char *out, size_t cap);

/* "NOSPACE", "CORRUPT", "NONE", or NULL for a value etcd has no name for. */
const char *alarm_type_name(int32_t type);

/* --- quota (any thread) ------------------------------------------------------ */
#define QUOTA_KV_OVERHEAD 256   /* etcd's kvOverhead */
#define QUOTA_LEASE_OVERHEAD 64 /* etcd's leaseOverhead */
int64_t quota_cost_put(const Etcdserverpb__PutRequest *r);
/* The costlier branch's direct puts (nested txns cost nothing, as in etcd). */
int64_t quota_cost_txn(const Etcdserverpb__TxnRequest *r);
/* etcd's backendQuota.Available: cost 0 or store size + cost < quota. */
bool quota_available(server *s, int64_t cost);

/* --- net side ---------------------------------------------------------------- */
void maint_on_message(server *s, net_loop *loop, net_call call, int method, const uint8_t *msg, size_t len);
/* A write the quota refused on a net loop (etcd's quotaAlarmer.check):
 * unless this member's NOSPACE alarm is already active, proposes it with
 * `call` attached, and apply answers the call with NO_SPACE once the alarm
 * is applied; then returns 0. Otherwise (already active, out of memory)
 * returns -1 and the caller answers NO_SPACE at once. */
int quota_refuse(server *s, net_call call);
/* etcd's /health check (etcdhttp checkHealth): false while an alarm is
 * active whose type is not named by an exclude=<TYPE> parameter of `query`
 * (the part after '?'), or while there is no leader. */
bool maint_healthy(server *s, const char *query);

/* --- apply side (alarm.c) ------------------------------------------------------ */
typedef struct alarm_state alarm_state;
/* On the apply thread before its first batch: loads the persisted alarms
 * and publishes them. NULL on allocation failure. */
alarm_state *alarm_state_open(server *s);
/* On the apply thread at its end: unpublishes and frees. */
void alarm_state_close(alarm_state *as);
/* A committed AlarmRequest: the packed AlarmResponse (no header, as etcd's
 * apply returns it) or NULL with *err. */
uint8_t *alarm_apply(alarm_state *as, const Etcdserverpb__AlarmRequest *req, size_t *len, int *err);
/* etcd's appliers in front of the store, in etcd's order after a restart
 * (corrupt outermost): 0 or the error the committed request gets. */
int alarm_gate(const alarm_state *as, const Cetcdpb__InternalRequest *req);
bool alarm_nospace_any(const alarm_state *as);
/* After the batch's LevelDB write, before its replies leave: publish the
 * alarm view if the batch changed it. */
void alarm_publish(alarm_state *as);
/* A NOSPACE ACTIVATE for this member, waiting client `call` attached (or
 * loop UINT32_MAX: nobody waits) with reply_nospace set. Allocated here;
 * NULL if out of memory. */
msg_propose *alarm_nospace_proposal(server *s, net_call call);

#endif
