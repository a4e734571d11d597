/*
 * test_config.c -- flags, ETCD_* variables, validation and bootstrap checks
 * (actors/config.c), and the capnslog line format (actors/log.c).
 *
 * Expected messages are the ones etcd 3.4.23 printed for the same input when
 * run by hand on 2026-11-23 (e.g. `etcd --snapshot-count=abc` ->
 * `invalid value "abc" for flag -snapshot-count: parse error`, exit 2), with
 * "etcd" replaced by "cetcd" only where the text names the program.
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actors/config.h"
#include "actors/ids.h"
#include "actors/log.h"
#include "actors/version.h"

/* One config_parse run with captured stdout/stderr. */
struct run {
  int rc;
  cetcd_config cfg;
  char *out, *err;
  size_t out_len, err_len;
};

#define MAXV 32

static void run_parse(struct run *r, const char *const *args, const char *const *env)
{
  char *argv[MAXV], *envp[MAXV];
  int argc = 0, envc = 0;
  argv[argc++] = (char *)"cetcd";
  for (; args && args[argc - 1]; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  for (; env && env[envc]; envc++)
    envp[envc] = (char *)env[envc];
  envp[envc] = NULL;
  FILE *o = open_memstream(&r->out, &r->out_len);
  FILE *e = open_memstream(&r->err, &r->err_len);
  r->rc = config_parse(argc, argv, envp, &r->cfg, o, e);
  fclose(o);
  fclose(e);
}

static void run_free(struct run *r)
{
  config_free(&r->cfg);
  free(r->out);
  free(r->err);
}

#define A(...) ((const char *const[]){__VA_ARGS__, NULL})

/* rc, exit status and a substring of stderr. */
static void expect(const char *const *args, const char *const *env, int rc, const char *err_has)
{
  struct run r = {0};
  run_parse(&r, args, env);
  CU_ASSERT_EQUAL(r.rc, rc);
  if (err_has && !strstr(r.err, err_has)) {
    printf("\n  stderr lacks [%s]; got [%s]\n", err_has, r.err);
    CU_FAIL("stderr");
  }
  run_free(&r);
}

static void test_defaults(void)
{
  struct run r = {0};
  run_parse(&r, NULL, NULL);
  cetcd_config *c = &r.cfg;
  CU_ASSERT_EQUAL(r.rc, CONFIG_RUN);
  CU_ASSERT_STRING_EQUAL(c->name, "default");
  CU_ASSERT_STRING_EQUAL(c->data_dir, "default.cetcd");
  CU_ASSERT(c->data_dir_defaulted);
  CU_ASSERT_EQUAL_FATAL(c->listen_client_urls.n, 1);
  CU_ASSERT_STRING_EQUAL(c->listen_client_urls.v[0], "http://localhost:2379");
  CU_ASSERT_STRING_EQUAL(c->advertise_client_urls.v[0], "http://localhost:2379");
  CU_ASSERT_STRING_EQUAL(c->listen_peer_urls.v[0], "http://localhost:2380");
  CU_ASSERT_STRING_EQUAL(c->initial_advertise_peer_urls.v[0], "http://localhost:2380");
  CU_ASSERT_STRING_EQUAL(c->initial_cluster, "default=http://localhost:2380");
  CU_ASSERT_STRING_EQUAL(c->initial_cluster_token, "etcd-cluster");
  CU_ASSERT_STRING_EQUAL(c->initial_cluster_state, "new");
  CU_ASSERT_EQUAL(c->snapshot_count, 100000);
  CU_ASSERT_EQUAL(c->max_request_bytes, 1572864);
  CU_ASSERT_EQUAL(c->max_txn_ops, 128);
  CU_ASSERT_EQUAL(c->quota_backend_bytes, 0);
  CU_ASSERT_EQUAL(c->heartbeat_interval_ms, 100);
  CU_ASSERT_EQUAL(c->election_timeout_ms, 1000);
  CU_ASSERT_STRING_EQUAL(c->log_level, "info");
  CU_ASSERT_EQUAL(c->log_threshold, LOG_LEVEL_INFO);
  CU_ASSERT_EQUAL(c->log_fd, 2);
  CU_ASSERT(c->strict_reconfig_check);
  CU_ASSERT(!c->experimental_initial_corrupt_check);
  CU_ASSERT_EQUAL(r.err_len, 0);
  CU_ASSERT_EQUAL(r.out_len, 0);
  run_free(&r);
}

static void check_name(const char *const *args, const char *want)
{
  struct run r = {0};
  run_parse(&r, args, NULL);
  CU_ASSERT_EQUAL(r.rc, CONFIG_RUN);
  if (r.rc == CONFIG_RUN)
    CU_ASSERT_STRING_EQUAL(r.cfg.name, want);
  run_free(&r);
}

static void test_syntaxes(void)
{
  check_name(A("--name", "a"), "a");
  check_name(A("--name=b"), "b");
  check_name(A("-name", "c"), "c");
  check_name(A("-name=d"), "d");
  check_name(A("--name=e", "--name", "f"), "f"); /* last wins */
  check_name(A("--name", "--x"), "--x");          /* a value may start with '-' */
  check_name(A("--name="), "");
  check_name(A("--name", "g", "--"), "g");

  struct run r = {0};
  run_parse(&r,
            A("--strict-reconfig-check=false", "-experimental-initial-corrupt-check",
              "--snapshot-count", "0x10", "--max-request-bytes=010", "--quota-backend-bytes=-5",
              "--max-txn-ops", "7", "--heartbeat-interval=50", "--election-timeout=250",
              "--data-dir=/tmp/x", "--initial-cluster-state=existing", "--log-level=warn"),
            NULL);
  CU_ASSERT_EQUAL_FATAL(r.rc, CONFIG_RUN);
  CU_ASSERT(!r.cfg.strict_reconfig_check);
  CU_ASSERT(r.cfg.experimental_initial_corrupt_check);
  CU_ASSERT_EQUAL(r.cfg.snapshot_count, 16);
  CU_ASSERT_EQUAL(r.cfg.max_request_bytes, 8); /* leading 0: octal, as Go's base 0 */
  CU_ASSERT_EQUAL(r.cfg.quota_backend_bytes, -5);
  CU_ASSERT_EQUAL(r.cfg.max_txn_ops, 7);
  CU_ASSERT_EQUAL(r.cfg.heartbeat_interval_ms, 50);
  CU_ASSERT_EQUAL(r.cfg.election_timeout_ms, 250);
  CU_ASSERT_STRING_EQUAL(r.cfg.data_dir, "/tmp/x");
  CU_ASSERT(!r.cfg.data_dir_defaulted);
  CU_ASSERT_STRING_EQUAL(r.cfg.initial_cluster_state, "existing");
  CU_ASSERT_EQUAL(r.cfg.log_threshold, LOG_LEVEL_WARNING);
  run_free(&r);

  const char *const trues[] = {"1", "t", "T", "TRUE", "true", "True"};
  for (size_t i = 0; i < 6; i++) {
    char a[64];
    snprintf(a, sizeof a, "--experimental-initial-corrupt-check=%s", trues[i]);
    struct run b = {0};
    run_parse(&b, A(a), NULL);
    CU_ASSERT_EQUAL(b.rc, CONFIG_RUN);
    CU_ASSERT(b.cfg.experimental_initial_corrupt_check);
    run_free(&b);
  }
}

static void test_flag_errors(void)
{
  /* Go's flag package: message, then usage, exit 2 */
  expect(A("--foo"), NULL, CONFIG_USAGE_ERROR, "flag provided but not defined: -foo\nUsage:");
  expect(A("-foo=1"), NULL, CONFIG_USAGE_ERROR, "flag provided but not defined: -foo\n");
  expect(A("--name"), NULL, CONFIG_USAGE_ERROR, "flag needs an argument: -name\n");
  expect(A("---name=x"), NULL, CONFIG_USAGE_ERROR, "bad flag syntax: ---name=x\n");
  expect(A("--snapshot-count=abc"), NULL, CONFIG_USAGE_ERROR,
         "invalid value \"abc\" for flag -snapshot-count: parse error\n");
  expect(A("--snapshot-count=-1"), NULL, CONFIG_USAGE_ERROR,
         "invalid value \"-1\" for flag -snapshot-count: parse error\n");
  expect(A("--snapshot-count=99999999999999999999"), NULL, CONFIG_USAGE_ERROR,
         "invalid value \"99999999999999999999\" for flag -snapshot-count: value out of range\n");
  expect(A("--strict-reconfig-check=x"), NULL, CONFIG_USAGE_ERROR,
         "invalid boolean value \"x\" for -strict-reconfig-check: parse error\n");
  expect(A("--initial-cluster-state=bad"), NULL, CONFIG_USAGE_ERROR,
         "invalid value \"bad\" for flag -initial-cluster-state: invalid value\n");
  /* non-flag argument: etcdmain's error, exit 1 */
  expect(A("--strict-reconfig-check", "false"), NULL, CONFIG_INVALID,
         " E | etcdmain: error verifying flags, 'false' is not a valid flag. See 'cetcd --help'.\n");
  expect(A("--", "--name=x"), NULL, CONFIG_INVALID, "'--name=x' is not a valid flag");
  CU_ASSERT_EQUAL(config_exit_status(CONFIG_USAGE_ERROR), 2);
  CU_ASSERT_EQUAL(config_exit_status(CONFIG_INVALID), 1);
  CU_ASSERT_EQUAL(config_exit_status(CONFIG_EXITED), 0);
}

static void test_refused_and_ignored(void)
{
  expect(A("--auto-compaction-retention=1"), NULL, CONFIG_USAGE_ERROR,
         "cetcd: flag --auto-compaction-retention is not supported yet\n");
  expect(A("-cert-file", "x.pem"), NULL, CONFIG_USAGE_ERROR,
         "cetcd: flag --cert-file is not supported yet\n");
  expect(A("--enable-v2=false"), NULL, CONFIG_USAGE_ERROR,
         "cetcd: flag --enable-v2 is not supported yet\n");
  expect(A("--config-file=/etc/etcd.yml"), NULL, CONFIG_USAGE_ERROR,
         "cetcd: flag --config-file is not supported yet\n");
  expect(A("--logger=zap"), NULL, CONFIG_USAGE_ERROR,
         "invalid value \"zap\" for flag -logger: cetcd: --logger=zap is not supported yet");
  expect(A("--listen-client-urls=unix://x:1"), NULL, CONFIG_USAGE_ERROR,
         "unix and unixs URLs are not supported yet");
  /* etcd's legacy flags: warned about, ignored */
  expect(A("-v"), NULL, CONFIG_RUN,
         " W | pkg/flags: flag \"-v\" is no longer supported - ignoring.\n");
  expect(A("--logger=capnslog"), NULL, CONFIG_RUN, NULL);
}

static void test_help_version(void)
{
  const char *const *helps[] = {A("--help"), A("-h"), A("-help"), A("--name=x", "--h")};
  for (size_t i = 0; i < 4; i++) {
    struct run r = {0};
    run_parse(&r, helps[i], NULL);
    CU_ASSERT_EQUAL(r.rc, CONFIG_EXITED);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "Usage:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "--initial-cluster-token 'etcd-cluster'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "--max-request-bytes '1572864'"));
    run_free(&r);
  }
  struct run r = {0};
  run_parse(&r, A("--version"), NULL);
  CU_ASSERT_EQUAL(r.rc, CONFIG_EXITED);
  CU_ASSERT_EQUAL(strncmp(r.out, "cetcd Version: " CETCD_VERSION "\n", 16 + strlen(CETCD_VERSION)),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nAPI version: 3.4\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\nGit SHA: "));
  run_free(&r);
  expect(A("-version=false"), NULL, CONFIG_RUN, NULL);
}

static void test_env(void)
{
  struct run r = {0};
  run_parse(&r, A("--data-dir=/d"),
            A("ETCD_NAME=envname", "ETCD_SNAPSHOT_COUNT=5", "ETCD_STRICT_RECONFIG_CHECK=false",
              "ETCD_LISTEN_PEER_URLS=http://127.0.0.1:7001", "ETCDCTL_API=3", "PATH=/bin"));
  CU_ASSERT_EQUAL_FATAL(r.rc, CONFIG_RUN);
  CU_ASSERT_STRING_EQUAL(r.cfg.name, "envname");
  CU_ASSERT_EQUAL(r.cfg.snapshot_count, 5);
  CU_ASSERT(!r.cfg.strict_reconfig_check);
  CU_ASSERT_STRING_EQUAL(r.cfg.listen_peer_urls.v[0], "http://127.0.0.1:7001");
  CU_ASSERT_PTR_NOT_NULL(
      strstr(r.err, " I | pkg/flags: recognized and used environment variable ETCD_NAME=envname\n"));
  CU_ASSERT_PTR_NULL(strstr(r.err, "ETCDCTL_API"));
  run_free(&r);

  /* a flag on the command line and its variable: fatal, as etcd */
  expect(A("--name=a"), A("ETCD_NAME=b"), CONFIG_INVALID,
         " C | pkg/flags: conflicting environment variable \"ETCD_NAME\" is shadowed by "
         "corresponding command-line flag (either unset environment variable or disable flag)\n");
  /* unknown ETCD_ variable: a warning only */
  expect(NULL, A("ETCD_FOO=x"), CONFIG_RUN,
         " W | pkg/flags: unrecognized environment variable ETCD_FOO=x\n");
  /* set but empty: not used, and etcd calls it unrecognized */
  expect(NULL, A("ETCD_NAME="), CONFIG_RUN, "unrecognized environment variable ETCD_NAME=\n");
  expect(NULL, A("ETCD_SNAPSHOT_COUNT=abc"), CONFIG_INVALID,
         " E | etcdmain: error verifying flags, invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: "
         "parse error. See 'cetcd --help'.\n");
  expect(NULL, A("ETCD_AUTO_COMPACTION_RETENTION=1"), CONFIG_USAGE_ERROR,
         "cetcd: environment variable ETCD_AUTO_COMPACTION_RETENTION is not supported yet\n");
  /* env applies only where the flag is absent */
  struct run p = {0};
  run_parse(&p, A("--snapshot-count=9"), A("ETCD_NAME=z"));
  CU_ASSERT_EQUAL(p.rc, CONFIG_RUN);
  CU_ASSERT_EQUAL(p.cfg.snapshot_count, 9);
  CU_ASSERT_STRING_EQUAL(p.cfg.name, "z");
  CU_ASSERT_STRING_EQUAL(p.cfg.data_dir, "z.cetcd");
  run_free(&p);
}

static void test_validation(void)
{
  expect(A("--heartbeat-interval=0"), NULL, CONFIG_INVALID,
         "error verifying flags, --heartbeat-interval must be >0 (set to 0ms). See 'cetcd --help'.");
  expect(A("--election-timeout=400"), NULL, CONFIG_INVALID,
         "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]. ");
  expect(A("--election-timeout=60000"), NULL, CONFIG_INVALID,
         "--election-timeout[60000ms] is too long, and should be set less than 50000ms. ");
  expect(A("--listen-client-urls=http://127.0.0.1:1"), NULL, CONFIG_INVALID,
         "error verifying flags, --advertise-client-urls is required when --listen-client-urls is "
         "set explicitly. See 'cetcd --help'.\n");
  expect(A("--listen-client-urls=http://127.0.0.1:1"), NULL, CONFIG_INVALID,
         " E | etcdmain: When listening on specific address(es), this etcd process must advertise "
         "accessible url(s) to each connected client.\n");
  expect(A("--listen-client-urls=http://example.com:1", "--advertise-client-urls=http://a:1"),
         NULL, CONFIG_INVALID, "expected IP in URL for binding (http://example.com:1)");
  expect(A("--initial-advertise-peer-urls=http://:1"), NULL, CONFIG_INVALID,
         "--initial-advertise-peer-urls \"http://:1\" must be \"host:port\" (unexpected empty "
         "host (http://:1))");
  expect(A("--log-level=bogus"), NULL, CONFIG_INVALID, "unknown log-level \"bogus\"");
  expect(A("--log-outputs=journal"), NULL, CONFIG_INVALID,
         "unknown log-output \"journal\" (only supports \"default\", \"stderr\", \"stdout\")");
  expect(A("--log-outputs=stderr,stdout"), NULL, CONFIG_INVALID,
         "--logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\" \"stdout\"]");
  expect(A("--log-outputs=stderr,"), NULL, CONFIG_INVALID, "got [\"\" \"stderr\"]");
  expect(A("--log-outputs=stderr,stderr"), NULL, CONFIG_RUN, NULL);
  struct run r = {0};
  run_parse(&r, A("--log-outputs=stdout"), NULL);
  CU_ASSERT_EQUAL(r.rc, CONFIG_RUN);
  CU_ASSERT_EQUAL(r.cfg.log_fd, 1);
  run_free(&r);
}

static void check_url(const char *in, int rc, const char *want)
{
  char out[CONFIG_URL_MAX] = "", err[256] = "";
  CU_ASSERT_EQUAL(config_url_parse(in, out, sizeof out, err, sizeof err), rc);
  const char *got = rc == 0 ? out : err;
  if (strcmp(got, want) != 0) {
    printf("\n  url [%s]: want [%s] got [%s]\n", in, want, got);
    CU_FAIL("url");
  }
}

static void test_urls(void)
{
  check_url("http://127.0.0.1:2379", 0, "http://127.0.0.1:2379");
  check_url("HTTP://127.0.0.1:1", 0, "http://127.0.0.1:1");
  check_url(" http://127.0.0.1:5 ", 0, "http://127.0.0.1:5");
  check_url("http://[::1]:1", 0, "http://[::1]:1");
  check_url("https://example.com:443", 0, "https://example.com:443");
  check_url("127.0.0.1:2380", -1,
            "parse \"127.0.0.1:2380\": first path segment in URL cannot contain colon");
  check_url("localhost:2380", -1, "URL scheme must be http, https, unix, or unixs: localhost:2380");
  check_url("", -1, "URL scheme must be http, https, unix, or unixs: ");
  check_url("ftp://127.0.0.1:1", -1,
            "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1");
  check_url("http://127.0.0.1", -1,
            "URL address does not have the form \"host:port\": http://127.0.0.1");
  check_url("http://127.0.0.1:1:2", -1,
            "URL address does not have the form \"host:port\": http://127.0.0.1:1:2");
  check_url("http://127.0.0.1:1/x", -1, "URL must not contain a path: http://127.0.0.1:1/x");
  check_url("http://127.0.0.1:abc", -1,
            "parse \"http://127.0.0.1:abc\": invalid port \":abc\" after host");
  check_url("http://[::1]:1:", -1, "parse \"http://[::1]:1:\": invalid port \":1:\" after host");
  check_url("http://[::1", -1, "parse \"http://[::1\": missing ']' in host");
  check_url("http://a b:1", -1, "parse \"http://a b:1\": invalid character \" \" in host name");

  /* lists: sorted, a trailing comma is an empty URL */
  expect(A("--listen-client-urls=http://127.0.0.1:2380,"), NULL, CONFIG_USAGE_ERROR,
         "invalid value \"http://127.0.0.1:2380,\" for flag -listen-client-urls: URL scheme must "
         "be http, https, unix, or unixs: \n");
  struct run r = {0};
  run_parse(&r, A("--listen-peer-urls=http://127.0.0.2:1,http://127.0.0.1:1"), NULL);
  CU_ASSERT_EQUAL_FATAL(r.rc, CONFIG_RUN);
  CU_ASSERT_EQUAL_FATAL(r.cfg.listen_peer_urls.n, 2);
  CU_ASSERT_STRING_EQUAL(r.cfg.listen_peer_urls.v[0], "http://127.0.0.1:1");
  CU_ASSERT_STRING_EQUAL(r.cfg.listen_peer_urls.v[1], "http://127.0.0.2:1");
  run_free(&r);
}

static void test_initial_cluster_default(void)
{
  struct run r = {0};
  run_parse(&r,
            A("--name", "t", "--initial-advertise-peer-urls",
              "http://127.0.0.2:2380,http://127.0.0.1:2380"),
            NULL);
  CU_ASSERT_EQUAL_FATAL(r.rc, CONFIG_RUN);
  CU_ASSERT_STRING_EQUAL(r.cfg.initial_cluster, "t=http://127.0.0.1:2380,t=http://127.0.0.2:2380");
  CU_ASSERT_STRING_EQUAL(r.cfg.data_dir, "t.cetcd");
  run_free(&r);
  /* an explicit --initial-cluster is kept */
  memset(&r, 0, sizeof r);
  run_parse(&r, A("--name", "t", "--initial-cluster", "t=http://1.2.3.4:5"), NULL);
  CU_ASSERT_STRING_EQUAL(r.cfg.initial_cluster, "t=http://1.2.3.4:5");
  run_free(&r);
  /* name "default" keeps etcd's default cluster even with other peer URLs */
  memset(&r, 0, sizeof r);
  run_parse(&r, A("--initial-advertise-peer-urls", "http://127.0.0.1:9"), NULL);
  CU_ASSERT_STRING_EQUAL(r.cfg.initial_cluster, "default=http://localhost:2380");
  run_free(&r);
}

static void expect_bootstrap(const char *const *args, int rc, const char *err_want)
{
  struct run r = {0};
  char err[1024] = "";
  uint64_t mid = 0, cid = 0;
  run_parse(&r, args, NULL);
  CU_ASSERT_EQUAL_FATAL(r.rc, CONFIG_RUN);
  CU_ASSERT_EQUAL(config_verify_bootstrap(&r.cfg, &mid, &cid, err, sizeof err), rc);
  if (err_want && strcmp(err, err_want) != 0) {
    printf("\n  bootstrap: want [%s] got [%s]\n", err_want, err);
    CU_FAIL("bootstrap message");
  }
  if (rc == 0 && !err_want) {
    /* etcd 3.4.23: t=http://127.0.0.1:2380, token etcd-cluster (see test_ids.c) */
    CU_ASSERT_EQUAL(mid, 0xb71f75320dc06a6cULL);
    CU_ASSERT_EQUAL(cid, 0x1c45a069f3a1d796ULL);
  }
  run_free(&r);
}

static void test_bootstrap(void)
{
  expect_bootstrap(A("--name", "t", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"), 0,
                   NULL);
  expect_bootstrap(A("--name", "t", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                     "--initial-cluster", "t=http://127.0.0.1:2380"),
                   0, NULL);
  /* the messages below are etcd 3.4.23's for the same flags */
  expect_bootstrap(A("--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:39449",
                     "--initial-cluster", "b=http://127.0.0.1:39449"),
                   -1, "couldn't find local name \"a\" in the initial cluster configuration");
  expect_bootstrap(A("--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:39449",
                     "--initial-cluster", "a=http://127.0.0.1:9999"),
                   -1,
                   "--initial-cluster has a=http://127.0.0.1:9999 but missing from "
                   "--initial-advertise-peer-urls=http://127.0.0.1:39449 (resolved urls: "
                   "\"http://127.0.0.1:39449\" != \"http://127.0.0.1:9999\")");
  expect_bootstrap(A("--name", "a", "--initial-advertise-peer-urls",
                     "http://127.0.0.1:39449,http://127.0.0.1:9998", "--initial-cluster",
                     "a=http://127.0.0.1:39449"),
                   -1,
                   "--initial-advertise-peer-urls has http://127.0.0.1:9998 but missing from "
                   "--initial-cluster=a=http://127.0.0.1:39449,a=http://127.0.0.1:9998");
  expect_bootstrap(A("--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:39449",
                     "--initial-cluster", "a=http://127.0.0.1:39449,b=http://127.0.0.1:39449"),
                   -1,
                   "initial cluster a=http://127.0.0.1:39449,b=http://127.0.0.1:39449 has "
                   "duplicate url");
  expect_bootstrap(A("--name", "a", "--initial-advertise-peer-urls", "http://127.0.0.1:39449",
                     "--initial-cluster", "a=foo"),
                   -1,
                   "error setting up initial cluster: URL scheme must be http, https, unix, or "
                   "unixs: foo");
}

/* ---- log.c ---------------------------------------------------------------- */

static void test_log_format(void)
{
  setenv("TZ", "UTC", 1);
  tzset();
  struct timespec ts = {.tv_sec = 1795990901, .tv_nsec = 629493123}; /* 2026-11-30 */
  char buf[256];
  size_t n = log_format(buf, sizeof buf, &ts, LOG_LEVEL_INFO, "embed",
                        "ready to serve client requests");
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char want[256];
  snprintf(want, sizeof want, "%04d-%02d-%02d %02d:%02d:%02d.629493 I | embed: ready to serve client requests\n",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  CU_ASSERT_STRING_EQUAL(buf, want);
  CU_ASSERT_EQUAL(n, strlen(want));
  log_format(buf, sizeof buf, &ts, LOG_LEVEL_NOTICE, "etcdserver/membership",
             "set the initial cluster version to %s", "3.4");
  CU_ASSERT_PTR_NOT_NULL(strstr(buf, ".629493 N | etcdserver/membership: set the initial "
                                     "cluster version to 3.4\n"));
  /* a message ending in a newline gets no second one */
  n = log_format(buf, sizeof buf, &ts, LOG_LEVEL_WARNING, "auth", "x\n");
  CU_ASSERT(n > 2 && buf[n - 1] == '\n' && buf[n - 2] == 'x');
  const char letters[] = "CEWNID";
  for (int l = LOG_LEVEL_CRITICAL; l <= LOG_LEVEL_DEBUG; l++) {
    log_format(buf, sizeof buf, &ts, (enum log_level)l, "p", "m");
    CU_ASSERT_EQUAL(buf[27], letters[l]);
  }
  /* truncation reports the size needed */
  n = log_format(buf, 10, &ts, LOG_LEVEL_INFO, "embed", "hello");
  CU_ASSERT_EQUAL(n, strlen(want) - strlen("ready to serve client requests") + 5);
  CU_ASSERT_EQUAL(strlen(buf), 9);

  enum log_level l;
  CU_ASSERT(log_level_from_name("warn", &l) == 0 && l == LOG_LEVEL_WARNING);
  CU_ASSERT(log_level_from_name("fatal", &l) == 0 && l == LOG_LEVEL_CRITICAL);
  CU_ASSERT(log_level_from_name("debug", &l) == 0 && l == LOG_LEVEL_DEBUG);
  CU_ASSERT_EQUAL(log_level_from_name("verbose", &l), -1);
}

/* Reads all that was written to a temp file logged into. */
static char *slurp(FILE *f)
{
  fflush(f);
  long len = ftell(f);
  char *s = calloc(1, (size_t)len + 1);
  rewind(f);
  size_t got = fread(s, 1, (size_t)len, f);
  s[got] = '\0';
  return s;
}

static void test_log_levels_and_raft(void)
{
  FILE *f = tmpfile();
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  log_set_fd(fileno(f));
  log_set_level(LOG_LEVEL_WARNING);
  log_printf(LOG_LEVEL_INFO, "embed", "hidden info");
  log_printf(LOG_LEVEL_NOTICE, "embed", "hidden notice");
  log_printf(LOG_LEVEL_WARNING, "auth", "simple token is not cryptographically signed");
  log_raft_printf(LOG_LEVEL_INFO, "%x became leader at term %d", 0xbdae9bbcU, 2);
  log_raft_printf(LOG_LEVEL_DEBUG, "hidden raft debug");
  log_set_level(LOG_LEVEL_INFO);
  char *s = slurp(f);
  CU_ASSERT_PTR_NULL(strstr(s, "hidden"));
  CU_ASSERT_PTR_NOT_NULL(strstr(s, " W | auth: simple token is not cryptographically signed\n"));
  char *raft = strstr(s, "raft");
  CU_ASSERT_PTR_NOT_NULL_FATAL(raft);
  /* raft2026/11/23 22:21:41 INFO: ... */
  CU_ASSERT(raft[8] == '/' && raft[11] == '/' && raft[14] == ' ' && raft[17] == ':');
  CU_ASSERT_EQUAL(strncmp(raft + 23, " INFO: bdae9bbc became leader at term 2\n", 40), 0);
  free(s);
  log_set_fd(2);
  fclose(f);
}

static void test_log_startup(void)
{
  struct run r = {0};
  run_parse(&r,
            A("--name", "t", "--election-timeout=1050", "--advertise-client-urls",
              "http://127.0.0.1:2,http://127.0.0.1:1", "--listen-client-urls", "http://127.0.0.1:1"),
            NULL);
  CU_ASSERT_EQUAL_FATAL(r.rc, CONFIG_RUN);
  FILE *f = tmpfile();
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  log_set_fd(fileno(f));
  config_log_startup(&r.cfg, true);
  log_set_fd(2);
  char *s = slurp(f);
  const char *want[] = {
      " I | etcdmain: cetcd Version: " CETCD_VERSION "\n",
      " W | etcdmain: no data-dir provided, using default data-dir ./t.cetcd\n",
      " N | etcdmain: the server is already initialized as member before, starting as etcd "
      "member...\n",
      " I | embed: name = t\n",
      " I | embed: data dir = t.cetcd\n",
      " I | embed: member dir = t.cetcd/member\n",
      " I | embed: heartbeat = 100ms\n",
      " I | embed: election = 1000ms\n",
      " I | embed: snapshot count = 100000\n",
      " I | embed: advertise client URLs = http://127.0.0.1:1,http://127.0.0.1:2\n",
      " I | embed: initial advertise peer URLs = http://localhost:2380\n",
      " I | embed: initial cluster = \n",
  };
  const char *at = s;
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const char *p = strstr(at, want[i]);
    if (!p) {
      printf("\n  missing or out of order: [%s]\n", want[i]);
      CU_FAIL("startup line");
      break;
    }
    at = p + strlen(want[i]);
  }
  free(s);
  fclose(f);
  run_free(&r);
}

enum { LOG_THREADS = 4, LOG_LINES = 300 };

static void *log_hammer(void *arg)
{
  long t = (long)arg;
  char big[3000];
  memset(big, 'a' + (int)t, sizeof big - 1);
  big[sizeof big - 1] = '\0';
  for (int i = 0; i < LOG_LINES; i++)
    log_printf(LOG_LEVEL_INFO, "stress", "t%ld i%d %s", t, i, (i % 10 == 0) ? big : "short");
  return NULL;
}

/* Lines from many threads never interleave: each is whole and well formed. */
static void test_log_threads(void)
{
  FILE *f = tmpfile();
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  log_set_fd(fileno(f));
  pthread_t th[LOG_THREADS];
  for (long t = 0; t < LOG_THREADS; t++)
    pthread_create(&th[t], NULL, log_hammer, (void *)t);
  for (int t = 0; t < LOG_THREADS; t++)
    pthread_join(th[t], NULL);
  log_set_fd(2);
  char *s = slurp(f);
  int lines = 0, bad = 0;
  for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
    lines++;
    char *msg = strstr(line, " I | stress: t");
    if (!msg || msg != line + 26) {
      bad++;
      continue;
    }
    long t;
    int i;
    char tail[8];
    if (sscanf(msg, " I | stress: t%ld i%d %7s", &t, &i, tail) != 3)
      bad++;
    else if (i % 10 == 0 && (strlen(msg) != strlen(" I | stress: t0 i") + (size_t)snprintf(NULL, 0, "%d", i) + 1 + 2999))
      bad++;
  }
  CU_ASSERT_EQUAL(lines, LOG_THREADS * LOG_LINES);
  CU_ASSERT_EQUAL(bad, 0);
  free(s);
  fclose(f);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("config", NULL, NULL);
  CU_add_test(s, "defaults are etcd 3.4's", test_defaults);
  CU_add_test(s, "Go flag syntaxes, booleans, numbers", test_syntaxes);
  CU_add_test(s, "flag errors: messages and exit codes", test_flag_errors);
  CU_add_test(s, "unsupported etcd flags refused, legacy ones ignored", test_refused_and_ignored);
  CU_add_test(s, "--help and --version", test_help_version);
  CU_add_test(s, "ETCD_* environment", test_env);
  CU_add_test(s, "etcd's validation", test_validation);
  CU_add_test(s, "URL checks", test_urls);
  CU_add_test(s, "default initial cluster follows --name", test_initial_cluster_default);
  CU_add_test(s, "bootstrap checks and ids", test_bootstrap);
  CU_pSuite l = CU_add_suite("log", NULL, NULL);
  CU_add_test(l, "capnslog line format", test_log_format);
  CU_add_test(l, "levels and the raft line format", test_log_levels_and_raft);
  CU_add_test(l, "lines from threads stay whole", test_log_threads);
  CU_add_test(l, "startup summary lines", test_log_startup);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
