/*
 * compare.c -- `cetcd-bench compare`: A against B, side by side.
 *
 *   cetcd-bench compare (--a-cmd CMD | --a-endpoints EPS [--a-pid PID])
 *                       (--b-cmd CMD | --b-endpoints EPS [--b-pid PID])
 *                       [--a-name N] [--b-name N] [--rounds N]
 *                       (--standard | --scenario 'LABEL=ARGS' ...) [--out DIR]
 *
 * DESIGN
 *
 * For every scenario, for every round, A then B (A B A B ...), so that the
 * machine's drift (page cache, neighbours, thermal) hits both alike. With a
 * server command, every measurement gets a fresh server: started with
 * etcd's single-member flags (both etcd and cetcd take them) on free
 * loopback ports and a fresh data directory, ready once a put succeeds,
 * stopped by pid (SIGTERM, SIGKILL after 10 s) before the next one. Its log
 * is kept in DIR/logs; if it dies, the log's tail is shown.
 *
 * Each measurement is a child process: this binary (/proc/self/exe) with
 * the scenario's arguments plus --endpoints, --server-pid and --format json.
 * compare reads only the top-level fields every scenario prints (see
 * compare.h's cmp_run) and keeps the whole object in DIR/results.jsonl. A
 * child that prints no result (an unknown scenario in this build, bad
 * flags, a crash, a timeout) makes that run "not measured" with the
 * reason; the comparison goes on.
 *
 * A `range KEY` scenario reads a key that must exist: compare puts KEY
 * (with a --range-val-size value, 256 bytes by default) before measuring.
 *
 * Exit status: 0 when every run was measured, 3 when the report was written
 * but some runs were not, 1 when nothing could be written, 2 on bad flags.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/cetcd-bench/compare.h"
#include "bench/cetcd-bench/compare_proc.h"
#include "cli/client/client.h"
#include "rpc.pb-c.h"

#define RANGE_KEY "bench-range-key"
#define CMD_ARGS_MAX 48
#define STOP_GRACE_MS 10000

/* Issue 6's standard comparison; 8 B keys, 256 B values; Nc/Mx = N clients
 * over M connections. The --total values are those of the shell version
 * this replaced (scripts/bench.sh): long enough to reach a steady state,
 * short enough for three rounds of both servers in about half an hour. */
static const char *const standard[][2] = {
    {"put 1c/1x", "--conns 1 --clients 1 put --total 10000 --key-size 8 --val-size 256"},
    {"put 100c/10x", "--conns 10 --clients 100 put --total 100000 --key-size 8 --val-size 256"},
    {"put 1000c/100x", "--conns 100 --clients 1000 put --total 100000 --key-size 8 --val-size 256"},
    {"range-l 1c/1x", "--conns 1 --clients 1 range " RANGE_KEY " --consistency l --total 10000"},
    {"range-l 1000c/100x",
     "--conns 100 --clients 1000 range " RANGE_KEY " --consistency l --total 100000"},
    {"range-s 1c/1x", "--conns 1 --clients 1 range " RANGE_KEY " --consistency s --total 10000"},
    {"range-s 1000c/100x",
     "--conns 100 --clients 1000 range " RANGE_KEY " --consistency s --total 100000"},
    {"txn-put 100c/10x", "--conns 10 --clients 100 txn-put --total 50000 --key-size 8 "
                         "--val-size 256 --key-space-size 1000000"},
    {"txn-mixed 100c/10x", "--conns 10 --clients 100 txn-mixed bench-key --total 50000 "
                           "--rw-ratio 1 --key-size 8 --val-size 256 --key-space-size 100000 "
                           "--consistency l"},
    {"watch-latency 10k watchers",
     "watch-latency --streams 100 --watchers-per-stream 100 --put-total 1000 --put-rate 100 "
     "--key-size 8 --val-size 256"},
    {"lease-keepalive 100k", "--conns 10 --clients 100 lease-keepalive --leases 100000 "
                             "--total 300000"},
    {"registry", "--conns 10 --clients 100 registry --services 100 --instances 10000 --ttl 10 "
                 "--watchers 100 --total 100000"},
};

/* One of the two servers. */
typedef struct cmp_side {
  char *cmd[CMD_ARGS_MAX + 1]; /* server command split on blanks; cmd[0] NULL: none */
  const char *cmd_text;
  const char *endpoints; /* an existing server, when there is no command */
  int pid;               /* its pid (--a-pid), 0: unknown */
  char name[CMP_LABEL_MAX];
} cmp_side;

typedef struct compare_cfg {
  cmp_side side[2];
  int rounds;
  const char *out_dir;
  const char *data_root; /* fresh data directories are made under it */
  int range_val_size;
  int run_timeout_s, start_timeout_s;
  cmp_scenario *sc[CMP_SCENARIOS_MAX];
  int n_sc;
  char tmp[256];   /* fresh data directories live under it */
  FILE *results;   /* DIR/results.jsonl */
} compare_cfg;

/* ---- flags -------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: cetcd-bench compare (--a-cmd CMD | --a-endpoints EPS) (--b-cmd CMD | "
          "--b-endpoints EPS)\n"
          "                           (--standard | --scenario 'LABEL=ARGS' ...) [flags]\n"
          "\n"
          "Runs each scenario against A and B alternately (A B A B ...) and writes\n"
          "DIR/report.md (ratio table B/A, machine, method), DIR/report.svg and\n"
          "DIR/results.jsonl (every run's cetcd-bench JSON).\n"
          "\n"
          "  --a-cmd CMD, --b-cmd CMD   server command (split on blanks); compare adds --name,\n"
          "                             --data-dir and loopback URLs and starts a fresh server\n"
          "                             per run\n"
          "  --a-endpoints EPS          an existing server instead (--b-endpoints likewise)\n"
          "  --a-pid PID, --b-pid PID   its pid, for peak RSS and CPU from /proc\n"
          "  --a-name N, --b-name N     labels (default: the command's basename, or A and B)\n"
          "  --scenario 'LABEL=ARGS'    a row: its label and cetcd-bench arguments (repeatable)\n"
          "  --standard                 the standard comparison (issue 6's table)\n"
          "  --rounds N                 rounds per scenario (default 3)\n"
          "  --out DIR                  where the report goes (default compare-report)\n"
          "  --data-root DIR            where fresh data directories go (default /tmp)\n"
          "  --range-val-size N         value put under a range scenario's KEY (default 256)\n"
          "  --run-timeout SECS         limit per measurement (default 900)\n"
          "  --start-timeout SECS       limit for a server to serve a put (default 30)\n");
}

/* Splits `s` on blanks into argv (pointers into a strdup'ed copy). */
static int split_words(const char *s, char **argv, int max) {
  char *copy = strdup(s), *save = NULL;
  int n = 0;
  if (!copy) return -1;
  for (char *w = strtok_r(copy, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
    if (n == max) return -1;
    argv[n++] = w;
  }
  argv[n] = NULL;
  return n;
}

/* The key a `range KEY` scenario reads, or NULL. */
static const char *find_range_key(const cmp_scenario *s) {
  for (int i = 0; i + 1 < s->argc; i++)
    if (strcmp(s->argv[i], "range") == 0 && s->argv[i + 1][0] != '-') return s->argv[i + 1];
  return NULL;
}

static int add_scenario(compare_cfg *cfg, const char *label, size_t label_len, const char *args) {
  if (cfg->n_sc == CMP_SCENARIOS_MAX || label_len == 0 || label_len >= CMP_LABEL_MAX) return -1;
  cmp_scenario *s = calloc(1, sizeof *s);
  if (!s) return -1;
  memcpy(s->label, label, label_len);
  s->argc = split_words(args, s->argv, CMP_ARGS_MAX - 1);
  if (s->argc <= 0) {
    free(s);
    return -1;
  }
  s->range_key = find_range_key(s);
  cfg->sc[cfg->n_sc++] = s;
  return 0;
}

static void add_scenario_spec(compare_cfg *cfg, const char *spec) {
  const char *eq = strchr(spec, '=');
  if (!eq || add_scenario(cfg, spec, (size_t)(eq - spec), eq + 1) != 0) {
    fprintf(stderr, "cetcd-bench compare: bad --scenario '%s' (want 'LABEL=ARGS')\n", spec);
    exit(2);
  }
}

static long flag_long(const char *flag, const char *s, long min, long max) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "cetcd-bench compare: invalid value \"%s\" for --%s\n", s, flag);
    exit(2);
  }
  return v;
}

enum {
  OPT_A_CMD = 1000, OPT_B_CMD, OPT_A_EPS, OPT_B_EPS, OPT_A_PID, OPT_B_PID, OPT_A_NAME,
  OPT_B_NAME, OPT_ROUNDS, OPT_SCENARIO, OPT_STANDARD, OPT_OUT, OPT_RANGE_VAL, OPT_RUN_TIMEOUT,
  OPT_START_TIMEOUT, OPT_DATA_ROOT, OPT_HELP,
};

static const struct option long_opts[] = {
    {"a-cmd", required_argument, NULL, OPT_A_CMD},
    {"b-cmd", required_argument, NULL, OPT_B_CMD},
    {"a-endpoints", required_argument, NULL, OPT_A_EPS},
    {"b-endpoints", required_argument, NULL, OPT_B_EPS},
    {"a-pid", required_argument, NULL, OPT_A_PID},
    {"b-pid", required_argument, NULL, OPT_B_PID},
    {"a-name", required_argument, NULL, OPT_A_NAME},
    {"b-name", required_argument, NULL, OPT_B_NAME},
    {"rounds", required_argument, NULL, OPT_ROUNDS},
    {"scenario", required_argument, NULL, OPT_SCENARIO},
    {"standard", no_argument, NULL, OPT_STANDARD},
    {"out", required_argument, NULL, OPT_OUT},
    {"range-val-size", required_argument, NULL, OPT_RANGE_VAL},
    {"run-timeout", required_argument, NULL, OPT_RUN_TIMEOUT},
    {"start-timeout", required_argument, NULL, OPT_START_TIMEOUT},
    {"data-root", required_argument, NULL, OPT_DATA_ROOT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void set_cmd(cmp_side *side, const char *text) {
  side->cmd_text = text;
  if (split_words(text, side->cmd, CMD_ARGS_MAX) <= 0) {
    fprintf(stderr, "cetcd-bench compare: bad server command '%s'\n", text);
    exit(2);
  }
}

static void parse_flag(compare_cfg *cfg, int opt, const char *arg) {
  switch (opt) {
  case OPT_A_CMD: set_cmd(&cfg->side[0], arg); break;
  case OPT_B_CMD: set_cmd(&cfg->side[1], arg); break;
  case OPT_A_EPS: cfg->side[0].endpoints = arg; break;
  case OPT_B_EPS: cfg->side[1].endpoints = arg; break;
  case OPT_A_PID: cfg->side[0].pid = (int)flag_long("a-pid", arg, 1, 1 << 30); break;
  case OPT_B_PID: cfg->side[1].pid = (int)flag_long("b-pid", arg, 1, 1 << 30); break;
  case OPT_A_NAME: snprintf(cfg->side[0].name, CMP_LABEL_MAX, "%s", arg); break;
  case OPT_B_NAME: snprintf(cfg->side[1].name, CMP_LABEL_MAX, "%s", arg); break;
  case OPT_ROUNDS: cfg->rounds = (int)flag_long("rounds", arg, 1, CMP_ROUNDS_MAX); break;
  case OPT_SCENARIO: add_scenario_spec(cfg, arg); break;
  case OPT_STANDARD:
    for (size_t i = 0; i < sizeof standard / sizeof standard[0]; i++)
      if (add_scenario(cfg, standard[i][0], strlen(standard[i][0]), standard[i][1]) != 0) exit(2);
    break;
  case OPT_OUT: cfg->out_dir = arg; break;
  case OPT_DATA_ROOT: cfg->data_root = arg; break;
  case OPT_RANGE_VAL: cfg->range_val_size = (int)flag_long("range-val-size", arg, 0, 1 << 20); break;
  case OPT_RUN_TIMEOUT: cfg->run_timeout_s = (int)flag_long("run-timeout", arg, 1, 86400); break;
  case OPT_START_TIMEOUT:
    cfg->start_timeout_s = (int)flag_long("start-timeout", arg, 1, 3600);
    break;
  case OPT_HELP: usage(stdout); exit(0);
  default: usage(stderr); exit(2);
  }
}

/* Default labels: the command's basename; "A"/"B" for endpoints; told
 * apart when both are the same. */
static void default_names(compare_cfg *cfg) {
  for (int i = 0; i < 2; i++) {
    cmp_side *s = &cfg->side[i];
    if (s->name[0]) continue;
    const char *base = s->cmd[0] ? strrchr(s->cmd[0], '/') : NULL;
    snprintf(s->name, CMP_LABEL_MAX, "%s", s->cmd[0] ? (base ? base + 1 : s->cmd[0]) : i ? "B" : "A");
  }
  if (strcmp(cfg->side[0].name, cfg->side[1].name) == 0) {
    for (int i = 0; i < 2; i++) {
      size_t l = strlen(cfg->side[i].name);
      snprintf(cfg->side[i].name + l, CMP_LABEL_MAX - l, " (%c)", i ? 'B' : 'A');
    }
  }
}

static void parse_args(compare_cfg *cfg, int argc, char **argv) {
  cfg->rounds = 3;
  cfg->out_dir = "compare-report";
  cfg->data_root = "/tmp";
  cfg->range_val_size = 256;
  cfg->run_timeout_s = 900;
  cfg->start_timeout_s = 30;
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1)
    parse_flag(cfg, opt == 'h' ? OPT_HELP : opt, optarg);
  const char *err = NULL;
  if (optind != argc) err = "unexpected arguments";
  else if (cfg->n_sc == 0) err = "give --standard or at least one --scenario";
  for (int i = 0; i < 2 && !err; i++) {
    cmp_side *s = &cfg->side[i];
    if (!s->cmd[0] == !s->endpoints) err = "give each side exactly one of --X-cmd, --X-endpoints";
    else if (s->cmd[0] && s->pid) err = "--X-pid goes with --X-endpoints";
  }
  if (err) {
    fprintf(stderr, "cetcd-bench compare: %s\n", err);
    usage(stderr);
    exit(2);
  }
  default_names(cfg);
}

/* ---- putting a key (readiness, and what range scenarios read) ------------------ */

/* A unary Put of KEY = val_len bytes of 'v'; 0 when the server acknowledged
 * it, else -1 with the reason in err. */
static int put_key(const char *endpoint, const char *key, size_t val_len, int timeout_ms,
                   char *err, size_t err_len) {
  cc_loop *loop = cc_loop_new();
  uint8_t *val = malloc(val_len + 1);
  int rc = -1;
  if (!loop || !val) {
    snprintf(err, err_len, "out of memory");
    goto out;
  }
  memset(val, 'v', val_len);
  cc_conn *conn = cc_conn_open(loop, endpoint, err, err_len);
  if (!conn) goto out;
  Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
  req.key.data = (uint8_t *)key;
  req.key.len = strlen(key);
  req.value.data = val;
  req.value.len = val_len;
  ProtobufCMessage *resp = NULL;
  char msg[160] = "";
  int st = cc_unary_sync(conn, CC_PATH_PUT, &req.base, &etcdserverpb__put_response__descriptor,
                         &resp, timeout_ms, msg, sizeof msg);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  if (st == CC_STATUS_OK) rc = 0;
  else snprintf(err, err_len, "put %s: %s: %s", key, cc_status_name(st), msg);
out:
  if (loop) cc_loop_free(loop);
  free(val);
  return rc;
}

/* ---- the machine ---------------------------------------------------------------- */

/* The value after "key" in a "key<sep>value" line of a file, trimmed. */
static void file_field(const char *path, const char *key, char *out, size_t len) {
  char line[512];
  FILE *f = fopen(path, "r");
  out[0] = '\0';
  if (!f) return;
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, kl) != 0) continue;
    char *v = line + kl;
    v += strspn(v, " \t:=\"");
    v[strcspn(v, "\"\n")] = '\0';
    snprintf(out, len, "%s", v);
    break;
  }
  fclose(f);
}

static void load_average(char *out, size_t len) {
  char line[128] = "";
  FILE *f = fopen("/proc/loadavg", "r");
  if (f && fgets(line, sizeof line, f)) {
    int n = 0;
    for (char *p = line; *p; p++)
      if (*p == ' ' && ++n == 3) *p = '\0';
  }
  if (f) fclose(f);
  snprintf(out, len, "%s", line);
}

/* The git commit of the source tree this binary was built from, if it is
 * still a git checkout (compile-time CETCD_SRC_DIR). */
static void source_commit(char *out, size_t len) {
  out[0] = '\0';
#ifdef CETCD_SRC_DIR
  char *argv[] = {"git", "-C", CETCD_SRC_DIR, "describe", "--always", "--dirty", NULL};
  proc_first_line(argv, out, len);
  if (strstr(out, "fatal") || strstr(out, "cannot run")) out[0] = '\0';
#endif
}

/* The data directories' file system, since fsync costs what it costs there
 * (tmpfs: nothing). */
static void data_fs(const compare_cfg *cfg, char *out, size_t len) {
  static const struct { long magic; const char *name; } fs[] = {
      {0xEF53, "ext4"}, {0x01021994, "tmpfs"}, {0x58465342, "xfs"},
      {0x9123683E, "btrfs"}, {0x794C7630, "overlayfs"}, {0x2FC12FC1, "zfs"},
  };
  struct statfs st;
  const char *name = "unknown file system";
  if (statfs(cfg->tmp, &st) == 0)
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
      if ((long)st.f_type == fs[i].magic) name = fs[i].name;
  snprintf(out, len, "%.100s (%s)", cfg->data_root, name);
}

static void describe_machine(const compare_cfg *cfg, cmp_context *ctx) {
  char mem[64];
  file_field("/proc/cpuinfo", "model name", ctx->cpu, sizeof ctx->cpu);
  file_field("/etc/os-release", "PRETTY_NAME", ctx->os, sizeof ctx->os);
  file_field("/proc/meminfo", "MemTotal", mem, sizeof mem);
  ctx->ram_gib = strtod(mem, NULL) / (1024.0 * 1024.0);
  ctx->cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  char *uname_argv[] = {"uname", "-sr", NULL};
  proc_first_line(uname_argv, ctx->kernel, sizeof ctx->kernel);
  time_t t = time(NULL);
  struct tm tm;
  strftime(ctx->date, sizeof ctx->date, "%Y-%m-%d %H:%M UTC", gmtime_r(&t, &tm));
  load_average(ctx->load_before, sizeof ctx->load_before);
  source_commit(ctx->commit, sizeof ctx->commit);
  data_fs(cfg, ctx->data_fs, sizeof ctx->data_fs);
  for (int i = 0; i < 2; i++) {
    const cmp_side *s = &cfg->side[i];
    ctx->name[i] = s->name;
    ctx->what[i] = s->cmd[0] ? s->cmd_text : s->endpoints;
    if (!s->cmd[0]) continue;
    char *argv[] = {s->cmd[0], "--version", NULL};
    proc_first_line(argv, ctx->version[i], sizeof ctx->version[i]);
  }
  ctx->rounds = cfg->rounds;
  ctx->fresh_servers = cfg->side[0].cmd[0] && cfg->side[1].cmd[0];
}

/* ---- one server ----------------------------------------------------------------- */

typedef struct server {
  int pid;          /* 0: not ours (existing endpoints) */
  char endpoint[64];
  char dir[320];    /* its scratch directory (data dir inside) */
  char log[512];
} server;

/* The command plus etcd's single-member flags, which cetcd takes too. */
static int server_argv(const cmp_side *side, const server *sv, int p, int q, char **argv,
                       char bufs[4][384]) {
  int n = 0;
  while (side->cmd[n]) argv[n] = side->cmd[n], n++;
  snprintf(bufs[0], 384, "%s/data", sv->dir);
  snprintf(bufs[1], 384, "http://127.0.0.1:%d", p);
  snprintf(bufs[2], 384, "http://127.0.0.1:%d", q);
  snprintf(bufs[3], 384, "bench=http://127.0.0.1:%d", q);
  char *extra[] = {"--name", "bench", "--data-dir", bufs[0], "--listen-client-urls", bufs[1],
                   "--advertise-client-urls", bufs[1], "--listen-peer-urls", bufs[2],
                   "--initial-advertise-peer-urls", bufs[2], "--initial-cluster", bufs[3]};
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) argv[n++] = extra[i];
  argv[n] = NULL;
  return n;
}

/* Waits until the server acknowledges a put. 0, or -1 with the reason. */
static int server_wait_ready(const compare_cfg *cfg, server *sv, char *why, size_t why_len) {
  char err[256] = "";
  for (int waited_ms = 0; waited_ms < cfg->start_timeout_s * 1000; waited_ms += 200) {
    int status;
    if (proc_exited(sv->pid, &status)) {
      snprintf(why, why_len, "server exited during start (%s %d)",
               WIFEXITED(status) ? "status" : "signal",
               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      sv->pid = 0;
      return -1;
    }
    if (put_key(sv->endpoint, "cetcd-compare-ready", 1, 1000, err, sizeof err) == 0) return 0;
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
  }
  snprintf(why, why_len, "server did not serve a put within %d s (%s)", cfg->start_timeout_s, err);
  return -1;
}

static void server_stop(server *sv) {
  if (sv->pid > 0) {
    proc_stop(sv->pid, STOP_GRACE_MS);
    printf("    stopped pid %d\n", sv->pid);
  }
  sv->pid = 0;
  if (sv->dir[0]) path_remove_tree(sv->dir);
}

/* Starts side's server for one run (or takes its endpoints). 0, or -1
 * with the reason in why (and the log's tail on stdout). */
static int server_start(const compare_cfg *cfg, int side_i, int sc_i, int round, server *sv,
                        char *why, size_t why_len) {
  const cmp_side *side = &cfg->side[side_i];
  memset(sv, 0, sizeof *sv);
  if (!side->cmd[0]) {
    snprintf(sv->endpoint, sizeof sv->endpoint, "%s", side->endpoints);
    return 0;
  }
  int p = port_pick(), q = port_pick();
  snprintf(sv->dir, sizeof sv->dir, "%s/%c-%d-%d", cfg->tmp, 'a' + side_i, sc_i + 1, round + 1);
  snprintf(sv->log, sizeof sv->log, "%s/logs/%c-%d-r%d.log", cfg->out_dir, 'a' + side_i,
           sc_i + 1, round + 1);
  if (p < 0 || q < 0 || mkdir(sv->dir, 0700) != 0) {
    snprintf(why, why_len, "no free port or scratch directory");
    return -1;
  }
  char *argv[CMD_ARGS_MAX + 20], bufs[4][384];
  server_argv(side, sv, p, q, argv, bufs);
  snprintf(sv->endpoint, sizeof sv->endpoint, "http://127.0.0.1:%d", p);
  sv->pid = proc_spawn(argv, sv->log);
  if (sv->pid < 0) {
    sv->pid = 0;
    snprintf(why, why_len, "cannot start %s: %s", argv[0], strerror(errno));
    return -1;
  }
  printf("    %s: pid %d on %s, log %s\n", side->name, sv->pid, sv->endpoint, sv->log);
  fflush(stdout);
  if (server_wait_ready(cfg, sv, why, why_len) == 0) return 0;
  printf("    %s: %s; last lines of its log:\n", side->name, why);
  file_print_tail(stdout, sv->log, 20, "      | ");
  server_stop(sv);
  return -1;
}

/* ---- one measurement ------------------------------------------------------------ */

static double num_or_nan(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static long num_or(json_t *obj, const char *key, long dflt) {
  double v = num_or_nan(obj, key);
  return isnan(v) ? dflt : (long)v;
}

/* Why a run was not measured (truncated to fit, which is fine for a reason). */
__attribute__((format(printf, 2, 3))) static void set_reason(cmp_run *run, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(run->reason, sizeof run->reason, fmt, ap);
  va_end(ap);
}

/* Fills run from the fields of cetcd-bench's JSON that compare reads. */
static int run_from_json(json_t *res, cmp_run *run) {
  if (!json_is_object(res) || !json_is_string(json_object_get(res, "scenario")) ||
      !json_is_number(json_object_get(res, "requests_per_sec"))) {
    set_reason(run, "the result lacks scenario or requests_per_sec");
    return -1;
  }
  run->measured = 1;
  run->requests = num_or(res, "requests", 0);
  run->ok = num_or(res, "ok", 0);
  run->errors = num_or(res, "errors", 0);
  run->rps = num_or_nan(res, "requests_per_sec");
  json_t *lat = json_object_get(res, "latency_secs");
  for (int i = 0; i < CMP_N_PCTLS; i++) run->pct_s[i] = num_or_nan(lat, cmp_pctl_names[i]);
  json_t *srv = json_object_get(res, "server");
  run->peak_rss_kb = num_or(srv, "peak_rss_kb", -1);
  run->server_cpu_s = isnan(num_or_nan(srv, "cpu_secs")) ? -1 : num_or_nan(srv, "cpu_secs");
  run->bench_cpu_ms_per_1000 = num_or_nan(res, "bench_cpu_ms_per_1000");
  json_t *e = json_array_get(json_object_get(res, "error_distribution"), 0);
  if (e)
    snprintf(run->top_error, sizeof run->top_error, "%s: %s",
             json_string_value(json_object_get(e, "status")) ?: "?",
             json_string_value(json_object_get(e, "message")) ?: "");
  return 0;
}

/* Explains a child that printed no result. */
static void run_failure(cmp_run *run, int timed_out, int status, const char *err_path,
                        int timeout_s) {
  char last[200];
  int refused = WIFEXITED(status) && WEXITSTATUS(status) == 2;
  /* refused: the first line says why (getopt's complaint, or usage) */
  file_line(err_path, refused, last, sizeof last);
  if (timed_out)
    set_reason(run, "no result within %d s (killed)", timeout_s);
  else if (refused)
    set_reason(run, "cetcd-bench refused the arguments (not a scenario of this build, or a bad "
                    "flag): %s", last);
  else
    set_reason(run, "cetcd-bench %s %d without a result: %s",
             WIFEXITED(status) ? "exited with status" : "killed by signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), last);
}

/* One line per run in results.jsonl: who and what, then the child's object
 * exactly as it printed it (its "extra" and everything else verbatim). */
static void record_run(compare_cfg *cfg, const cmp_scenario *s, int side_i, int round,
                       const char *endpoint, const cmp_run *run, const char *raw) {
  json_t *rec = json_object(), *args = json_array();
  for (int k = 0; k < s->argc; k++) json_array_append_new(args, json_string(s->argv[k]));
  json_object_set_new(rec, "label", json_string(s->label));
  json_object_set_new(rec, "side", json_string(side_i ? "B" : "A"));
  json_object_set_new(rec, "name", json_string(cfg->side[side_i].name));
  json_object_set_new(rec, "round", json_integer(round + 1));
  json_object_set_new(rec, "endpoint", json_string(endpoint));
  json_object_set_new(rec, "args", args);
  json_object_set_new(rec, "measured", json_boolean(run->measured));
  if (!run->measured) json_object_set_new(rec, "reason", json_string(run->reason));
  char *head = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(rec);
  if (!head) return;
  if (run->measured && raw) {
    /* {"label":...,"measured":true} -> {"label":...,"measured":true,"result":RAW} */
    size_t raw_len = strlen(raw);
    while (raw_len && (raw[raw_len - 1] == '\n' || raw[raw_len - 1] == ' ')) raw_len--;
    fprintf(cfg->results, "%.*s,\"result\":%.*s}\n", (int)strlen(head) - 1, head, (int)raw_len,
            raw);
  } else {
    fprintf(cfg->results, "%s\n", head);
  }
  fflush(cfg->results);
  free(head);
}

/* Runs the child bench; fills run, and returns what it printed (malloc'ed,
 * NULL if nothing could be run). */
static char *measure(compare_cfg *cfg, const cmp_scenario *s, const server *sv, int pid,
                     cmp_run *run) {
  char *argv[CMP_ARGS_MAX + 10], pid_buf[16], err_path[300];
  int n = 0;
  argv[n++] = "cetcd-bench";
  for (int k = 0; k < s->argc; k++) argv[n++] = s->argv[k];
  argv[n++] = "--endpoints";
  argv[n++] = (char *)sv->endpoint;
  if (pid > 0) {
    snprintf(pid_buf, sizeof pid_buf, "%d", pid);
    argv[n++] = "--server-pid";
    argv[n++] = pid_buf;
  }
  argv[n++] = "--format";
  argv[n++] = "json";
  argv[n] = NULL;
  snprintf(err_path, sizeof err_path, "%s/bench.err", cfg->tmp);
  char *out = NULL;
  int status = 0;
  /* the forked child's /proc/self/exe is this very binary, even if the
   * file was rebuilt or removed since compare started */
  int rc = proc_capture("/proc/self/exe", argv, err_path, cfg->run_timeout_s, &out, &status);
  json_error_t jerr;
  json_t *res = rc == 0 && out ? json_loads(out, JSON_DECODE_ANY, &jerr) : NULL;
  if (rc < 0) set_reason(run, "cannot run cetcd-bench: %s", strerror(errno));
  else if (!res) run_failure(run, rc == 1, status, err_path, cfg->run_timeout_s);
  else run_from_json(res, run);
  json_decref(res);
  return out;
}

static void print_run(const cmp_side *side, const cmp_run *run) {
  if (!run->measured) {
    printf("    %-12s not measured: %s\n", side->name, run->reason);
  } else {
    printf("    %-12s %10.1f req/s  p99 %8.2f ms  peak RSS %7.1f MiB  errors %ld", side->name,
           run->rps, run->pct_s[CMP_P99] * 1e3,
           run->peak_rss_kb >= 0 ? (double)run->peak_rss_kb / 1024 : NAN, run->errors);
    if (run->server_cpu_s >= 0) printf("  server CPU %.2f s", run->server_cpu_s);
    printf("  bench CPU %.2f ms/1000\n", run->bench_cpu_ms_per_1000);
    if (run->top_error[0]) printf("      first error kind: %s\n", run->top_error);
  }
  fflush(stdout);
}

/* One scenario, one side, one round: server up, setup, measure, server down. */
static void run_one(compare_cfg *cfg, int sc_i, int side_i, int round) {
  cmp_scenario *s = cfg->sc[sc_i];
  cmp_run *run = &s->runs[side_i][round];
  const cmp_side *side = &cfg->side[side_i];
  server sv;
  char *raw = NULL;
  memset(run, 0, sizeof *run);
  if (server_start(cfg, side_i, sc_i, round, &sv, run->reason, sizeof run->reason) == 0) {
    char err[256];
    if (s->range_key &&
        put_key(sv.endpoint, s->range_key, (size_t)cfg->range_val_size, 5000, err, sizeof err)) {
      set_reason(run, "setup failed: %s", err);
    } else {
      run->server_pid = sv.pid ? sv.pid : side->pid;
      raw = measure(cfg, s, &sv, run->server_pid, run);
    }
    if (!run->measured && sv.pid && !proc_exited(sv.pid, &(int){0})) {
      /* still running: the failure was the bench's */
    } else if (!run->measured && sv.pid) {
      printf("    %s died during the run; last lines of its log:\n", side->name);
      file_print_tail(stdout, sv.log, 20, "      | ");
      sv.pid = 0;
    }
    server_stop(&sv);
  }
  print_run(side, run);
  record_run(cfg, s, side_i, round, sv.endpoint, run, raw);
  free(raw);
}

/* ---- the whole comparison ------------------------------------------------------- */

static FILE *open_out(const compare_cfg *cfg, const char *name, char *path, size_t len) {
  snprintf(path, len, "%s/%s", cfg->out_dir, name);
  FILE *f = fopen(path, "w");
  if (!f) fprintf(stderr, "cetcd-bench compare: cannot write %s: %s\n", path, strerror(errno));
  return f;
}

static int prepare(compare_cfg *cfg) {
  char path[4200];
  snprintf(path, sizeof path, "%s/logs", cfg->out_dir);
  if ((mkdir(cfg->out_dir, 0755) != 0 && errno != EEXIST) ||
      (mkdir(path, 0755) != 0 && errno != EEXIST)) {
    fprintf(stderr, "cetcd-bench compare: cannot create %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (snprintf(cfg->tmp, sizeof cfg->tmp, "%s/cetcd-compare.XXXXXX", cfg->data_root) >=
      (int)sizeof cfg->tmp)
    return -1;
  if (!mkdtemp(cfg->tmp)) {
    fprintf(stderr, "cetcd-bench compare: cannot create %s: %s\n", cfg->tmp, strerror(errno));
    return -1;
  }
  cfg->results = open_out(cfg, "results.jsonl", path, sizeof path);
  return cfg->results ? 0 : -1;
}

/* report.md, report.svg, and the table on stdout. 0, or -1. */
static int write_reports(const compare_cfg *cfg, cmp_context *ctx) {
  char md_path[4200], svg_path[4200];
  FILE *svg = open_out(cfg, "report.svg", svg_path, sizeof svg_path);
  if (svg) {
    cmp_write_svg(svg, ctx, cfg->sc, cfg->n_sc);
    if (fclose(svg) != 0) return -1;
    ctx->svg_name = "report.svg";
  }
  FILE *md = open_out(cfg, "report.md", md_path, sizeof md_path);
  if (!md) return -1;
  cmp_write_markdown(md, ctx, cfg->sc, cfg->n_sc);
  if (fclose(md) != 0) return -1;
  printf("\n");
  cmp_write_table(stdout, ctx, cfg->sc, cfg->n_sc);
  printf("\nratios are %s / %s; report: %s, chart: %s, every run: %s/results.jsonl\n",
         ctx->name[1], ctx->name[0], md_path, svg ? svg_path : "(not written)", cfg->out_dir);
  return svg ? 0 : -1;
}

static int all_measured(const compare_cfg *cfg) {
  for (int i = 0; i < cfg->n_sc; i++)
    for (int side = 0; side < 2; side++)
      for (int r = 0; r < cfg->rounds; r++)
        if (!cfg->sc[i]->runs[side][r].measured) return 0;
  return 1;
}

int compare_main(int argc, char **argv) {
  static compare_cfg cfg;
  static cmp_context ctx;
  parse_args(&cfg, argc, argv);
  if (prepare(&cfg) != 0) return 1;
  describe_machine(&cfg, &ctx);
  printf("%s (A) against %s (B): %d scenarios, %d rounds, A B alternating; load average %s\n",
         cfg.side[0].name, cfg.side[1].name, cfg.n_sc, cfg.rounds, ctx.load_before);
  for (int i = 0; i < cfg.n_sc; i++) {
    for (int r = 0; r < cfg.rounds; r++) {
      printf("%s, round %d of %d:\n", cfg.sc[i]->label, r + 1, cfg.rounds);
      for (int side = 0; side < 2; side++) run_one(&cfg, i, side, r);
    }
  }
  load_average(ctx.load_after, sizeof ctx.load_after);
  fclose(cfg.results);
  path_remove_tree(cfg.tmp);
  if (write_reports(&cfg, &ctx) != 0) return 1;
  return all_measured(&cfg) ? 0 : 3;
}
