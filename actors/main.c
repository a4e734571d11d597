/*
 * main.c -- the cetcd server process: flags, data directory, actors, signals.
 *
 * Start-up order: parse flags and ETCD_* variables; derive member and cluster
 * ids; open the store (its consistent index says where replay starts), replay
 * the WAL; start apply, wal and raft; wait until this member leads and has
 * applied everything committed at start (so the first client read sees every
 * acknowledged write); only then listen for clients. SIGINT/SIGTERM stop it
 * in the reverse order.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "actors/config.h"
#include "actors/ids.h"
#include "actors/log.h"
#include "actors/server.h"
#include "actors/watch.h"
#include "actors/version.h"

#define STARTUP_TIMEOUT_MS 60000

static int mkdir_p(const char *path, mode_t mode) {
  char tmp[4096];
  if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp)) return -ENAMETOOLONG;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -errno;
    *p = '/';
  }
  if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -errno;
  return 0;
}

void server_fatal(server *s, const char *what, int err) {
  log_printf(LOG_LEVEL_CRITICAL, "etcdserver", "%s: %s", what, strerror(err < 0 ? -err : err));
  atomic_store(&s->fatal, 1);
}

/* "http://host:port" -> "host:port". TLS and unix sockets come later. */
static int url_to_listen(const char *url, char **out) {
  const char *p = strstr(url, "://");
  if (!p || strncmp(url, "http://", 7) != 0) {
    fprintf(stderr, "cetcd: listen URL %s is not supported yet (only http:// for now)\n", url);
    return -1;
  }
  p += 3;
  size_t n = strcspn(p, "/");
  *out = strndup(p, n);
  return *out ? 0 : -1;
}

/* The member's ids, as etcd derives them from the flags (a restart takes the
 * WAL's instead). Multi-member clusters come with the cluster issue. */
static int find_self(const cetcd_config *cfg, uint64_t *member_id, uint64_t *cluster_id) {
  char err[512];
  if (config_verify_bootstrap(cfg, member_id, cluster_id, err, sizeof(err)) < 0) {
    log_printf(LOG_LEVEL_CRITICAL, "etcdmain", "%s", err);
    return -1;
  }
  ids_member *members = NULL;
  size_t n = 0;
  if (ids_parse_initial_cluster(cfg->initial_cluster, cfg->initial_cluster_token, &members, &n, err,
                                sizeof(err)) < 0)
    n = 0;
  ids_members_free(members, n);
  if (n > 1) {
    fprintf(stderr, "cetcd: multi-member clusters are not supported yet (--initial-cluster has %zu members)\n", n);
    return -1;
  }
  return 0;
}

static void join_urls(char *out, size_t cap, const cetcd_url_list *l, const char *sep) {
  size_t off = 0;
  out[0] = 0;
  for (size_t i = 0; i < l->n && off < cap; i++)
    off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? sep : "", l->v[i]);
}

/* The lines etcd 3.4 prints before it starts its server (tools read them). */
static void log_banner(const cetcd_config *cfg) {
  char urls[2048];
  log_printf(LOG_LEVEL_INFO, "etcdmain", "cetcd Version: %s (etcd API %s)", CETCD_VERSION, CETCD_API_VERSION);
  log_printf(LOG_LEVEL_INFO, "etcdmain", "Git SHA: %s", CETCD_GIT_SHA);
  if (cfg->data_dir_defaulted)
    log_printf(LOG_LEVEL_WARNING, "etcdmain", "no data-dir provided, using default data-dir ./%s", cfg->data_dir);
  log_printf(LOG_LEVEL_INFO, "embed", "name = %s", cfg->name);
  log_printf(LOG_LEVEL_INFO, "embed", "data dir = %s", cfg->data_dir);
  log_printf(LOG_LEVEL_INFO, "embed", "member dir = %s/member", cfg->data_dir);
  log_printf(LOG_LEVEL_INFO, "embed", "heartbeat = %ums", cfg->heartbeat_interval_ms);
  log_printf(LOG_LEVEL_INFO, "embed", "election = %ums", cfg->election_timeout_ms);
  log_printf(LOG_LEVEL_INFO, "embed", "snapshot count = %llu", (unsigned long long)cfg->snapshot_count);
  join_urls(urls, sizeof(urls), &cfg->advertise_client_urls, ",");
  log_printf(LOG_LEVEL_INFO, "embed", "advertise client URLs = %s", urls);
}

static void log_member_start(const server *s, const cetcd_config *cfg) {
  if (s->boot.fresh) {
    char urls[2048];
    log_printf(LOG_LEVEL_INFO, "etcdserver", "starting member %llx in cluster %llx",
               (unsigned long long)s->member_id, (unsigned long long)s->cluster_id);
    join_urls(urls, sizeof(urls), &cfg->initial_advertise_peer_urls, " ");
    log_printf(LOG_LEVEL_INFO, "etcdserver/membership", "added member %llx [%s] to cluster %llx",
               (unsigned long long)s->member_id, urls, (unsigned long long)s->cluster_id);
  } else {
    log_printf(LOG_LEVEL_INFO, "etcdserver", "restarting member %llx in cluster %llx at commit index %llu",
               (unsigned long long)s->member_id, (unsigned long long)s->cluster_id,
               (unsigned long long)s->boot.hs.commit);
  }
}

/* etcd 3.4: 0 means the default quota (2 GiB), a negative value disables it. */
static int64_t quota_bytes(int64_t flag) {
  if (flag == 0) return (int64_t)2 << 30;
  return flag < 0 ? 0 : flag;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Ready = leader, and everything committed when we became leader applied. */
static int wait_ready(server *s) {
  uint64_t deadline = mono_ms() + STARTUP_TIMEOUT_MS;
  while (mono_ms() < deadline && !atomic_load(&s->fatal)) {
    uint64_t commit = atomic_load(&s->commit_index);
    if (atomic_load(&s->leader) == s->member_id && commit > 0 && atomic_load(&s->applied_index) >= commit)
      return 0;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

static void push_stop(mailbox *mb) {
  msg_hdr *m = malloc(sizeof(*m));
  if (!m) return;
  m->kind = MSG_STOP;
  mailbox_push(mb, m);
}

static int open_store(server *s, const char *dir) {
  char path[4096], err[4200];
  snprintf(path, sizeof(path), "%s/member/store", dir);
  int rc = mkdir_p(path, 0700);
  if (rc == 0) rc = mvcc_open(path, NULL, &s->store, err, sizeof(err));
  else snprintf(err, sizeof(err), "cannot create %s: %s", path, strerror(-rc));
  if (rc < 0) {
    log_printf(LOG_LEVEL_CRITICAL, "etcdmain", "%s", err);
    return -1;
  }
  snprintf(path, sizeof(path), "%s/member/wal", dir);
  if (server_load_wal(s, path, err, sizeof(err)) < 0) {
    log_printf(LOG_LEVEL_CRITICAL, "etcdmain", "%s", err);
    return -1;
  }
  return 0;
}

static int start_actors(server *s) {
  if (mailbox_init(&s->raft_mb, 65536) || mailbox_init(&s->raft_ctl_mb, 4096) ||
      mailbox_init(&s->wal_mb, 1024) || mailbox_init(&s->apply_mb, 4096))
    return -1;
  /* watch: before apply, so the hub starts at the store's revision */
  if (watch_actor_init(s) || watch_actor_start(s)) return -1;
  if (apply_actor_start(s) || wal_actor_start(s) || raft_actor_start(s)) return -1;
  return 0;
}

static int start_net(server *s, const cetcd_config *cfg, char **listen, size_t n) {
  net_config nc = {.listen = (const char *const *)listen, .n_listen = n, .loops = s->opt.net_loops};
  net_handlers h;
  kv_service_config(s, &nc, &h);
  s->loops = calloc(s->opt.net_loops, sizeof(*s->loops));
  char err[256];
  net_server *ns = NULL;
  if (!s->loops || net_server_start(&nc, &h, &ns, err, sizeof(err)) < 0) {
    log_printf(LOG_LEVEL_CRITICAL, "etcdmain", "listen failed: %s", err);
    return -1;
  }
  atomic_store(&s->net, ns);
  log_printf(LOG_LEVEL_INFO, "embed", "ready to serve client requests");
  for (size_t i = 0; i < cfg->listen_client_urls.n; i++)
    log_printf(LOG_LEVEL_NOTICE, "embed", "serving insecure client requests on %s, this is strongly discouraged!",
               listen[i]);
  return 0;
}

static void log_published(const server *s, const cetcd_config *cfg, bool fresh) {
  char urls[2048];
  join_urls(urls, sizeof(urls), &cfg->advertise_client_urls, " ");
  log_printf(LOG_LEVEL_INFO, "etcdserver", "published {Name:%s ClientURLs:[%s]} to cluster %llx", cfg->name, urls,
             (unsigned long long)s->cluster_id);
  if (fresh) log_printf(LOG_LEVEL_INFO, "etcdserver", "setting up the initial cluster version to %s", CETCD_API_VERSION);
}

static void log_serving(bool fresh) {
  if (fresh) log_printf(LOG_LEVEL_NOTICE, "etcdserver/membership", "set the initial cluster version to %s", CETCD_API_VERSION);
  else log_printf(LOG_LEVEL_NOTICE, "etcdserver/membership", "set the cluster version to %s from store", CETCD_API_VERSION);
  log_printf(LOG_LEVEL_INFO, "etcdserver/api", "enabled capabilities for version %s", CETCD_API_VERSION);
}

static void wait_signal(server *s) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  struct timespec tick = {0, 100 * 1000 * 1000};
  while (!atomic_load(&s->fatal)) {
    int sig = sigtimedwait(&set, NULL, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      log_printf(LOG_LEVEL_NOTICE, "pkg/osutil", "received %s signal, shutting down...",
                 sig == SIGINT ? "interrupt" : "terminated");
      log_printf(LOG_LEVEL_INFO, "etcdserver", "skipped leadership transfer for single voting member cluster");
      return;
    }
  }
}

/* Reverse order of start. The net server is halted first (no new requests,
 * posts to it fail) but freed last: raft, apply and watch may still be
 * posting replies until they are joined. */
static void stop_all(server *s) {
  net_server *ns = atomic_load(&s->net);
  watch_actor_stop(s); /* watch: no more posts to the loops */
  net_server_halt(ns);
  atomic_store(&s->stopping, 1);
  push_stop(&s->raft_mb);
  pthread_join(s->raft_th, NULL);
  push_stop(&s->apply_mb);
  pthread_join(s->apply_th, NULL);
  watch_actor_destroy(s); /* watch: after its producers (net, apply) stopped */
  push_stop(&s->wal_mb);
  pthread_join(s->wal_th, NULL);
  atomic_store(&s->net, NULL);
  net_server_stop(ns);
  wal_close(s->wal);
  mvcc_close(s->store);
}

int main(int argc, char **argv, char **envp) {
  cetcd_config cfg;
  int rc = config_parse(argc, argv, envp, &cfg, stdout, stderr);
  if (rc != CONFIG_RUN) {
    config_free(&cfg);
    return config_exit_status(rc);
  }
  log_set_level(cfg.log_threshold);
  log_set_fd(cfg.log_fd);

  static server srv;
  server *s = &srv;
  s->opt = (server_opts){.name = cfg.name,
                         .data_dir = cfg.data_dir,
                         .max_request_bytes = cfg.max_request_bytes,
                         .max_txn_ops = cfg.max_txn_ops,
                         .quota_bytes = quota_bytes(cfg.quota_backend_bytes),
                         .snapshot_count = cfg.snapshot_count,
                         .heartbeat_ms = cfg.heartbeat_interval_ms,
                         .election_ms = cfg.election_timeout_ms,
                         .net_loops = 1,
                         .watch_progress_ns = cfg.experimental_watch_progress_notify_interval_ns};
  log_banner(&cfg);
  if (find_self(&cfg, &s->opt.member_id, &s->opt.cluster_id) < 0) return 1;
  char **listen = calloc(cfg.listen_client_urls.n, sizeof(char *));
  for (size_t i = 0; i < cfg.listen_client_urls.n; i++)
    if (url_to_listen(cfg.listen_client_urls.v[i], &listen[i]) < 0) return 2;
  if (getrandom(&s->boot_nonce, sizeof(s->boot_nonce), 0) != sizeof(s->boot_nonce)) s->boot_nonce = (uint64_t)time(NULL);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits it; main waits */
  signal(SIGPIPE, SIG_IGN);

  if (mkdir_p(cfg.data_dir, 0700) < 0 || open_store(s, cfg.data_dir) < 0) return 1;
  bool fresh = s->boot.fresh;
  log_member_start(s, &cfg);
  if (start_actors(s) < 0) {
    log_printf(LOG_LEVEL_CRITICAL, "etcdmain", "cannot start the server's threads");
    return 1;
  }
  if (wait_ready(s) < 0) {
    log_printf(LOG_LEVEL_CRITICAL, "etcdserver", "member did not become ready in time");
    return 1;
  }
  log_published(s, &cfg, fresh);
  if (start_net(s, &cfg, listen, cfg.listen_client_urls.n) < 0) return 1;
  log_serving(fresh);
  wait_signal(s);
  int fatal = atomic_load(&s->fatal);
  stop_all(s);
  for (size_t i = 0; i < cfg.listen_client_urls.n; i++) free(listen[i]);
  free(listen);
  free(s->loops);
  config_free(&cfg);
  return fatal ? 1 : 0;
}
