/*
 * leader.c -- --target-leader: send everything to the leader.
 *
 * etcd's tool (--target-leader) asks the cluster for its status and dials
 * only the leader's client URL. Here: Maintenance.Status on every
 * --endpoints entry; each answer names the member that answered
 * (header.member_id) and the leader it knows (leader). The endpoint whose
 * member id is the leader becomes the only endpoint. Status is a unary
 * call with an empty request; the response is read with pbscan.c, so the
 * bench needs no Maintenance messages in its protos.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench/cetcd-bench/bench.h"
#include "bench/cetcd-bench/pbscan.h"
#include "cli/client/client.h"

#define CC_PATH_STATUS "/etcdserverpb.Maintenance/Status"
#define STATUS_TIMEOUT_S 5.0

typedef struct status_call {
  int done, status;
  char message[200];
  uint64_t member_id, leader;
} status_call;

static void on_status(void *ud, const cc_reply *r) {
  status_call *c = ud;
  c->done = 1;
  c->status = r->status;
  snprintf(c->message, sizeof c->message, "%s", r->message);
  if (r->status == CC_STATUS_OK &&
      pb_status_scan(r->data, r->len, &c->member_id, &c->leader) != 0) {
    c->status = CC_STATUS_INTERNAL;
    snprintf(c->message, sizeof c->message, "undecodable StatusResponse");
  }
}

/* Status of endpoint i; returns 0 and fills c, or -1 (reason printed). */
static int endpoint_status(const bench_cfg *cfg, int i, status_call *c) {
  memset(c, 0, sizeof *c);
  cc_loop *loop = cc_loop_new();
  cc_conn *conn = NULL;
  int rc = -1;
  if (!loop) goto out;
  if (bench_connect(cfg, loop, &conn, 1, i, 1) != 0) {
    fprintf(stderr, "cetcd-bench: --target-leader: cannot connect to %s\n", cfg->endpoints[i]);
    goto out;
  }
  if (cc_unary_raw(conn, CC_PATH_STATUS, "", 0, on_status, c) != 0) goto out;
  double deadline = bench_now_s() + STATUS_TIMEOUT_S;
  while (!c->done && bench_now_s() < deadline) cc_loop_run_once(loop, 50);
  if (!c->done) {
    fprintf(stderr, "cetcd-bench: --target-leader: Maintenance.Status on %s: no answer in %.0f s\n",
            cfg->endpoints[i], STATUS_TIMEOUT_S);
  } else if (c->status != CC_STATUS_OK) {
    fprintf(stderr, "cetcd-bench: --target-leader: Maintenance.Status on %s failed: %s: %s%s\n",
            cfg->endpoints[i], cc_status_name(c->status), c->message,
            c->status == CC_STATUS_UNIMPLEMENTED ? " (the server does not implement it)" : "");
  } else {
    rc = 0;
  }
out:
  if (loop) cc_loop_free(loop);
  return rc;
}

int bench_target_leader(bench_cfg *cfg) {
  int leader_ep = -1, answered = 0;
  uint64_t leader = 0;
  for (int i = 0; i < cfg->n_endpoints; i++) {
    status_call c;
    if (endpoint_status(cfg, i, &c) != 0) continue;
    answered++;
    if (c.leader == 0) {
      fprintf(stderr, "cetcd-bench: --target-leader: %s knows no leader\n", cfg->endpoints[i]);
      continue;
    }
    if (leader && c.leader != leader)
      fprintf(stderr, "cetcd-bench: --target-leader: endpoints disagree on the leader "
              "(%" PRIx64 " and %" PRIx64 ")\n", leader, c.leader);
    if (!leader) leader = c.leader;
    if (c.member_id == c.leader && leader_ep < 0) leader_ep = i;
  }
  if (leader_ep < 0) {
    if (answered)
      fprintf(stderr, "cetcd-bench: --target-leader: no endpoint in --endpoints is the leader "
              "(leader id %" PRIx64 ")\n", leader);
    else
      fprintf(stderr, "cetcd-bench: --target-leader: no endpoint answered Maintenance.Status\n");
    return -1;
  }
  fprintf(stderr, "cetcd-bench: --target-leader: using %s (member %" PRIx64 ", the leader)\n",
          cfg->endpoints[leader_ep], leader);
  cfg->endpoints[0] = cfg->endpoints[leader_ep];
  cfg->n_endpoints = 1;
  return 0;
}
