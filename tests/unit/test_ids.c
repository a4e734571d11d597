/*
 * test_ids.c -- member and cluster ids against the real etcd 3.4.
 *
 * Two oracles:
 *  1. Values observed from etcd 3.4.23 on 2026-11-23, hard-coded. Each was
 *     produced by starting a fresh etcd with
 *       etcd --name N --data-dir $(mktemp -d) \
 *            --listen-client-urls http://127.0.0.1:P --advertise-client-urls http://127.0.0.1:P \
 *            --listen-peer-urls http://127.0.0.1:Q \
 *            --initial-advertise-peer-urls AP --initial-cluster IC --initial-cluster-token T
 *     (P, Q free ports; ids depend only on AP/IC/T, not on the listen URLs) and
 *     reading its log lines "etcdserver: starting member <id> in cluster <cid>"
 *     and "etcdserver/membership: added member <id> [<urls>] to cluster <cid>";
 *     the 127.0.0.1:23801 case was also read back with
 *     `etcdctl member list -w json` (header cluster_id/member_id, decimal).
 *  2. When `etcd` is on PATH, the test starts it now on free loopback ports
 *     with a 3-member --initial-cluster, reads the same log lines, stops it by
 *     pid and removes its data dir. Without etcd that test says so and passes
 *     vacuously.
 */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "actors/config.h"
#include "actors/ids.h"

static void check_single(const char *url, const char *token, uint64_t want_member,
                         uint64_t want_cluster)
{
  const char *urls[] = {url};
  uint64_t id = ids_member_id(urls, 1, token);
  CU_ASSERT_EQUAL(id, want_member);
  CU_ASSERT_EQUAL(ids_cluster_id(&id, 1), want_cluster);
}

static void test_single_member_oracle(void)
{
  /* etcd's all-defaults member: --name default, http://localhost:2380. */
  check_single("http://localhost:2380", "etcd-cluster", 0x8e9e05c52164694dULL,
               0xcdf818194e3a8c32ULL);
  check_single("http://127.0.0.1:2380", "etcd-cluster", 0xb71f75320dc06a6cULL,
               0x1c45a069f3a1d796ULL);
  check_single("http://127.0.0.1:2380", "my-token", 0x86ded656382e2bccULL,
               0x8c1b131daf5dd603ULL);
  /* Read with etcdctl member list -w json: decimal ids. */
  check_single("http://127.0.0.1:23801", "etcd-cluster", 13668033151171901709ULL,
               15118495548433857066ULL);
}

static void test_three_members_oracle(void)
{
  ids_member *ms = NULL;
  size_t n = 0;
  char err[256] = "";
  int rc = ids_parse_initial_cluster(
      "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380", "etcd-cluster", &ms,
      &n, err, sizeof err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL_FATAL(n, 3);
  /* sorted by id, as etcd lists members */
  CU_ASSERT_STRING_EQUAL(ms[0].name, "a");
  CU_ASSERT_EQUAL(ms[0].id, 0x3ebc01aec68d6d70ULL);
  CU_ASSERT_STRING_EQUAL(ms[1].name, "b");
  CU_ASSERT_EQUAL(ms[1].id, 0xee274cacce804b21ULL);
  CU_ASSERT_STRING_EQUAL(ms[2].name, "c");
  CU_ASSERT_EQUAL(ms[2].id, 0xfe9c64eaf3991d47ULL);
  uint64_t ids[3] = {ms[2].id, ms[0].id, ms[1].id}; /* any order */
  CU_ASSERT_EQUAL(ids_cluster_id(ids, 3), 0xcd11e86392339c47ULL);
  ids_members_free(ms, n);
}

static void test_multi_url_member_oracle(void)
{
  ids_member *ms = NULL;
  size_t n = 0;
  char err[256] = "";
  /* member a has two URLs given in unsorted order, interleaved with b */
  int rc = ids_parse_initial_cluster("b=http://127.0.0.2:2380,a=https://127.0.0.1:12380,"
                                     "a=http://127.0.0.1:2380,c=http://127.0.0.3:2380",
                                     "tok-x", &ms, &n, err, sizeof err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL_FATAL(n, 3);
  CU_ASSERT_STRING_EQUAL(ms[0].name, "a");
  CU_ASSERT_EQUAL(ms[0].id, 0x51298799ae9b72eaULL);
  CU_ASSERT_EQUAL_FATAL(ms[0].n_peer_urls, 2);
  CU_ASSERT_STRING_EQUAL(ms[0].peer_urls[0], "http://127.0.0.1:2380");
  CU_ASSERT_STRING_EQUAL(ms[0].peer_urls[1], "https://127.0.0.1:12380");
  CU_ASSERT_STRING_EQUAL(ms[1].name, "b");
  CU_ASSERT_EQUAL(ms[1].id, 0x7381c82449ef643eULL);
  CU_ASSERT_STRING_EQUAL(ms[2].name, "c");
  CU_ASSERT_EQUAL(ms[2].id, 0xc40edea4a863b54cULL);
  uint64_t ids[3] = {ms[0].id, ms[1].id, ms[2].id};
  CU_ASSERT_EQUAL(ids_cluster_id(ids, 3), 0xed6c5a0bfcedb71dULL);
  ids_members_free(ms, n);

  /* URL order must not matter to ids_member_id either. */
  const char *u1[] = {"https://127.0.0.1:12380", "http://127.0.0.1:2380"};
  const char *u2[] = {"http://127.0.0.1:2380", "https://127.0.0.1:12380"};
  CU_ASSERT_EQUAL(ids_member_id(u1, 2, "tok-x"), 0x51298799ae9b72eaULL);
  CU_ASSERT_EQUAL(ids_member_id(u2, 2, "tok-x"), 0x51298799ae9b72eaULL);
}

static void test_parse_errors(void)
{
  ids_member *ms = NULL;
  size_t n = 0;
  char err[256] = "";
  CU_ASSERT_EQUAL(ids_parse_initial_cluster("a=foo", "t", &ms, &n, err, sizeof err), -1);
  CU_ASSERT_STRING_EQUAL(err, "URL scheme must be http, https, unix, or unixs: foo");
  CU_ASSERT_PTR_NULL(ms);
  CU_ASSERT_EQUAL(ids_parse_initial_cluster("a=http://127.0.0.1", "t", &ms, &n, err, sizeof err),
                  -1);
  CU_ASSERT_STRING_EQUAL(err,
                         "URL address does not have the form \"host:port\": http://127.0.0.1");
  /* same URLs under two names: identical ids; parse keeps both (the
   * duplicate URL is config_verify_bootstrap's error, as in etcd) */
  CU_ASSERT_EQUAL(ids_parse_initial_cluster("a=http://1.2.3.4:1,b=http://1.2.3.4:1", "t", &ms,
                                            &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL_FATAL(n, 2);
  CU_ASSERT_EQUAL(ms[0].id, ms[1].id);
  ids_members_free(ms, n);
  /* empty entries are skipped, an empty string has no members */
  CU_ASSERT_EQUAL(ids_parse_initial_cluster(",,a=http://1.2.3.4:1,", "t", &ms, &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(n, 1);
  ids_members_free(ms, n);
  CU_ASSERT_EQUAL(ids_parse_initial_cluster("", "t", &ms, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL(n, 0);
  ids_members_free(ms, n);
}

/* ---- the live oracle --------------------------------------------------- */

static int free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  socklen_t len = sizeof a;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

static bool etcd_on_path(void) { return system("command -v etcd >/dev/null 2>&1") == 0; }

/* Counts "added member" lines in the log and reads the ids they carry. */
static size_t read_log_ids(const char *path, uint64_t *self, uint64_t *cid, uint64_t *added,
                           size_t cap)
{
  char line[1024];
  size_t n = 0;
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  while (fgets(line, sizeof line, f)) {
    char *p;
    if ((p = strstr(line, "starting member ")))
      sscanf(p, "starting member %" SCNx64 " in cluster %" SCNx64, self, cid);
    else if ((p = strstr(line, "added member ")) && n < cap)
      sscanf(p, "added member %" SCNx64, &added[n++]);
  }
  fclose(f);
  return n;
}

static void test_live_etcd(void)
{
  if (!etcd_on_path()) {
    printf("\n  etcd not on PATH: live oracle skipped\n");
    return;
  }
  int pc = free_port(), pp = free_port(), pb = free_port(), pq = free_port();
  CU_ASSERT_FATAL(pc > 0 && pp > 0 && pb > 0 && pq > 0);
  char dir[] = "/tmp/test_ids.XXXXXX";
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
  char data[64], logp[64], curl[64], purl[64], ic[256];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(logp, sizeof logp, "%s/log", dir);
  snprintf(curl, sizeof curl, "http://127.0.0.1:%d", pc);
  snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pp);
  snprintf(ic, sizeof ic, "live=%s,other=http://127.0.0.1:%d,third=http://127.0.0.1:%d", purl, pb,
           pq);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    FILE *lf = freopen(logp, "w", stderr);
    (void)lf;
    execlp("etcd", "etcd", "--name", "live", "--data-dir", data, "--listen-client-urls", curl,
           "--advertise-client-urls", curl, "--listen-peer-urls", purl,
           "--initial-advertise-peer-urls", purl, "--initial-cluster", ic,
           "--initial-cluster-token", "live-token", (char *)NULL);
    _exit(127);
  }
  uint64_t self = 0, cid = 0, added[8];
  size_t n = 0;
  for (int i = 0; i < 100 && n < 3; i++) { /* up to 10 s */
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    n = read_log_ids(logp, &self, &cid, added, 8);
  }
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  CU_ASSERT_EQUAL(n, 3);

  ids_member *ms = NULL;
  size_t nm = 0;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(ids_parse_initial_cluster(ic, "live-token", &ms, &nm, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(nm, 3);
  uint64_t ours[3];
  for (size_t i = 0; i < nm; i++) {
    ours[i] = ms[i].id;
    if (strcmp(ms[i].name, "live") == 0)
      CU_ASSERT_EQUAL(ms[i].id, self);
    bool seen = false;
    for (size_t k = 0; k < n; k++)
      seen = seen || added[k] == ms[i].id;
    CU_ASSERT(seen);
  }
  CU_ASSERT_EQUAL(ids_cluster_id(ours, nm), cid);
  ids_members_free(ms, nm);

  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CU_ASSERT_EQUAL(system(cmd), 0);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 1;
  CU_pSuite s = CU_add_suite("ids", NULL, NULL);
  CU_add_test(s, "single member ids equal etcd 3.4.23's", test_single_member_oracle);
  CU_add_test(s, "three member ids equal etcd 3.4.23's", test_three_members_oracle);
  CU_add_test(s, "multi-URL member, unsorted input", test_multi_url_member_oracle);
  CU_add_test(s, "initial-cluster parse errors", test_parse_errors);
  CU_add_test(s, "ids equal a live etcd's", test_live_etcd);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
