/*
 * main.c -- cetcd-bench's command line.
 *
 *   cetcd-bench [global flags] put   [--total N --key-size B --val-size B
 *                                     --key-space-size N --sequential-keys --rate R]
 *   cetcd-bench [global flags] range KEY [END] [--total N --consistency l|s
 *                                     --limit N --count-only --rate R]
 *   cetcd-bench [global flags] txn-put [--total N --txn-ops N --key-size B
 *                                     --val-size B --key-space-size N --rate R]
 *   cetcd-bench [global flags] txn-mixed KEY [END] [--total N --rw-ratio R
 *                                     --consistency l|s --limit N --key-size B
 *                                     --val-size B --key-space-size N --rate R]
 *   cetcd-bench [global flags] watch [--streams N --watch-per-stream N
 *                                     --watched-key-total N --put-total N
 *                                     --put-rate R --key-size B
 *                                     --key-space-size N --sequential-keys]
 *   cetcd-bench [global flags] watch-latency [--streams N
 *                                     --watchers-per-stream N --put-total N
 *                                     --put-rate R --key-size B --val-size B
 *                                     --key-space-size N]
 *   cetcd-bench [global flags] lease-keepalive [--total N --leases N --ttl S --revoke]
 *   cetcd-bench [global flags] registry [--total N --services S --instances N
 *                                     --ttl S --watchers W --churn-rate R --consistency l|s]
 *
 * Scenario defaults are those of etcd's tool for that command (watch and
 * watch-latency: 32-byte keys; watch-latency: 32-byte values; txn-mixed:
 * --limit 1000; lease-keepalive: --ttl 100 and one lease per client;
 * registry, which etcd's tool lacks: --ttl 10). --duration D (30s, 500ms,
 * 2m) runs a scenario that long instead of --total / --put-total.
 * --target-leader sends everything to the leader among --endpoints.
 *
 * Flag names and defaults are those of etcd's benchmark tool where it has
 * the flag (--endpoints, --conns, --clients, --total, --key-size, --val-size,
 * --key-space-size, --sequential-keys, --rate, --consistency, --limit,
 * --count-only, --txn-ops). Ours: --threads (event loops; default 1, since the server
 * needs the machine's other core), --format text|json, --server-pid. TLS:
 * https:// endpoints, or any endpoint without a scheme once --cacert,
 * --cert, --key or --insecure-skip-tls-verify is given, as etcd's tool.
 * Flags may come before or after the command, as with cobra.
 *
 * `cetcd-bench compare ...` (A against B, side by side) is compare.c's.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/cetcd-bench/bench.h"
#include "bench/cetcd-bench/compare.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: cetcd-bench [flags] put|txn-put|range KEY [END]|txn-mixed KEY [END]|watch|"
          "watch-latency|lease-keepalive|registry\n"
          "       cetcd-bench compare ...\n"
          "\n"
          "Commands:\n"
          "  compare ...    A against B, side by side (cetcd-bench compare --help)\n"
          "  put            Benchmark put\n"
          "  range KEY [END] Benchmark range\n"
          "  txn-put        Benchmark txn-put\n"
          "  txn-mixed KEY [END] Benchmark a mix of ranges (KEY [END], in a Txn) and txn-puts\n"
          "  watch          Benchmark watch creation, then the events of puts\n"
          "  watch-latency  Benchmark put-to-event latency over many watchers\n"
          "  lease-keepalive Benchmark lease keepalive (LeaseKeepAlive streams)\n"
          "  registry       Benchmark a service registry (leases, keepalives, watchers, churn)\n"
          "\n"
          "Flags:\n"
          "  --endpoints LIST       comma-separated gRPC endpoints (default 127.0.0.1:2379)\n"
          "  --conns N              total number of gRPC connections (default 1)\n"
          "  --clients N            total number of gRPC clients (default 1)\n"
          "  --threads N            client event-loop threads (default 1)\n"
          "  --total N              total number of requests (default 10000)\n"
          "  --rate N               maximum requests per second, 0 = no limit (default 0)\n"
          "  --key-size N           key size of put request (default 8)\n"
          "  --val-size N           value size of put request (default 8)\n"
          "  --key-space-size N     maximum possible keys (default 1)\n"
          "  --sequential-keys      use sequential keys\n"
          "  --txn-ops N            txn-put: puts per transaction (default 1)\n"
          "  --consistency l|s      linearizable or serializable range (default l)\n"
          "  --limit N              maximum number of keys per range, 0 = no limit (default 0)\n"
          "  --count-only           only count keys\n"
          "  --rw-ratio R           txn-mixed: read/write ratio (default 1)\n"
          "  --duration D           run this long (30s, 500ms, 2m) instead of --total/--put-total\n"
          "  --target-leader        send everything to the leader among --endpoints\n"
          "  --streams N            watch: watch streams (default 10)\n"
          "  --watch-per-stream N   watch: watchers per stream (default 100)\n"
          "  --watchers-per-stream N watch-latency: watchers per stream (default 10)\n"
          "  --watched-key-total N  watch: keys watched (default 1)\n"
          "  --put-total N          watch: puts after the watchers are created (default 1000)\n"
          "  --put-rate N           watch: puts per second, 0 = no limit (watch 0, watch-latency 100)\n"
          "  --hold D               watch: then keep the watchers open this long (idle watchers)\n"
          "  --leases N             lease-keepalive: leases granted before the clock (default 0 = one per client)\n"
          "  --ttl S                lease TTL seconds (default: lease-keepalive 100, registry 10)\n"
          "  --revoke               lease-keepalive: revoke the leases afterwards, timed in extra\n"
          "  --services N           registry: services (default 100)\n"
          "  --instances N          registry: instances, one lease and key each (default 10000)\n"
          "  --watchers N           registry: prefix watchers, one service each (default = services)\n"
          "  --churn-rate R         registry: deregister+register cycles per second (default 100)\n"
          "  --cacert FILE          verify the server with this CA bundle (TLS)\n"
          "  --cert FILE            client certificate (TLS)\n"
          "  --key FILE             client certificate key (TLS)\n"
          "  --insecure-skip-tls-verify  do not verify the server certificate (TLS)\n"
          "  --format text|json     output format (default text)\n"
          "  --server-pid PID       report the server's peak RSS and CPU from /proc\n");
}

enum {
  OPT_ENDPOINTS = 1000, OPT_CONNS, OPT_CLIENTS, OPT_THREADS, OPT_TOTAL, OPT_RATE, OPT_KEY_SIZE,
  OPT_VAL_SIZE, OPT_KEY_SPACE, OPT_SEQ, OPT_CONSISTENCY, OPT_LIMIT, OPT_COUNT_ONLY, OPT_FORMAT,
  OPT_SERVER_PID, OPT_TXN_OPS, OPT_CACERT, OPT_CERT, OPT_KEY, OPT_INSECURE, OPT_HELP,
  OPT_RW_RATIO, OPT_DURATION, OPT_TARGET_LEADER, OPT_STREAMS, OPT_WATCH_PER_STREAM,
  OPT_WATCHED_KEY_TOTAL, OPT_PUT_TOTAL, OPT_PUT_RATE, OPT_HOLD,
  OPT_LEASES, OPT_TTL, OPT_REVOKE, OPT_SERVICES, OPT_INSTANCES, OPT_WATCHERS, OPT_CHURN_RATE,
};

static const struct option long_opts[] = {
    {"endpoints", required_argument, NULL, OPT_ENDPOINTS},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"clients", required_argument, NULL, OPT_CLIENTS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"total", required_argument, NULL, OPT_TOTAL},
    {"rate", required_argument, NULL, OPT_RATE},
    {"key-size", required_argument, NULL, OPT_KEY_SIZE},
    {"val-size", required_argument, NULL, OPT_VAL_SIZE},
    {"key-space-size", required_argument, NULL, OPT_KEY_SPACE},
    {"sequential-keys", no_argument, NULL, OPT_SEQ},
    {"consistency", required_argument, NULL, OPT_CONSISTENCY},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"count-only", no_argument, NULL, OPT_COUNT_ONLY},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"server-pid", required_argument, NULL, OPT_SERVER_PID},
    {"txn-ops", required_argument, NULL, OPT_TXN_OPS},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"insecure-skip-tls-verify", no_argument, NULL, OPT_INSECURE},
    {"help", no_argument, NULL, OPT_HELP},
    {"rw-ratio", required_argument, NULL, OPT_RW_RATIO},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"target-leader", no_argument, NULL, OPT_TARGET_LEADER},
    {"streams", required_argument, NULL, OPT_STREAMS},
    {"watch-per-stream", required_argument, NULL, OPT_WATCH_PER_STREAM},
    {"watchers-per-stream", required_argument, NULL, OPT_WATCH_PER_STREAM},
    {"watched-key-total", required_argument, NULL, OPT_WATCHED_KEY_TOTAL},
    {"put-total", required_argument, NULL, OPT_PUT_TOTAL},
    {"hold", required_argument, NULL, OPT_HOLD},
    {"put-rate", required_argument, NULL, OPT_PUT_RATE},
    {"leases", required_argument, NULL, OPT_LEASES},
    {"ttl", required_argument, NULL, OPT_TTL},
    {"revoke", no_argument, NULL, OPT_REVOKE},
    {"services", required_argument, NULL, OPT_SERVICES},
    {"instances", required_argument, NULL, OPT_INSTANCES},
    {"watchers", required_argument, NULL, OPT_WATCHERS},
    {"churn-rate", required_argument, NULL, OPT_CHURN_RATE},
    {NULL, 0, NULL, 0},
};

/* Parses a non-negative integer flag in [min, max]; exits on junk. */
static long parse_long(const char *flag, const char *s, long min, long max) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "cetcd-bench: invalid value \"%s\" for --%s (want %ld..%ld)\n", s, flag, min,
            max);
    exit(2);
  }
  return v;
}

/* A non-negative number (--rw-ratio); exits on junk. */
static double parse_double(const char *flag, const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= 0) || v > 1e12) {
    fprintf(stderr, "cetcd-bench: invalid value \"%s\" for --%s (want a number >= 0)\n", s, flag);
    exit(2);
  }
  return v;
}

/* A Go-style duration: a sequence of number+unit (ns, us, ms, s, m, h),
 * e.g. "30s", "1m30s", "500ms", "1.5h". Exits on junk or <= 0. */
static double parse_duration(const char *s) {
  static const struct { const char *unit; double secs; } units[] = {
      {"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"ms", 1e-3}, {"s", 1}, {"m", 60},
      {"h", 3600},
  };
  double total = 0;
  const char *p = s;
  while (*p) {
    char *end;
    double v = strtod(p, &end);
    if (end == p || v < 0) goto bad;
    size_t best = 0, best_len = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
      size_t l = strlen(units[i].unit);
      if (strncmp(end, units[i].unit, l) == 0 && l > best_len) {
        best = i;
        best_len = l;
      }
    }
    if (best_len == 0) goto bad;
    total += v * units[best].secs;
    p = end + best_len;
  }
  if (total > 0) return total;
bad:
  fprintf(stderr, "cetcd-bench: invalid value \"%s\" for --duration (want e.g. 30s, 500ms, 2m)\n",
          s);
  exit(2);
}

static void parse_endpoints(bench_cfg *cfg, char *list) {
  cfg->n_endpoints = 0;
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    if (cfg->n_endpoints == BENCH_ENDPOINTS_MAX) {
      fprintf(stderr, "cetcd-bench: at most %d endpoints\n", BENCH_ENDPOINTS_MAX);
      exit(2);
    }
    cfg->endpoints[cfg->n_endpoints++] = tok;
  }
  if (cfg->n_endpoints == 0) {
    fprintf(stderr, "cetcd-bench: --endpoints is empty\n");
    exit(2);
  }
}

static void parse_flag(bench_cfg *cfg, int opt, char *arg) {
  switch (opt) {
  case OPT_ENDPOINTS: parse_endpoints(cfg, arg); break;
  case OPT_CONNS: cfg->conns = (int)parse_long("conns", arg, 1, 100000); break;
  case OPT_CLIENTS: cfg->clients = (int)parse_long("clients", arg, 1, 1000000); break;
  case OPT_THREADS: cfg->threads = (int)parse_long("threads", arg, 1, 64); break;
  case OPT_TOTAL: cfg->total = parse_long("total", arg, 1, 1000000000); break;
  case OPT_RATE: cfg->rate = (double)parse_long("rate", arg, 0, 100000000); break;
  case OPT_KEY_SIZE:
    cfg->key_size = (int)parse_long("key-size", arg, 1, 4096);
    cfg->key_size_set = 1;
    break;
  case OPT_VAL_SIZE:
    cfg->val_size = (int)parse_long("val-size", arg, 0, 16 << 20);
    cfg->val_size_set = 1;
    break;
  case OPT_KEY_SPACE:
    cfg->key_space_size = parse_long("key-space-size", arg, 1, 1L << 40);
    cfg->key_space_set = 1;
    break;
  case OPT_SEQ: cfg->sequential_keys = 1; break;
  case OPT_CONSISTENCY:
    if (strcmp(arg, "l") != 0 && strcmp(arg, "s") != 0) {
      fprintf(stderr, "cetcd-bench: --consistency must be l or s, got %s\n", arg);
      exit(2);
    }
    cfg->serializable = arg[0] == 's';
    break;
  case OPT_LIMIT: cfg->limit = parse_long("limit", arg, 0, 1L << 40); break;
  case OPT_COUNT_ONLY: cfg->count_only = 1; break;
  case OPT_FORMAT:
    if (strcmp(arg, "json") != 0 && strcmp(arg, "text") != 0) {
      fprintf(stderr, "cetcd-bench: --format must be text or json, got %s\n", arg);
      exit(2);
    }
    cfg->json = arg[0] == 'j';
    break;
  case OPT_SERVER_PID: cfg->server_pid = (int)parse_long("server-pid", arg, 1, 1 << 30); break;
  case OPT_TXN_OPS: cfg->txn_ops = (int)parse_long("txn-ops", arg, 1, 100000); break;
  case OPT_CACERT: cfg->cacert = arg; break;
  case OPT_CERT: cfg->cert = arg; break;
  case OPT_KEY: cfg->key = arg; break;
  case OPT_INSECURE: cfg->insecure_skip_tls_verify = 1; break;
  case OPT_RW_RATIO: cfg->rw_ratio = parse_double("rw-ratio", arg); break;
  case OPT_DURATION: cfg->duration_s = parse_duration(arg); break;
  case OPT_TARGET_LEADER: cfg->target_leader = 1; break;
  case OPT_STREAMS: cfg->streams = (int)parse_long("streams", arg, 1, 1000000); break;
  case OPT_WATCH_PER_STREAM:
    cfg->watch_per_stream = (int)parse_long("watch-per-stream", arg, 1, 1000000);
    break;
  case OPT_WATCHED_KEY_TOTAL:
    cfg->watched_key_total = parse_long("watched-key-total", arg, 1, 1000000);
    break;
  case OPT_PUT_TOTAL: cfg->put_total = parse_long("put-total", arg, 0, 1000000000); break;
  case OPT_HOLD: cfg->hold_s = parse_duration(arg); break;
  case OPT_PUT_RATE: cfg->put_rate = (double)parse_long("put-rate", arg, 0, 100000000); break;
  case OPT_LEASES: cfg->leases = parse_long("leases", arg, 0, 100000000); break;
  case OPT_TTL: cfg->ttl = (int)parse_long("ttl", arg, 1, 1000000); break;
  case OPT_REVOKE: cfg->revoke = 1; break;
  case OPT_SERVICES: cfg->services = (int)parse_long("services", arg, 1, 1000000); break;
  /* registry lease ids carry the instance number in 24 bits (registry.c) */
  case OPT_INSTANCES: cfg->instances = parse_long("instances", arg, 1, 1L << 24); break;
  case OPT_WATCHERS: cfg->watchers = (int)parse_long("watchers", arg, 0, 1000000); break;
  case OPT_CHURN_RATE: cfg->churn_rate = (double)parse_long("churn-rate", arg, 0, 1000000); break;
  case OPT_HELP: usage(stdout); exit(0);
  default: usage(stderr); exit(2);
  }
}

/* Defaults that differ per command in etcd's tool, unless given. */
static void apply_scenario_defaults(bench_cfg *cfg) {
  int watchy = cfg->scenario == BENCH_WATCH || cfg->scenario == BENCH_WATCH_LATENCY;
  if (cfg->limit < 0) cfg->limit = cfg->scenario == BENCH_TXN_MIXED ? 1000 : 0;
  if (cfg->scenario == BENCH_TXN_MIXED) cfg->txn_ops = 1; /* one op per Txn */
  if (cfg->watch_per_stream < 0) cfg->watch_per_stream = cfg->scenario == BENCH_WATCH ? 100 : 10;
  if (cfg->put_rate < 0) cfg->put_rate = cfg->scenario == BENCH_WATCH_LATENCY ? 100 : 0;
  if (watchy && !cfg->key_size_set) cfg->key_size = 32;
  if (cfg->scenario == BENCH_WATCH_LATENCY && !cfg->val_size_set) cfg->val_size = 32;
  /* watch: etcd's tool puts "data"; ours carries the put's number */
  if (cfg->scenario == BENCH_WATCH && !cfg->val_size_set) cfg->val_size = 8;
  if (cfg->scenario == BENCH_LEASE_KEEPALIVE) {
    if (cfg->ttl == 0) cfg->ttl = 100; /* etcd's tool grants with TTL 100 */
    if (cfg->leases == 0) cfg->leases = cfg->clients; /* and one lease per client */
  }
  if (cfg->scenario == BENCH_REGISTRY) {
    if (cfg->ttl == 0) cfg->ttl = 10;
    if (cfg->watchers < 0) cfg->watchers = cfg->services;
  }
  if (watchy && cfg->val_size < 8) {
    fprintf(stderr, "cetcd-bench: %s needs --val-size >= 8 (the put's number is in the value)\n",
            cfg->scenario_name);
    exit(2);
  }
}

static void parse_args(bench_cfg *cfg, int argc, char **argv) {
  static char default_ep[] = "127.0.0.1:2379";
  cfg->endpoints[0] = default_ep;
  cfg->n_endpoints = 1;
  cfg->conns = cfg->clients = cfg->threads = 1;
  cfg->total = 10000;
  cfg->key_size = cfg->val_size = 8;
  cfg->key_space_size = 1;
  cfg->txn_ops = 1;
  cfg->limit = -1; /* per scenario, below */
  cfg->rw_ratio = 1;
  cfg->streams = 10;
  cfg->watch_per_stream = -1;
  cfg->watched_key_total = 1;
  cfg->put_total = 1000;
  cfg->put_rate = -1;
  cfg->services = 100;
  cfg->instances = 10000;
  cfg->watchers = -1; /* = services */
  cfg->churn_rate = 100;
  int opt;
  while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
    if (opt == 'h') opt = OPT_HELP;
    parse_flag(cfg, opt, optarg);
  }
  int npos = argc - optind;
  char **pos = argv + optind;
  if (npos >= 1 && strcmp(pos[0], "put") == 0 && npos == 1) {
    cfg->scenario = BENCH_PUT;
  } else if (npos == 1 && strcmp(pos[0], "txn-put") == 0) {
    cfg->scenario = BENCH_TXN_PUT;
  } else if (npos == 1 && strcmp(pos[0], "lease-keepalive") == 0) {
    cfg->scenario = BENCH_LEASE_KEEPALIVE;
  } else if (npos == 1 && strcmp(pos[0], "registry") == 0) {
    cfg->scenario = BENCH_REGISTRY;
  } else if (npos >= 2 && npos <= 3 && strcmp(pos[0], "range") == 0) {
    cfg->scenario = BENCH_RANGE;
    cfg->range_key = pos[1];
    cfg->range_end = npos == 3 ? pos[2] : NULL;
  } else if (npos >= 2 && npos <= 3 && strcmp(pos[0], "txn-mixed") == 0) {
    cfg->scenario = BENCH_TXN_MIXED;
    cfg->range_key = pos[1];
    cfg->range_end = npos == 3 ? pos[2] : NULL;
  } else if (npos == 1 && strcmp(pos[0], "watch") == 0) {
    cfg->scenario = BENCH_WATCH;
  } else if (npos == 1 && strcmp(pos[0], "watch-latency") == 0) {
    cfg->scenario = BENCH_WATCH_LATENCY;
  } else {
    if (npos >= 1 && (strcmp(pos[0], "range") == 0 || strcmp(pos[0], "txn-mixed") == 0))
      fprintf(stderr, "cetcd-bench: %s takes KEY [END]\n", pos[0]);
    usage(stderr);
    exit(2);
  }
  cfg->scenario_name = pos[0];
  if (cfg->threads > cfg->conns) cfg->threads = cfg->conns; /* a loop needs a connection */
  apply_scenario_defaults(cfg);
}

int main(int argc, char **argv) {
  /* `cetcd-bench compare ...` orchestrates runs of this binary (compare.c). */
  if (argc > 1 && strcmp(argv[1], "compare") == 0) return compare_main(argc - 1, argv + 1);
  bench_cfg cfg = {0};
  bench_result res = {0};
  parse_args(&cfg, argc, argv);
  if (cfg.target_leader && bench_target_leader(&cfg) != 0) return 1;
  if (bench_run(&cfg, &res) != 0) return 1;
  if (cfg.json) bench_report_json(&cfg, &res);
  else bench_report_text(&cfg, &res);
  free(res.lat);
  free(res.lat_kind);
  if (res.extra_free) res.extra_free(res.extra);
  return res.failed == 0 ? 0 : 1;
}
