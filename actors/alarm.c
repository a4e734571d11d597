/*
 * alarm.c -- the alarm store and the space quota's cost rules.
 *
 * Contract
 *   Thread:   the apply thread calls everything named alarm_* except
 *             alarm_member_text and alarm_nospace_proposal (any thread);
 *             quota_* run on any thread.
 *   Owns:     the alarm set (etcd's v3alarm.AlarmStore): one entry per
 *             (member, type), sorted by (type, member), at most ALARMS_MAX.
 *   Persists: "alarm/" + member (8 bytes BE) + type (4 bytes BE) -> empty,
 *             through mvcc_meta_put/delete, so a change commits in the
 *             batch's one LevelDB write with the consistent index (etcd
 *             writes the "alarm" bucket in the backend's batch the same way).
 *             Loaded on open: an alarm survives a restart until disarmed.
 *   Publishes: after a batch commit that changed the set, an immutable copy
 *             (alarm_view) through server.alarms with rcu_assign_pointer;
 *             the old copy goes with call_rcu. Net loops read it for Status
 *             and for the quota's "already raised" check.
 *
 * etcd's semantics (etcdserver/apply.go Alarm, applierV3Capped,
 * applierV3Corrupt, quotaApplierV3; etcdserver/server.go restoreAlarms):
 *   GET         the alarms of the given type (NONE: all), any member;
 *   ACTIVATE    adds (member, type) if absent; the response lists the entry
 *               (new or existing). The first NOSPACE caps the store, the
 *               first CORRUPT corrupts it;
 *   DEACTIVATE  removes (member, type) if present and lists it; else empty.
 * etcd switches its applier chain on the first activation / last
 * deactivation, and a later switch can drop the other alarm's applier until
 * a restart; here both gates follow the set itself, in restoreAlarms's
 * order (corrupt outermost), which is what etcd does after a restart.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/log.h"
#include "actors/maint.h"
#include "msg/errors.h"

#define META_PREFIX "alarm/"
#define META_PREFIX_LEN 6
#define META_KEY_LEN (META_PREFIX_LEN + 12)

struct alarm_state {
  server *s;
  alarm_member v[ALARMS_MAX];
  size_t n;
  bool dirty;           /* changed since the last publish */
};

/* --- text and quota: any thread ------------------------------------------ */

const char *alarm_type_name(int32_t t) {
  switch (t) {
  case ETCDSERVERPB__ALARM_TYPE__NONE: return "NONE";
  case ETCDSERVERPB__ALARM_TYPE__NOSPACE: return "NOSPACE";
  case ETCDSERVERPB__ALARM_TYPE__CORRUPT: return "CORRUPT";
  default: return NULL;
  }
}

size_t alarm_member_text(const alarm_member *m, char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
  if (m->member_id) n += (size_t)snprintf(out + n, cap - n, "memberID:%llu ", (unsigned long long)m->member_id);
  if (m->type && n < cap) {
    const char *name = alarm_type_name(m->type);
    if (name) n += (size_t)snprintf(out + n, cap - n, "alarm:%s ", name);
    else n += (size_t)snprintf(out + n, cap - n, "alarm:%d ", (int)m->type);
  }
  return n < cap ? n : cap - 1;
}

int64_t quota_cost_put(const Etcdserverpb__PutRequest *r) {
  return QUOTA_KV_OVERHEAD + (int64_t)r->key.len + (int64_t)r->value.len;
}

static int64_t cost_branch(Etcdserverpb__RequestOp *const *ops, size_t n) {
  int64_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (ops[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT) c += quota_cost_put(ops[i]->request_put);
  return c;
}

int64_t quota_cost_txn(const Etcdserverpb__TxnRequest *r) {
  int64_t cs = cost_branch(r->success, r->n_success), cf = cost_branch(r->failure, r->n_failure);
  return cs > cf ? cs : cf;
}

bool quota_available(server *s, int64_t cost) {
  int64_t quota = s->opt.quota_bytes;
  if (quota <= 0 || cost == 0) return true;
  return (int64_t)mvcc_db_size_bytes(s->store) + cost < quota;
}

msg_propose *alarm_nospace_proposal(server *s, net_call call) {
  Etcdserverpb__AlarmRequest ar = ETCDSERVERPB__ALARM_REQUEST__INIT;
  ar.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
  ar.memberid = s->member_id;
  ar.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
  Cetcdpb__InternalRequest ir = CETCDPB__INTERNAL_REQUEST__INIT;
  ir.proposer = s->member_id;
  ir.boot = s->boot_nonce;
  ir.reply_token = (uint64_t)call.loop << 32 | call.conn_slot;
  ir.reply_stream = (uint64_t)call.conn_gen << 32 | (uint32_t)call.stream_id;
  ir.reply_nospace = 1;
  ir.request_case = CETCDPB__INTERNAL_REQUEST__REQUEST_ALARM;
  ir.alarm = &ar;
  size_t len = cetcdpb__internal_request__get_packed_size(&ir);
  msg_propose *p = malloc(sizeof(*p) + len);
  if (!p) return NULL;
  p->hdr.kind = MSG_PROPOSE;
  p->call = call;
  p->len = (uint32_t)len;
  cetcdpb__internal_request__pack(&ir, p->data);
  return p;
}

/* --- the set: apply thread --------------------------------------------------- */

static int cmp_member(const alarm_member *a, const alarm_member *b) {
  if (a->type != b->type) return a->type < b->type ? -1 : 1;
  if (a->member_id != b->member_id) return a->member_id < b->member_id ? -1 : 1;
  return 0;
}

/* Index of m, or of where it would go (*found false). */
static size_t find(const alarm_state *as, const alarm_member *m, bool *found) {
  size_t lo = 0, hi = as->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = cmp_member(&as->v[mid], m);
    if (c == 0) {
      *found = true;
      return mid;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  *found = false;
  return lo;
}

static bool insert(alarm_state *as, const alarm_member *m) {
  bool found;
  size_t i = find(as, m, &found);
  if (found) return true;
  if (as->n == ALARMS_MAX) return false;
  memmove(&as->v[i + 1], &as->v[i], (as->n - i) * sizeof(as->v[0]));
  as->v[i] = *m;
  as->n++;
  as->dirty = true;
  return true;
}

static void meta_key(uint8_t out[META_KEY_LEN], const alarm_member *m) {
  memcpy(out, META_PREFIX, META_PREFIX_LEN);
  for (int i = 0; i < 8; i++) out[META_PREFIX_LEN + i] = (uint8_t)(m->member_id >> (56 - 8 * i));
  for (int i = 0; i < 4; i++) out[META_PREFIX_LEN + 8 + i] = (uint8_t)((uint32_t)m->type >> (24 - 8 * i));
}

static bool load_one(void *arg, const void *key, size_t key_len, const void *val, size_t val_len) {
  (void)val, (void)val_len;
  alarm_state *as = arg;
  if (key_len != META_KEY_LEN) return true;
  const uint8_t *k = (const uint8_t *)key + META_PREFIX_LEN;
  alarm_member m = {0};
  for (int i = 0; i < 8; i++) m.member_id = m.member_id << 8 | k[i];
  uint32_t t = 0;
  for (int i = 0; i < 4; i++) t = t << 8 | k[8 + i];
  m.type = (int32_t)t;
  if (!insert(as, &m)) log_printf(LOG_LEVEL_ERROR, "alarm", "more than %d alarms stored; ignoring the rest", ALARMS_MAX);
  return true;
}

static void free_view(struct rcu_head *h) { free(caa_container_of(h, alarm_view, rcu)); }

void alarm_publish(alarm_state *as) {
  if (!as->dirty) return;
  alarm_view *v = malloc(sizeof(*v) + as->n * sizeof(alarm_member));
  if (!v) return; /* stays dirty: the next batch retries */
  v->n = as->n;
  memcpy(v->v, as->v, as->n * sizeof(alarm_member));
  alarm_view *old = as->s->alarms;
  rcu_assign_pointer(as->s->alarms, v);
  if (old) call_rcu(&old->rcu, free_view);
  as->dirty = false;
}

alarm_state *alarm_state_open(server *s) {
  alarm_state *as = calloc(1, sizeof(*as));
  if (!as) return NULL;
  as->s = s;
  mvcc_meta_scan(s->store, META_PREFIX, META_PREFIX_LEN, load_one, as);
  as->dirty = true;
  alarm_publish(as);
  for (size_t i = 0; i < as->n; i++) {
    char text[64];
    alarm_member_text(&as->v[i], text, sizeof(text));
    log_printf(LOG_LEVEL_WARNING, "alarm", "alarm restored: %s", text);
  }
  return as;
}

void alarm_state_close(alarm_state *as) {
  if (!as) return;
  alarm_view *old = as->s->alarms;
  rcu_assign_pointer(as->s->alarms, NULL);
  synchronize_rcu();
  free(old);
  rcu_barrier(); /* earlier views freed by call_rcu */
  free(as);
}

/* Is any member's alarm of this type active? The set is sorted by type. */
static bool has_type(const alarm_state *as, int32_t type) {
  alarm_member probe = {.member_id = 0, .type = type};
  bool found;
  size_t i = find(as, &probe, &found);
  return found || (i < as->n && as->v[i].type == type);
}

bool alarm_nospace_any(const alarm_state *as) { return has_type(as, ETCDSERVERPB__ALARM_TYPE__NOSPACE); }

static bool ops_readonly(Etcdserverpb__RequestOp *const *ops, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE) return false;
  return true;
}

static bool txn_readonly(const Etcdserverpb__TxnRequest *r) {
  return ops_readonly(r->success, r->n_success) && ops_readonly(r->failure, r->n_failure);
}

int alarm_gate(const alarm_state *as, const Cetcdpb__InternalRequest *req) {
  if (as->n == 0) return 0;
  switch (req->request_case) {
  case CETCDPB__INTERNAL_REQUEST__REQUEST_RANGE: /* applierV3Corrupt refuses all of these */
  case CETCDPB__INTERNAL_REQUEST__REQUEST_DELETE_RANGE:
  case CETCDPB__INTERNAL_REQUEST__REQUEST_COMPACTION:
  case CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_REVOKE:
    return has_type(as, ETCDSERVERPB__ALARM_TYPE__CORRUPT) ? -CETCD_E_CORRUPT : 0;
  case CETCDPB__INTERNAL_REQUEST__REQUEST_PUT: /* ... and applierV3Capped these */
  case CETCDPB__INTERNAL_REQUEST__REQUEST_LEASE_GRANT:
    if (has_type(as, ETCDSERVERPB__ALARM_TYPE__CORRUPT)) return -CETCD_E_CORRUPT;
    return has_type(as, ETCDSERVERPB__ALARM_TYPE__NOSPACE) ? -CETCD_E_NO_SPACE : 0;
  case CETCDPB__INTERNAL_REQUEST__REQUEST_TXN:
    /* etcd serves a txn of ranges only (isTxnReadonly) without the log,
     * so no alarm applier sees it */
    if (txn_readonly(req->txn)) return 0;
    if (has_type(as, ETCDSERVERPB__ALARM_TYPE__CORRUPT)) return -CETCD_E_CORRUPT;
    if (!has_type(as, ETCDSERVERPB__ALARM_TYPE__NOSPACE)) return 0;
    return quota_cost_txn(req->txn) > 0 ? -CETCD_E_NO_SPACE : 0;
  default:
    return 0;
  }
}

static void log_change(const alarm_member *m, const char *what) {
  char text[64];
  alarm_member_text(m, text, sizeof(text));
  log_printf(LOG_LEVEL_WARNING, "alarm", "%s: %s", what, text);
}

/* Fills resp->alarms from the set: the entries of `type` (NONE: all), in
 * store[] (room for every entry) pointed to by ptrs[]. */
static void list(alarm_state *as, Etcdserverpb__AlarmResponse *resp, Etcdserverpb__AlarmMember *store,
                Etcdserverpb__AlarmMember **ptrs, int32_t type) {
  size_t n = 0;
  for (size_t i = 0; i < as->n; i++) {
    if (type != ETCDSERVERPB__ALARM_TYPE__NONE && as->v[i].type != type) continue;
    etcdserverpb__alarm_member__init(&store[n]);
    store[n].memberid = as->v[i].member_id;
    store[n].alarm = (Etcdserverpb__AlarmType)as->v[i].type;
    ptrs[n] = &store[n];
    n++;
  }
  resp->n_alarms = n;
  resp->alarms = n ? ptrs : NULL;
}

static int activate(alarm_state *as, const alarm_member *m) {
  bool had_type = has_type(as, m->type);
  bool found;
  find(as, m, &found);
  if (found) return 1;
  if (!insert(as, m)) {
    log_change(m, "too many alarms; not raised");
    return 0;
  }
  uint8_t k[META_KEY_LEN];
  meta_key(k, m);
  if (mvcc_meta_put(as->s->store, k, sizeof(k), "", 0) < 0) return -CETCD_E_INTERNAL;
  if (!had_type) log_change(m, "alarm raised");
  return 1;
}

static int deactivate(alarm_state *as, const alarm_member *m) {
  bool found;
  size_t i = find(as, m, &found);
  if (!found) return 0;
  memmove(&as->v[i], &as->v[i + 1], (as->n - i - 1) * sizeof(as->v[0]));
  as->n--;
  as->dirty = true;
  uint8_t k[META_KEY_LEN];
  meta_key(k, m);
  if (mvcc_meta_delete(as->s->store, k, sizeof(k)) < 0) return -CETCD_E_INTERNAL;
  if (!has_type(as, m->type)) log_change(m, "alarm disarmed");
  return 1;
}

static uint8_t *pack_response(const Etcdserverpb__AlarmResponse *r, size_t *len, int *err) {
  *len = etcdserverpb__alarm_response__get_packed_size(r);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (!buf) {
    *err = -CETCD_E_NOMEM;
    return NULL;
  }
  etcdserverpb__alarm_response__pack(r, buf);
  *err = 0;
  return buf;
}

uint8_t *alarm_apply(alarm_state *as, const Etcdserverpb__AlarmRequest *req, size_t *len, int *err) {
  Etcdserverpb__AlarmResponse resp = ETCDSERVERPB__ALARM_RESPONSE__INIT;
  alarm_member m = {.member_id = req->memberid, .type = (int32_t)req->alarm};
  Etcdserverpb__AlarmMember one, *one_p = &one;
  int rc = 0;
  switch (req->action) {
  case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET: {
    /* ALARMS_MAX entries: on the heap, packed before it is freed */
    Etcdserverpb__AlarmMember *store = malloc((as->n ? as->n : 1) * sizeof(*store));
    Etcdserverpb__AlarmMember **ptrs = malloc((as->n ? as->n : 1) * sizeof(*ptrs));
    uint8_t *buf = NULL;
    if (store && ptrs) {
      list(as, &resp, store, ptrs, m.type);
      buf = pack_response(&resp, len, err);
    } else {
      *err = -CETCD_E_NOMEM;
    }
    free(store);
    free(ptrs);
    return buf;
  }
  case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE:
    rc = activate(as, &m);
    break;
  case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE:
    rc = deactivate(as, &m);
    break;
  default: /* etcd: an unknown action does nothing */
    break;
  }
  if (rc < 0) {
    *err = rc;
    return NULL;
  }
  if (rc == 1) {
    etcdserverpb__alarm_member__init(&one);
    one.memberid = m.member_id;
    one.alarm = (Etcdserverpb__AlarmType)m.type;
    resp.n_alarms = 1;
    resp.alarms = &one_p;
  }
  return pack_response(&resp, len, err);
}
