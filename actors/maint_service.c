/*
 * maint_service.c -- the Maintenance service on the net loops.
 *
 * Contract
 *   Threads:  every net loop (RCU-registered); no state of its own.
 *   Consumes: gRPC messages for the etcdserverpb.Maintenance methods.
 *   Produces: MSG_PROPOSE into s->raft_mb: Alarm requests (the client's
 *             bytes, like a KV write) and the NOSPACE alarm a refused write
 *             raises (quota_refuse). A full raft mailbox makes the push
 *             wait, as for every write: back-pressure reaches the clients.
 *   Status:   answered right here, never waiting on another actor: the
 *             leader, term and commit index raft publishes, the applied
 *             index apply publishes (server.h atomics), the store's revision
 *             and size (mvcc), and the alarm view apply publishes under RCU.
 *             Like etcd's it is not linearizable: each field is current
 *             when read. The applied index is read before the commit index,
 *             so raftAppliedIndex <= raftIndex always holds.
 *   Alarm:    every action (GET too) goes through the log and is answered by
 *             apply after the entry is applied, as etcd's Alarm does
 *             (raftRequestOnce).
 *   Others:   Defragment, Hash, HashKV, Snapshot, MoveLeader answer
 *             UNIMPLEMENTED "method <M> not implemented" (grpc-go's words for
 *             a registered method without an implementation).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/maint.h"
#include "actors/version.h"
#include "msg/errors.h"

static void reply_err(net_loop *loop, net_call call, int err) {
  net_reply_error(loop, call, cetcd_err_code(err), cetcd_err_msg(err));
}

/* Is this member's NOSPACE alarm active (as last published)? */
static bool nospace_raised(server *s) {
  bool raised = false;
  rcu_read_lock();
  const alarm_view *v = rcu_dereference(s->alarms);
  for (size_t i = 0; v && i < v->n && !raised; i++)
    raised = v->v[i].type == ETCDSERVERPB__ALARM_TYPE__NOSPACE && v->v[i].member_id == s->member_id;
  rcu_read_unlock();
  return raised;
}

int quota_refuse(server *s, net_call call) {
  if (nospace_raised(s)) return -1; /* etcd proposes it again; applying it would change nothing */
  msg_propose *p = alarm_nospace_proposal(s, call);
  if (!p) return -1;
  mailbox_push(&s->raft_mb, p);
  return 0;
}

/* Is `name` one of the exclude=<name> parameters of the query? */
static bool excluded(const char *query, const char *name) {
  size_t n = strlen(name);
  for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : NULL)
    if (strncmp(p, "exclude=", 8) == 0 && strncmp(p + 8, name, n) == 0 && (p[8 + n] == '&' || p[8 + n] == '\0'))
      return true;
  return false;
}

bool maint_healthy(server *s, const char *query) {
  bool healthy = true;
  rcu_read_lock();
  const alarm_view *v = rcu_dereference(s->alarms);
  for (size_t i = 0; v && i < v->n && healthy; i++) {
    char num[16];
    const char *name = alarm_type_name(v->v[i].type);
    if (!name) snprintf(num, sizeof(num), "%d", (int)v->v[i].type), name = num;
    healthy = excluded(query, name);
  }
  rcu_read_unlock();
  /* etcd then runs a QGET through its v2 store; cetcd has none: a member
   * with a leader that serves this request is as healthy as it can tell */
  return healthy && atomic_load(&s->leader) != RAFT_NONE;
}

/* StatusResponse.errors: "etcdserver: no leader" without a leader, then one
 * string per alarm (etcd's Status). Returns the count; *texts is malloc'd
 * (free it), NULL when there is nothing or no memory. */
static size_t status_errors(server *s, uint64_t leader, char ***texts) {
  enum { TEXT_MAX = 64 };
  *texts = NULL;
  rcu_read_lock();
  const alarm_view *v = rcu_dereference(s->alarms);
  size_t n_alarms = v ? v->n : 0, n = n_alarms + (leader == RAFT_NONE);
  char **t = n ? malloc(n * (sizeof(char *) + TEXT_MAX)) : NULL;
  size_t k = 0;
  if (t) {
    char *text = (char *)(t + n);
    if (leader == RAFT_NONE) {
      t[k] = text + k * TEXT_MAX;
      snprintf(t[k], TEXT_MAX, "%s", cetcd_err_msg(-CETCD_E_NO_LEADER));
      k++;
    }
    for (size_t i = 0; i < n_alarms; i++, k++) {
      t[k] = text + k * TEXT_MAX;
      alarm_member_text(&v->v[i], t[k], TEXT_MAX);
    }
  }
  rcu_read_unlock();
  *texts = t;
  return t ? k : 0;
}

static void on_status(server *s, net_loop *loop, net_call call, const uint8_t *msg, size_t len) {
  Etcdserverpb__StatusRequest *req = etcdserverpb__status_request__unpack(NULL, len, msg);
  if (!req) {
    reply_err(loop, call, -CETCD_E_MALFORMED);
    return;
  }
  etcdserverpb__status_request__free_unpacked(req, NULL);
  Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
  Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
  hdr.cluster_id = s->cluster_id;
  hdr.member_id = s->member_id;
  hdr.revision = mvcc_current_rev(s->store);
  hdr.raft_term = atomic_load(&s->term);
  r.header = &hdr;
  r.version = (char *)CETCD_ETCD_COMPAT_VERSION;
  r.raftappliedindex = atomic_load(&s->applied_index);
  r.raftindex = atomic_load(&s->commit_index);
  r.raftterm = hdr.raft_term;
  r.leader = atomic_load(&s->leader);
  /* etcd: the bbolt file's size, and the part of it not on the freelist.
   * LevelDB keeps no freelist (its compactions rewrite files), so every
   * byte of the store directory counts as in use. */
  r.dbsize = (int64_t)mvcc_db_size_bytes(s->store);
  r.dbsizeinuse = r.dbsize;
  r.islearner = 0; /* no learners until the Cluster service lands */
  char **texts;
  r.n_errors = status_errors(s, r.leader, &texts);
  r.errors = texts;
  size_t out_len = etcdserverpb__status_response__get_packed_size(&r);
  uint8_t *out = malloc(out_len ? out_len : 1);
  if (out) {
    etcdserverpb__status_response__pack(&r, out);
    net_reply(loop, call, out, out_len);
  } else {
    reply_err(loop, call, -CETCD_E_NOMEM);
  }
  free(out);
  free(texts);
}

static void on_alarm(server *s, net_loop *loop, net_call call, const uint8_t *msg, size_t len) {
  Etcdserverpb__AlarmRequest *req = etcdserverpb__alarm_request__unpack(NULL, len, msg);
  if (!req) {
    reply_err(loop, call, -CETCD_E_MALFORMED);
    return;
  }
  etcdserverpb__alarm_request__free_unpacked(req, NULL);
  msg_propose *p = server_proposal_new(s, call, PROPOSAL_FIELD_ALARM, msg, len);
  if (!p) {
    reply_err(loop, call, -CETCD_E_NOMEM);
  } else if (p->len > s->opt.max_request_bytes) { /* etcd checks every proposal */
    free(p);
    reply_err(loop, call, -CETCD_E_REQUEST_TOO_LARGE);
  } else {
    mailbox_push(&s->raft_mb, p);
  }
}

void maint_on_message(server *s, net_loop *loop, net_call call, int method, const uint8_t *msg, size_t len) {
  static const char *const unimplemented[] = {
      [M_MAINT_DEFRAGMENT - M_MAINT_STATUS] = "Defragment",
      [M_MAINT_HASH - M_MAINT_STATUS] = "Hash",
      [M_MAINT_HASHKV - M_MAINT_STATUS] = "HashKV",
      [M_MAINT_SNAPSHOT - M_MAINT_STATUS] = "Snapshot",
      [M_MAINT_MOVE_LEADER - M_MAINT_STATUS] = "MoveLeader",
  };
  if (method == M_MAINT_STATUS) {
    on_status(s, loop, call, msg, len);
  } else if (method == M_MAINT_ALARM) {
    on_alarm(s, loop, call, msg, len);
  } else {
    char text[64];
    snprintf(text, sizeof(text), "method %s not implemented", unimplemented[method - M_MAINT_STATUS]);
    net_reply_error(loop, call, GRPC_UNIMPLEMENTED, text);
  }
}
