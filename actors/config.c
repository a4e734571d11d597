/*
 * config.c -- etcd 3.4's flags and ETCD_* variables for cetcd (see config.h).
 *
 * DESIGN. One table lists every flag etcd 3.4 defines, each with how cetcd
 * treats it: parsed into a cetcd_config field, ignored with etcd's warning
 * (etcd's own legacy list), or refused as not supported yet. The command line
 * is walked with Go's flag-package rules, then the environment with
 * pkg/flags.SetFlagsFromEnv's rules, then etcd's derived defaults and
 * embed.Config.Validate's checks, in etcd's order so the first error a user
 * sees is the one etcd would print. Messages are etcd's words; "etcd" becomes
 * "cetcd" only where the text names the program.
 */
#include "actors/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "actors/ids.h"
#include "actors/version.h"

#define CONFIG_DEFAULT_NAME "default"
#define CONFIG_DEFAULT_PEER_URL "http://localhost:2380"
#define CONFIG_DEFAULT_CLIENT_URL "http://localhost:2379"
#define CONFIG_DEFAULT_INITIAL_CLUSTER "default=http://localhost:2380"
#define CONFIG_MAX_ELECTION_MS 50000 /* embed/config.go maxElectionMs */
#define CONFIG_MSG_MAX 1024

enum flag_kind {
  FK_STRING,    /* char * */
  FK_URLS,      /* cetcd_url_list */
  FK_STATE,     /* char *, new|existing (flags.SelectiveStringValue) */
  FK_UINT64,    /* uint64_t (Go Uint64Var) */
  FK_UINT,      /* uint64_t (Go UintVar) */
  FK_UINT32,    /* uint32_t (Go UintVar; cetcd stores 32 bits) */
  FK_INT64,     /* int64_t */
  FK_BOOL,      /* bool */
  FK_DURATION,  /* int64_t nanoseconds (Go DurationVar, time.ParseDuration) */
  FK_LOGGER,    /* char *, "capnslog" only */
  FK_LOGOUTS,   /* char *, flags.UniqueStringsValue, kept raw */
  FK_VERSION,   /* --version */
  FK_IGNORED,   /* etcd's legacy flags: warn, ignore (flags.IgnoredFlag) */
  FK_REFUSED,   /* an etcd flag cetcd does not implement yet */
};

struct flag_def {
  const char *name;
  enum flag_kind kind;
  size_t off; /* into cetcd_config; unused for the last four kinds */
};

#define F(name, kind, field) {name, kind, offsetof(cetcd_config, field)}
#define R(name) {name, FK_REFUSED, 0}
#define I(name) {name, FK_IGNORED, 0}

/* Sorted by name: the environment is visited in this order, as Go's
 * FlagSet.VisitAll visits flags in lexical order. */
static const struct flag_def config_flags[] = {
    F("advertise-client-urls", FK_URLS, advertise_client_urls),
    R("auth-token"),
    R("auth-token-ttl"),
    R("auto-compaction-mode"),
    R("auto-compaction-retention"),
    R("auto-tls"),
    R("backend-batch-interval"),
    R("backend-batch-limit"),
    R("bcrypt-cost"),
    R("cert-file"),
    R("cipher-suites"),
    R("client-cert-allowed-hostname"),
    R("client-cert-auth"),
    R("client-crl-file"),
    I("cluster-active-size"),
    I("cluster-remove-delay"),
    I("cluster-sync-interval"),
    I("config"),
    R("config-file"),
    R("cors"),
    F("data-dir", FK_STRING, data_dir),
    R("debug"),
    R("discovery"),
    R("discovery-fallback"),
    R("discovery-proxy"),
    R("discovery-srv"),
    R("discovery-srv-name"),
    F("election-timeout", FK_UINT32, election_timeout_ms),
    R("enable-grpc-gateway"),
    R("enable-pprof"),
    R("enable-v2"),
    R("experimental-backend-bbolt-freelist-type"),
    R("experimental-compaction-batch-limit"),
    R("experimental-corrupt-check-time"),
    R("experimental-enable-lease-checkpoint"),
    R("experimental-enable-lease-checkpoint-persist"),
    R("experimental-enable-v2v3"),
    F("experimental-initial-corrupt-check", FK_BOOL, experimental_initial_corrupt_check),
    R("experimental-peer-skip-client-san-verification"),
    R("experimental-warning-apply-duration"),
    F("experimental-watch-progress-notify-interval", FK_DURATION, experimental_watch_progress_notify_interval_ns),
    I("force"),
    R("force-new-cluster"),
    R("grpc-keepalive-interval"),
    R("grpc-keepalive-min-time"),
    R("grpc-keepalive-timeout"),
    F("heartbeat-interval", FK_UINT32, heartbeat_interval_ms),
    R("host-whitelist"),
    F("initial-advertise-peer-urls", FK_URLS, initial_advertise_peer_urls),
    F("initial-cluster", FK_STRING, initial_cluster),
    F("initial-cluster-state", FK_STATE, initial_cluster_state),
    F("initial-cluster-token", FK_STRING, initial_cluster_token),
    R("initial-election-tick-advance"),
    R("key-file"),
    F("listen-client-urls", FK_URLS, listen_client_urls),
    R("listen-metrics-urls"),
    F("listen-peer-urls", FK_URLS, listen_peer_urls),
    F("log-level", FK_STRING, log_level),
    F("log-output", FK_LOGOUTS, log_outputs), /* deprecated alias */
    F("log-outputs", FK_LOGOUTS, log_outputs),
    R("log-package-levels"),
    F("logger", FK_LOGGER, logger),
    R("max-concurrent-streams"),
    F("max-request-bytes", FK_UINT, max_request_bytes),
    I("max-result-buffer"),
    I("max-retry-attempts"),
    R("max-snapshots"),
    F("max-txn-ops", FK_UINT32, max_txn_ops),
    R("max-wals"),
    R("metrics"),
    F("name", FK_STRING, name),
    R("peer-auto-tls"),
    R("peer-cert-allowed-cn"),
    R("peer-cert-allowed-hostname"),
    R("peer-cert-file"),
    R("peer-client-cert-auth"),
    R("peer-crl-file"),
    I("peer-election-timeout"),
    I("peer-heartbeat-interval"),
    R("peer-key-file"),
    R("peer-trusted-ca-file"),
    R("pre-vote"),
    R("proxy"),
    R("proxy-dial-timeout"),
    R("proxy-failure-wait"),
    R("proxy-read-timeout"),
    R("proxy-refresh-interval"),
    R("proxy-write-timeout"),
    F("quota-backend-bytes", FK_INT64, quota_backend_bytes),
    I("retry-interval"),
    I("snapshot"),
    F("snapshot-count", FK_UINT64, snapshot_count),
    F("strict-reconfig-check", FK_BOOL, strict_reconfig_check),
    I("test.coverprofile"),
    I("test.outputdir"),
    R("trusted-ca-file"),
    R("unsafe-no-fsync"),
    I("v"),
    {"version", FK_VERSION, 0},
    I("vv"),
};

#undef F
#undef R
#undef I

enum { CONFIG_NFLAGS = sizeof config_flags / sizeof config_flags[0] };

/* Parser state shared by the steps below. */
struct pstate {
  cetcd_config *cfg;
  FILE *out, *err;
  bool set[CONFIG_NFLAGS]; /* given on the command line or by env */
  bool on_cli[CONFIG_NFLAGS];
  bool print_version;
};

/* ---- small helpers ------------------------------------------------------- */

static char *config_strdup(const char *s)
{
  char *d = strdup(s);
  if (!d)
    abort(); /* startup-only allocations: no way to run without them */
  return d;
}

static void config_replace(char **slot, const char *v)
{
  free(*slot);
  *slot = config_strdup(v);
}

/* Go's %q for the ASCII a flag value holds: quotes, escapes \ " and controls. */
static const char *go_quote(char *buf, size_t cap, const char *s)
{
  size_t w = 0;
  if (cap < 3)
    return "";
  buf[w++] = '"';
  for (; *s && w + 6 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[w++] = '\\';
      buf[w++] = (char)c;
    } else if (c == '\n') {
      buf[w++] = '\\';
      buf[w++] = 'n';
    } else if (c == '\t') {
      buf[w++] = '\\';
      buf[w++] = 't';
    } else if (c < 0x20 || c == 0x7f) {
      w += (size_t)snprintf(buf + w, cap - w, "\\x%02x", c);
    } else {
      buf[w++] = (char)c;
    }
  }
  buf[w++] = '"';
  buf[w] = '\0';
  return buf;
}

static void go_quote_list(char *const *v, size_t n, char *buf, size_t cap);

/* A capnslog-format line to `err` (etcd logs these through capnslog). */
static void config_log(FILE *f, enum log_level lvl, const char *pkg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void config_log(FILE *f, enum log_level lvl, const char *pkg, const char *fmt, ...)
{
  char line[2 * CONFIG_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  size_t n = log_vformat(line, sizeof line, NULL, lvl, pkg, fmt, ap);
  va_end(ap);
  if (n >= sizeof line)
    line[sizeof line - 2] = '\n'; /* cut, but still one whole line */
  fputs(line, f);
  fflush(f);
}

static const struct flag_def *config_lookup(const char *name, size_t len)
{
  for (size_t i = 0; i < CONFIG_NFLAGS; i++)
    if (strlen(config_flags[i].name) == len && memcmp(config_flags[i].name, name, len) == 0)
      return &config_flags[i];
  return NULL;
}

static bool flag_is_boolish(const struct flag_def *f)
{
  return f->kind == FK_BOOL || f->kind == FK_VERSION || f->kind == FK_IGNORED;
}

static void url_list_free(cetcd_url_list *l)
{
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* ---- URLs: etcd's types.NewURLs over Go's url.Parse ----------------------- */

/* Go's getScheme: a letter, then letters, digits, '+', '-', '.', up to ':'.
 * Returns the scheme length, 0 when there is none, -1 for a leading ':'. */
static int url_scheme_len(const char *s)
{
  for (int i = 0; s[i]; i++) {
    unsigned char c = (unsigned char)s[i];
    if (isalpha(c))
      continue;
    if (isdigit(c) || c == '+' || c == '-' || c == '.') {
      if (i == 0)
        return 0;
      continue;
    }
    if (c == ':')
      return i == 0 ? -1 : i;
    return 0;
  }
  return 0;
}

/* Characters Go's url.Parse accepts in a host (shouldEscape, encodeHost). */
static bool url_host_char_ok(unsigned char c)
{
  return isalnum(c) || strchr("-._~!$&'()*+,;=:[]<>\"%", c) != NULL;
}

/* Go's net.SplitHostPort: 0 and the host (brackets stripped), or -1. */
static int url_split_host_port(const char *hp, size_t len, char *host, size_t host_cap)
{
  const char *h, *port;
  size_t hl, pl;
  if (len > 0 && hp[0] == '[') {
    const char *end = memchr(hp, ']', len);
    if (!end)
      return -1;
    size_t after = (size_t)(end - hp) + 1;
    if (after >= len || hp[after] != ':')
      return -1; /* "missing port in address" / "too many colons" */
    h = hp + 1;
    hl = after - 2;
    port = hp + after + 1;
    pl = len - after - 1;
  } else {
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
      if (hp[i] == ':')
        colon = hp + i;
    if (!colon)
      return -1;
    h = hp;
    hl = (size_t)(colon - hp);
    if (memchr(h, ':', hl))
      return -1;
    port = colon + 1;
    pl = len - hl - 1;
  }
  if (memchr(h, '[', hl) || memchr(h, ']', hl) || memchr(port, '[', pl) || memchr(port, ']', pl))
    return -1;
  if (hl + 1 > host_cap)
    return -1;
  memcpy(host, h, hl);
  host[hl] = '\0';
  return 0;
}

/* Go's parseHost: what follows the host must be "" or ":digits". */
static int url_check_port(const char *s, const char *hp, size_t len, char *err, size_t err_len)
{
  char q[CONFIG_URL_MAX + 16], qp[CONFIG_URL_MAX + 16], port[CONFIG_URL_MAX];
  const char *p = NULL;
  if (len > 0 && hp[0] == '[') {
    const char *end = memchr(hp, ']', len);
    if (!end) {
      snprintf(err, err_len, "parse %s: missing ']' in host", go_quote(q, sizeof q, s));
      return -1;
    }
    p = end + 1;
  } else {
    for (size_t i = 0; i < len; i++)
      if (hp[i] == ':')
        p = hp + i;
  }
  if (!p)
    return 0;
  size_t pl = len - (size_t)(p - hp);
  bool ok = pl == 0 || p[0] == ':';
  for (size_t i = 1; ok && i < pl; i++)
    ok = isdigit((unsigned char)p[i]) != 0;
  if (ok)
    return 0;
  memcpy(port, p, pl);
  port[pl] = '\0';
  snprintf(err, err_len, "parse %s: invalid port %s after host", go_quote(q, sizeof q, s),
           go_quote(qp, sizeof qp, port));
  return -1;
}

int config_url_parse(const char *in, char *out, size_t out_cap, char *err, size_t err_len)
{
  char s[CONFIG_URL_MAX], q[CONFIG_URL_MAX + 16], host[CONFIG_URL_MAX];
  const char *b = in, *e = in + strlen(in);
  while (b < e && isspace((unsigned char)*b))
    b++;
  while (e > b && isspace((unsigned char)e[-1]))
    e--;
  if ((size_t)(e - b) + 1 > sizeof s || (size_t)(e - b) + 1 > out_cap) {
    snprintf(err, err_len, "URL too long: %.64s...", b);
    return -1;
  }
  memcpy(s, b, (size_t)(e - b));
  s[e - b] = '\0';
  int sl = url_scheme_len(s);
  if (sl < 0) {
    snprintf(err, err_len, "parse %s: missing protocol scheme", go_quote(q, sizeof q, s));
    return -1;
  }
  if (sl == 0) {
    /* No scheme: Go parses a relative path, and rejects a colon in its first
     * segment; otherwise the scheme is simply empty. */
    size_t seg = strcspn(s, "/?#");
    if (memchr(s, ':', seg)) {
      snprintf(err, err_len, "parse %s: first path segment in URL cannot contain colon",
               go_quote(q, sizeof q, s));
      return -1;
    }
  }
  for (int i = 0; i < sl; i++)
    s[i] = (char)tolower((unsigned char)s[i]);
  bool known = (sl == 4 && memcmp(s, "http", 4) == 0) || (sl == 5 && memcmp(s, "https", 5) == 0) ||
               (sl == 4 && memcmp(s, "unix", 4) == 0) || (sl == 5 && memcmp(s, "unixs", 5) == 0);
  if (!known) {
    snprintf(err, err_len, "URL scheme must be http, https, unix, or unixs: %s", s);
    return -1;
  }
  /* Only "scheme://authority" has a host; "http:foo" is opaque, host "". */
  const char *rest = s + sl + 1, *auth = "", *path = "";
  size_t auth_len = 0;
  if (strncmp(rest, "//", 2) == 0) {
    auth = rest + 2;
    auth_len = strcspn(auth, "/?#");
    path = auth + auth_len;
  }
  const char *at = memchr(auth, '@', auth_len);
  const char *hp = at ? at + 1 : auth;
  size_t hp_len = auth_len - (size_t)(hp - auth);
  for (size_t i = 0; i < hp_len; i++) {
    if (!url_host_char_ok((unsigned char)hp[i])) {
      char c[2] = {hp[i], 0};
      snprintf(err, err_len, "parse %s: invalid character %s in host name",
               go_quote(q, sizeof q, s), go_quote(host, sizeof host, c));
      return -1;
    }
  }
  if (url_check_port(s, hp, hp_len, err, err_len) != 0)
    return -1;
  if (url_split_host_port(hp, hp_len, host, sizeof host) != 0) {
    snprintf(err, err_len, "URL address does not have the form \"host:port\": %s", s);
    return -1;
  }
  size_t path_len = strcspn(path, "?#");
  if (path_len > 0) {
    snprintf(err, err_len, "URL must not contain a path: %s", s);
    return -1;
  }
  snprintf(out, out_cap, "%s", s);
  return 0;
}

/* Sets a URL list from "u1,u2" (flags.UniqueURLs.Set): every URL checked,
 * the list sorted; "" leaves the list as it was (etcd allows "" as an
 * exception and keeps the previous URLs). */
static int url_list_set(cetcd_url_list *l, const char *v, char *msg, size_t cap)
{
  cetcd_url_list nl = {0};
  char url[CONFIG_URL_MAX];
  if (v[0] == '\0')
    return 0;
  for (const char *p = v;;) {
    size_t len = strcspn(p, ",");
    char *one = strndup(p, len);
    if (!one)
      abort();
    int rc = config_url_parse(one, url, sizeof url, msg, cap);
    free(one);
    if (rc == 0 && strncmp(url, "unix", 4) == 0) {
      snprintf(msg, cap, "cetcd: unix and unixs URLs are not supported yet: %s", url);
      rc = -1;
    }
    if (rc != 0) {
      url_list_free(&nl);
      return -1;
    }
    char **grown = realloc(nl.v, (nl.n + 1) * sizeof *grown);
    if (!grown)
      abort();
    nl.v = grown;
    nl.v[nl.n++] = config_strdup(url);
    if (p[len] == '\0')
      break;
    p += len + 1;
  }
  for (size_t i = 1; i < nl.n; i++) /* insertion sort: a handful of URLs */
    for (size_t j = i; j > 0 && strcmp(nl.v[j - 1], nl.v[j]) > 0; j--) {
      char *t = nl.v[j];
      nl.v[j] = nl.v[j - 1];
      nl.v[j - 1] = t;
    }
  url_list_free(l);
  *l = nl;
  return 0;
}

/* ---- numbers and booleans: Go's strconv with base 0 ----------------------- */

/* strconv.ParseUint(s, 0, 64): 0x/0o/0b prefixes, a leading 0 is octal.
 * Returns 0, or the flag package's "parse error" / "value out of range". */
static const char *go_parse_uint(const char *s, uint64_t *out)
{
  int base = 10;
  const char *p = s;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  } else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O')) {
    base = 8;
    p += 2;
  } else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B')) {
    base = 2;
    p += 2;
  } else if (p[0] == '0' && p[1] != '\0') {
    base = 8;
    p += 1;
  }
  if (*p == '\0')
    return "parse error";
  uint64_t v = 0;
  bool range = false;
  for (; *p; p++) {
    int d;
    unsigned char c = (unsigned char)*p;
    if (isdigit(c))
      d = c - '0';
    else if (isalpha(c))
      d = tolower(c) - 'a' + 10;
    else
      return "parse error";
    if (d >= base)
      return "parse error";
    if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
      range = true;
    else
      v = v * (uint64_t)base + (uint64_t)d;
  }
  if (range)
    return "value out of range";
  *out = v;
  return NULL;
}

static const char *go_parse_int64(const char *s, int64_t *out)
{
  bool neg = s[0] == '-';
  uint64_t u;
  const char *e = go_parse_uint(s + (s[0] == '-' || s[0] == '+'), &u);
  if (e)
    return e;
  if (u > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
    return "value out of range";
  *out = neg ? (int64_t)(0 - u) : (int64_t)u;
  return NULL;
}

static const char *go_parse_bool(const char *s, bool *out)
{
  static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
  static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
  for (size_t i = 0; i < 6; i++) {
    if (strcmp(s, t[i]) == 0) {
      *out = true;
      return NULL;
    }
    if (strcmp(s, f[i]) == 0) {
      *out = false;
      return NULL;
    }
  }
  return "parse error";
}

/* Go's time.ParseDuration ("1h2m0.5s", "-1.5h", "300ms", "0"); flag's
 * durationValue.Set answers any failure with errParse. */
static const char *go_parse_duration(const char *s, int64_t *out)
{
  static const struct { const char *u; uint64_t ns; } units[] = {
      {"ns", 1}, {"us", 1000}, {"\xc2\xb5s", 1000}, {"\xce\xbcs", 1000}, {"ms", 1000000},
      {"s", 1000000000ULL}, {"m", 60000000000ULL}, {"h", 3600000000000ULL}};
  bool neg = false;
  if (*s == '-' || *s == '+') neg = *s++ == '-';
  if (strcmp(s, "0") == 0) {
    *out = 0;
    return NULL;
  }
  if (!*s) return "parse error";
  uint64_t total = 0;
  while (*s) {
    uint64_t v = 0, f = 0, scale = 1;
    bool digits = false;
    for (; *s >= '0' && *s <= '9'; s++, digits = true) {
      if (v > (UINT64_MAX - 9) / 10) return "parse error";
      v = v * 10 + (uint64_t)(*s - '0');
    }
    if (*s == '.') {
      for (s++; *s >= '0' && *s <= '9'; s++, digits = true)
        if (scale < 1000000000000000000ULL) f = f * 10 + (uint64_t)(*s - '0'), scale *= 10;
    }
    if (!digits) return "parse error";
    size_t ul = strcspn(s, "0123456789.");
    uint64_t unit = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
      if (strlen(units[i].u) == ul && strncmp(s, units[i].u, ul) == 0) unit = units[i].ns;
    if (!unit) return "parse error";
    s += ul;
    if (v > (uint64_t)INT64_MAX / unit) return "parse error";
    uint64_t add = v * unit + (uint64_t)((double)f * (double)unit / (double)scale);
    if (add > (uint64_t)INT64_MAX - total) return "parse error";
    total += add;
  }
  *out = neg ? -(int64_t)total : (int64_t)total;
  return NULL;
}

/* ---- one flag's value ------------------------------------------------------ */

/* Sets flag f from v. Returns 0, or -1 with the error text Go's Value.Set
 * returns in msg. FK_REFUSED never gets here. */
static int flag_set(struct pstate *st, const struct flag_def *f, const char *v, char *msg,
                    size_t cap)
{
  char *base = (char *)st->cfg;
  void *field = base + f->off;
  const char *e = NULL;
  uint64_t u = 0;
  switch (f->kind) {
  case FK_STRING:
    config_replace((char **)field, v);
    return 0;
  case FK_URLS:
    return url_list_set((cetcd_url_list *)field, v, msg, cap);
  case FK_STATE:
    if (strcmp(v, "new") != 0 && strcmp(v, "existing") != 0) {
      snprintf(msg, cap, "invalid value");
      return -1;
    }
    config_replace((char **)field, v);
    return 0;
  case FK_LOGGER:
    if (strcmp(v, "capnslog") != 0) {
      snprintf(msg, cap, "cetcd: --logger=%s is not supported yet (only 'capnslog')", v);
      return -1;
    }
    config_replace((char **)field, v);
    return 0;
  case FK_LOGOUTS:
    config_replace((char **)field, v);
    return 0;
  case FK_UINT64:
  case FK_UINT:
    if ((e = go_parse_uint(v, &u)) == NULL)
      *(uint64_t *)field = u;
    break;
  case FK_UINT32:
    if ((e = go_parse_uint(v, &u)) == NULL) {
      if (u > UINT32_MAX)
        e = "value out of range";
      else
        *(uint32_t *)field = (uint32_t)u;
    }
    break;
  case FK_INT64:
    e = go_parse_int64(v, (int64_t *)field);
    break;
  case FK_BOOL:
    e = go_parse_bool(v, (bool *)field);
    break;
  case FK_DURATION:
    e = go_parse_duration(v, (int64_t *)field);
    break;
  case FK_VERSION:
    e = go_parse_bool(v, &st->print_version);
    break;
  case FK_IGNORED:
    config_log(st->err, LOG_LEVEL_WARNING, "pkg/flags",
               "flag \"-%s\" is no longer supported - ignoring.", f->name);
    return 0;
  case FK_REFUSED:
    break;
  }
  if (e) {
    snprintf(msg, cap, "%s", e);
    return -1;
  }
  return 0;
}

/* ---- the command line: Go's flag.FlagSet.Parse ----------------------------- */

static void config_usage(FILE *f)
{
  fputs("Usage:\n"
        "\n"
        "  cetcd [flags]\n"
        "    Start a cetcd server.\n"
        "\n"
        "  cetcd --version\n"
        "    Show the version of cetcd.\n"
        "\n"
        "  cetcd -h | --help\n"
        "    Show the help information about cetcd.\n",
        f);
}

static int config_usage_error(struct pstate *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int config_usage_error(struct pstate *st, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vfprintf(st->err, fmt, ap);
  va_end(ap);
  fputc('\n', st->err);
  config_usage(st->err);
  fflush(st->err);
  return CONFIG_USAGE_ERROR;
}

static int config_refuse(struct pstate *st, const char *what, const char *name)
{
  fprintf(st->err, "cetcd: %s %s is not supported yet\n", what, name);
  fflush(st->err);
  return CONFIG_USAGE_ERROR;
}

/* config_parse_one's results besides the CONFIG_* ones. */
enum { PARSE_NEXT = 100, PARSE_STOP = 101 };

/* One argument (and maybe its value). Returns PARSE_NEXT to go on,
 * PARSE_STOP at a non-flag argument or "--", or a CONFIG_* result. */
static int config_parse_one(struct pstate *st, int argc, char **argv, int *i)
{
  char msg[CONFIG_MSG_MAX], q[CONFIG_MSG_MAX];
  const char *s = argv[*i];
  if (strlen(s) < 2 || s[0] != '-')
    return PARSE_STOP;
  int minuses = s[1] == '-' ? 2 : 1;
  if (minuses == 2 && s[2] == '\0') {
    (*i)++;
    return PARSE_STOP;
  }
  const char *name = s + minuses;
  if (name[0] == '\0' || name[0] == '-' || name[0] == '=')
    return config_usage_error(st, "bad flag syntax: %s", s);
  (*i)++;
  const char *eq = strchr(name, '=');
  size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
  const char *value = eq ? eq + 1 : NULL;
  const struct flag_def *f = config_lookup(name, name_len);
  if (!f) {
    if ((name_len == 4 && memcmp(name, "help", 4) == 0) ||
        (name_len == 1 && name[0] == 'h')) {
      config_print_help(st->out);
      return CONFIG_EXITED;
    }
    return config_usage_error(st, "flag provided but not defined: -%.*s", (int)name_len, name);
  }
  if (f->kind == FK_REFUSED) {
    snprintf(msg, sizeof msg, "--%s", f->name);
    return config_refuse(st, "flag", msg);
  }
  if (flag_is_boolish(f)) {
    if (flag_set(st, f, value ? value : "true", msg, sizeof msg) != 0)
      return config_usage_error(st, "invalid boolean value %s for -%s: %s",
                                go_quote(q, sizeof q, value), f->name, msg);
  } else {
    if (!value) {
      if (*i >= argc)
        return config_usage_error(st, "flag needs an argument: -%s", f->name);
      value = argv[(*i)++];
    }
    if (flag_set(st, f, value, msg, sizeof msg) != 0)
      return config_usage_error(st, "invalid value %s for flag -%s: %s",
                                go_quote(q, sizeof q, value), f->name, msg);
  }
  size_t idx = (size_t)(f - config_flags);
  st->set[idx] = st->on_cli[idx] = true;
  return PARSE_NEXT;
}

/* ---- the environment: pkg/flags.SetFlagsFromEnv ---------------------------- */

static void flag_env_key(const struct flag_def *f, char *key, size_t cap)
{
  size_t w = (size_t)snprintf(key, cap, "ETCD_");
  for (const char *p = f->name; *p && w + 1 < cap; p++)
    key[w++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  key[w] = '\0';
}

static const char *env_get(char **envp, const char *key)
{
  size_t kl = strlen(key);
  const char *found = NULL;
  for (char **e = envp; e && *e; e++)
    if (strncmp(*e, key, kl) == 0 && (*e)[kl] == '=')
      found = *e + kl + 1; /* like getenv: the first; duplicates are rare */
  return found;
}

/* Reports the error of an env value the way etcdmain does (exit 1). */
static int config_invalid(struct pstate *st, const char *msg)
{
  config_log(st->err, LOG_LEVEL_ERROR, "etcdmain",
             "error verifying flags, %s. See 'cetcd --help'.", msg);
  return CONFIG_INVALID;
}

/* Sets flags from ETCD_* variables. A bad value is kept in bad (the first
 * one) and reported by the caller after config_verify_env, in etcd's order. */
static int config_apply_env(struct pstate *st, char **envp, bool *used, char *bad, size_t bad_cap)
{
  char key[128], msg[CONFIG_MSG_MAX], q[CONFIG_MSG_MAX];
  for (size_t i = 0; i < CONFIG_NFLAGS; i++) {
    const struct flag_def *f = &config_flags[i];
    flag_env_key(f, key, sizeof key);
    const char *v = env_get(envp, key);
    if (st->on_cli[i] || !v || v[0] == '\0')
      continue;
    used[i] = true;
    if (f->kind == FK_REFUSED)
      return config_refuse(st, "environment variable", key);
    if (flag_set(st, f, v, msg, sizeof msg) != 0) {
      if (bad[0] == '\0')
        snprintf(bad, bad_cap, "invalid value %s for %s: %s", go_quote(q, sizeof q, v), key, msg);
      continue;
    }
    st->set[i] = true;
    config_log(st->err, LOG_LEVEL_INFO, "pkg/flags",
               "recognized and used environment variable %s=%s", key, v);
  }
  return CONFIG_RUN;
}

/* pkg/flags.verifyEnv: a variable shadowed by a command-line flag is fatal,
 * any other unused ETCD_* variable gets a warning. */
static int config_verify_env(struct pstate *st, char **envp, const bool *used)
{
  char key[128];
  for (char **e = envp; e && *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq)
      continue;
    size_t kl = (size_t)(eq - *e);
    bool known = false;
    for (size_t i = 0; i < CONFIG_NFLAGS && !known; i++) {
      flag_env_key(&config_flags[i], key, sizeof key);
      if (strlen(key) != kl || strncmp(key, *e, kl) != 0)
        continue;
      known = true;
      if (used[i])
        break;
      if (st->on_cli[i]) {
        config_log(st->err, LOG_LEVEL_CRITICAL, "pkg/flags",
                   "conflicting environment variable \"%.*s\" is shadowed by corresponding "
                   "command-line flag (either unset environment variable or disable flag)",
                   (int)kl, *e);
        return CONFIG_INVALID;
      }
      known = false; /* set but empty: etcd calls it unrecognized */
      break;
    }
    if (!known && strncmp(*e, "ETCD_", 5) == 0)
      config_log(st->err, LOG_LEVEL_WARNING, "pkg/flags", "unrecognized environment variable %s",
                 *e);
  }
  return CONFIG_RUN;
}

/* ---- etcd's checks: embed.Config.Validate and friends ---------------------- */

/* checkBindURLs: a listen URL's host must be an IP literal or "localhost". */
static int check_bind_urls(const cetcd_url_list *l, char *msg, size_t cap)
{
  char host[CONFIG_URL_MAX];
  unsigned char addr[16];
  for (size_t i = 0; i < l->n; i++) {
    const char *a = strstr(l->v[i], "://");
    a = a ? a + 3 : l->v[i];
    const char *at = strchr(a, '@');
    a = at ? at + 1 : a;
    if (url_split_host_port(a, strcspn(a, "/?#"), host, sizeof host) != 0)
      continue; /* cannot happen: config_url_parse checked it */
    if (strcmp(host, "localhost") == 0)
      continue;
    if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1) {
      snprintf(msg, cap, "expected IP in URL for binding (%s)", l->v[i]);
      return -1;
    }
  }
  return 0;
}

/* checkHostURLs: an advertised URL needs a host. */
static int check_host_urls(const cetcd_url_list *l, const char *flag, char *msg, size_t cap)
{
  char host[CONFIG_URL_MAX], joined[CONFIG_MSG_MAX] = "", q[CONFIG_MSG_MAX];
  for (size_t i = 0; i < l->n; i++) {
    size_t jl = strlen(joined);
    snprintf(joined + jl, sizeof joined - jl, "%s%s", i ? "," : "", l->v[i]);
  }
  for (size_t i = 0; i < l->n; i++) {
    const char *a = strstr(l->v[i], "://");
    a = a ? a + 3 : l->v[i];
    const char *at = strchr(a, '@');
    a = at ? at + 1 : a;
    if (url_split_host_port(a, strcspn(a, "/?#"), host, sizeof host) == 0 && host[0] != '\0')
      continue;
    snprintf(msg, cap, "%s %s must be \"host:port\" (unexpected empty host (%s))", flag,
             go_quote(q, sizeof q, joined), l->v[i]);
    return -1;
  }
  return 0;
}

static int cmp_strp(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* --log-outputs is a flags.UniqueStringsValue: split, deduplicated, sorted.
 * capnslog takes exactly one. Returns 0 and the one output in `one`. */
static int log_outputs_one(const char *raw, char *one, size_t one_cap, char *msg, size_t cap)
{
  char *copy = config_strdup(raw), *v[16], *rest = copy, *t;
  size_t n = 0;
  int rc = 0;
  while ((t = strsep(&rest, ",")) != NULL) /* keeps empty fields, as Go's Split */
    if (n < 16)
      v[n++] = t;
  qsort(v, n, sizeof *v, cmp_strp);
  size_t u = 1;
  for (size_t i = 1; i < n; i++)
    if (strcmp(v[i], v[u - 1]) != 0)
      v[u++] = v[i];
  if (u != 1) {
    char list[CONFIG_MSG_MAX];
    go_quote_list(v, u, list, sizeof list);
    snprintf(msg, cap, "--logger=capnslog supports only 1 value in '--log-outputs', got %s", list);
    rc = -1;
  } else {
    snprintf(one, one_cap, "%s", v[0]);
  }
  free(copy);
  return rc;
}

/* The logging part of embed.Config.setupLogging. */
static int check_logging(cetcd_config *c, char *msg, size_t cap)
{
  char o[CONFIG_MSG_MAX];
  if (log_outputs_one(c->log_outputs, o, sizeof o, msg, cap) != 0)
    return -1;
  if (strcmp(o, "default") == 0 || strcmp(o, "stderr") == 0) {
    c->log_fd = 2;
  } else if (strcmp(o, "stdout") == 0) {
    c->log_fd = 1;
  } else {
    snprintf(msg, cap,
             "unknown log-output \"%s\" (only supports \"default\", \"stderr\", \"stdout\")", o);
    return -1;
  }
  if (log_level_from_name(c->log_level, &c->log_threshold) != 0) {
    /* etcd 3.4 panics here ("unknown level"); cetcd says so instead. */
    snprintf(msg, cap,
             "unknown log-level \"%s\" (only supports debug, info, warn, error, panic, or fatal)",
             c->log_level);
    return -1;
  }
  return 0;
}

static int config_validate(cetcd_config *c, char *msg, size_t cap)
{
  if (check_logging(c, msg, cap) != 0 || check_bind_urls(&c->listen_peer_urls, msg, cap) != 0 ||
      check_bind_urls(&c->listen_client_urls, msg, cap) != 0 ||
      check_host_urls(&c->initial_advertise_peer_urls, "--initial-advertise-peer-urls", msg,
                      cap) != 0 ||
      check_host_urls(&c->advertise_client_urls, "--advertise-client-urls", msg, cap) != 0)
    return -1;
  if (c->heartbeat_interval_ms == 0) {
    snprintf(msg, cap, "--heartbeat-interval must be >0 (set to %ums)", c->heartbeat_interval_ms);
    return -1;
  }
  if (c->election_timeout_ms == 0) {
    snprintf(msg, cap, "--election-timeout must be >0 (set to %ums)", c->election_timeout_ms);
    return -1;
  }
  if (5 * (uint64_t)c->heartbeat_interval_ms > c->election_timeout_ms) {
    snprintf(msg, cap,
             "--election-timeout[%ums] should be at least as 5 times as "
             "--heartbeat-interval[%ums]",
             c->election_timeout_ms, c->heartbeat_interval_ms);
    return -1;
  }
  if (c->election_timeout_ms > CONFIG_MAX_ELECTION_MS) {
    snprintf(msg, cap, "--election-timeout[%ums] is too long, and should be set less than %ums",
             c->election_timeout_ms, CONFIG_MAX_ELECTION_MS);
    return -1;
  }
  if (c->listen_client_urls.n > 0 && c->advertise_client_urls.n == 0) {
    snprintf(msg, cap,
             "--advertise-client-urls is required when --listen-client-urls is set explicitly");
    return 1; /* the caller adds etcd's second line */
  }
  return 0;
}

/* ---- defaults, the whole parse, and the rest ------------------------------- */

static void config_defaults(cetcd_config *c)
{
  char msg[CONFIG_MSG_MAX];
  memset(c, 0, sizeof *c);
  c->name = config_strdup(CONFIG_DEFAULT_NAME);
  c->initial_cluster = config_strdup(CONFIG_DEFAULT_INITIAL_CLUSTER);
  c->initial_cluster_token = config_strdup("etcd-cluster");
  c->initial_cluster_state = config_strdup("new");
  c->snapshot_count = 100000;           /* etcdserver.DefaultSnapshotCount */
  c->max_request_bytes = 1536 * 1024;   /* embed.DefaultMaxRequestBytes */
  c->max_txn_ops = 128;                 /* embed.DefaultMaxTxnOps */
  c->heartbeat_interval_ms = 100;
  c->election_timeout_ms = 1000;
  c->log_level = config_strdup("info");
  c->log_threshold = LOG_LEVEL_INFO;
  c->logger = config_strdup("capnslog");
  c->log_outputs = config_strdup("default");
  c->log_fd = 2;
  c->strict_reconfig_check = true;
  url_list_set(&c->listen_client_urls, CONFIG_DEFAULT_CLIENT_URL, msg, sizeof msg);
  url_list_set(&c->advertise_client_urls, CONFIG_DEFAULT_CLIENT_URL, msg, sizeof msg);
  url_list_set(&c->listen_peer_urls, CONFIG_DEFAULT_PEER_URL, msg, sizeof msg);
  url_list_set(&c->initial_advertise_peer_urls, CONFIG_DEFAULT_PEER_URL, msg, sizeof msg);
}

static bool flag_was_set(const struct pstate *st, const char *name)
{
  const struct flag_def *f = config_lookup(name, strlen(name));
  return f && st->set[f - config_flags];
}

/* What etcdmain derives after parsing: no advertise-client-urls when only
 * listen-client-urls was given; the default initial cluster renamed after
 * --name (UpdateDefaultClusterFromName); the default data dir. */
static void config_derive(struct pstate *st)
{
  cetcd_config *c = st->cfg;
  if (flag_was_set(st, "listen-client-urls") && !flag_was_set(st, "advertise-client-urls"))
    url_list_free(&c->advertise_client_urls);
  if (strcmp(c->name, CONFIG_DEFAULT_NAME) != 0 &&
      strcmp(c->initial_cluster, CONFIG_DEFAULT_INITIAL_CLUSTER) == 0) {
    const cetcd_url_list *ap = &c->initial_advertise_peer_urls;
    size_t len = 1;
    for (size_t i = 0; i < ap->n; i++)
      len += strlen(c->name) + strlen(ap->v[i]) + 2;
    char *ic = malloc(len), *w = ic;
    if (!ic)
      abort();
    *w = '\0';
    for (size_t i = 0; i < ap->n; i++)
      w += sprintf(w, "%s%s=%s", i ? "," : "", c->name, ap->v[i]);
    free(c->initial_cluster);
    c->initial_cluster = ic;
  }
  if (!c->data_dir || c->data_dir[0] == '\0') {
    free(c->data_dir);
    c->data_dir = malloc(strlen(c->name) + sizeof ".cetcd");
    if (!c->data_dir)
      abort();
    sprintf(c->data_dir, "%s.cetcd", c->name);
    c->data_dir_defaulted = true;
  }
}

static int config_parse_args(struct pstate *st, int argc, char **argv)
{
  int i = 1;
  while (i < argc) {
    int rc = config_parse_one(st, argc, argv, &i);
    if (rc == PARSE_STOP)
      break;
    if (rc != PARSE_NEXT)
      return rc;
  }
  if (i < argc) {
    char msg[CONFIG_MSG_MAX];
    snprintf(msg, sizeof msg, "'%s' is not a valid flag", argv[i]);
    return config_invalid(st, msg);
  }
  if (st->print_version) {
    config_print_version(st->out);
    return CONFIG_EXITED;
  }
  return CONFIG_RUN;
}

int config_parse(int argc, char **argv, char **envp, cetcd_config *cfg, FILE *out, FILE *err)
{
  struct pstate st;
  bool used[CONFIG_NFLAGS] = {false};
  char msg[2 * CONFIG_MSG_MAX + 64] = "";
  memset(&st, 0, sizeof st);
  st.cfg = cfg;
  st.out = out;
  st.err = err;
  config_defaults(cfg);
  int rc = config_parse_args(&st, argc, argv);
  if (rc != CONFIG_RUN)
    return rc;
  if ((rc = config_apply_env(&st, envp, used, msg, sizeof msg)) != CONFIG_RUN)
    return rc;
  if ((rc = config_verify_env(&st, envp, used)) != CONFIG_RUN)
    return rc;
  if (msg[0])
    return config_invalid(&st, msg);
  config_derive(&st);
  int v = config_validate(cfg, msg, sizeof msg);
  if (v != 0) {
    config_invalid(&st, msg);
    if (v == 1)
      config_log(err, LOG_LEVEL_ERROR, "etcdmain",
                 "When listening on specific address(es), this etcd process must advertise "
                 "accessible url(s) to each connected client.");
    return CONFIG_INVALID;
  }
  return CONFIG_RUN;
}

int config_exit_status(int rc)
{
  switch (rc) {
  case CONFIG_RUN:
  case CONFIG_EXITED:
    return 0;
  case CONFIG_USAGE_ERROR:
    return 2;
  default:
    return 1;
  }
}

void config_free(cetcd_config *c)
{
  if (!c)
    return;
  free(c->name);
  free(c->data_dir);
  url_list_free(&c->listen_client_urls);
  url_list_free(&c->advertise_client_urls);
  url_list_free(&c->listen_peer_urls);
  url_list_free(&c->initial_advertise_peer_urls);
  free(c->initial_cluster);
  free(c->initial_cluster_token);
  free(c->initial_cluster_state);
  free(c->log_level);
  free(c->logger);
  free(c->log_outputs);
  memset(c, 0, sizeof *c);
}

void config_print_version(FILE *out)
{
#if defined(__x86_64__)
  const char *arch = "amd64";
#elif defined(__aarch64__)
  const char *arch = "arm64";
#else
  const char *arch = "unknown";
#endif
  fprintf(out,
          "cetcd Version: %s\n"
          "Git SHA: %s\n"
          "etcd Compatible Version: %s\n"
          "API version: %s\n"
          "OS/Arch: linux/%s\n",
          CETCD_VERSION, CETCD_GIT_SHA, CETCD_ETCD_COMPAT_VERSION, CETCD_API_VERSION, arch);
  fflush(out);
}

void config_print_help(FILE *out)
{
  config_usage(out);
  fputs(
      "\n"
      "Member:\n"
      "  --name 'default'\n"
      "    This member's human-readable name; also its key in --initial-cluster.\n"
      "  --data-dir '${name}.cetcd'\n"
      "    Directory that holds the write-ahead log and the key-value store.\n"
      "  --snapshot-count '100000'\n"
      "    Applied entries between two snapshots of the store.\n"
      "  --heartbeat-interval '100'\n"
      "    Milliseconds between leader heartbeats.\n"
      "  --election-timeout '1000'\n"
      "    Milliseconds a follower waits for the leader before it starts an election\n"
      "    (at least 5 heartbeat intervals, at most 50000).\n"
      "  --listen-peer-urls 'http://localhost:2380'\n"
      "    Comma-separated URLs to accept traffic from the other members on.\n"
      "  --listen-client-urls 'http://localhost:2379'\n"
      "    Comma-separated URLs to accept client traffic on.\n"
      "  --quota-backend-bytes '0'\n"
      "    Store size that raises the NOSPACE alarm (0 means the default, 2 GiB).\n"
      "  --max-txn-ops '128'\n"
      "    Most operations a single transaction may carry.\n"
      "  --max-request-bytes '1572864'\n"
      "    Largest client request, in bytes, the server accepts.\n"
      "\n"
      "Clustering:\n"
      "  --initial-advertise-peer-urls 'http://localhost:2380'\n"
      "    This member's peer URLs, as the other members should reach them.\n"
      "  --initial-cluster 'default=http://localhost:2380'\n"
      "    Every member of the cluster being bootstrapped, as name=peer-url pairs.\n"
      "  --initial-cluster-state 'new'\n"
      "    'new' to bootstrap a cluster, 'existing' to join one.\n"
      "  --initial-cluster-token 'etcd-cluster'\n"
      "    Token that makes this cluster's ids unique; give each cluster its own\n"
      "    so members of different clusters never mistake each other.\n"
      "  --advertise-client-urls 'http://localhost:2379'\n"
      "    This member's client URLs, as clients should reach them. Required when\n"
      "    --listen-client-urls is given.\n"
      "  --strict-reconfig-check 'true'\n"
      "    Refuse membership changes that would leave the cluster without quorum.\n"
      "\n"
      "Logging:\n"
      "  --logger 'capnslog'\n"
      "    The log format; cetcd writes etcd 3.4's default ('capnslog') only.\n"
      "  --log-outputs 'default'\n"
      "    Where log lines go: 'default' or 'stderr' (standard error), 'stdout'.\n"
      "  --log-level 'info'\n"
      "    Least severe level logged: debug, info, warn, error, panic or fatal.\n"
      "\n"
      "Experimental feature:\n"
      "  --experimental-initial-corrupt-check 'false'\n"
      "    Compare this member's store with the others' before serving.\n"
      "  --experimental-watch-progress-notify-interval '10m'\n"
      "    Duration of periodical watch progress notification.\n"
      "\n"
      "Every flag can also come from the environment: --foo-bar from ETCD_FOO_BAR.\n"
      "A flag on the command line wins; giving both is an error.\n"
      "\n"
      "Other etcd 3.4 flags (TLS, auth, discovery, proxy, compaction, ...) are\n"
      "recognised and refused until cetcd implements them.\n",
      out);
  fflush(out);
}

/* Go's URLsMap.String(): every "name=url" pair, sorted, comma-joined. */
static void members_string(const ids_member *ms, size_t n, char *buf, size_t cap)
{
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += ms[i].n_peer_urls;
  char **pairs = calloc(total ? total : 1, sizeof *pairs);
  size_t k = 0, w = 0;
  if (!pairs)
    abort();
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < ms[i].n_peer_urls; j++) {
      pairs[k] = malloc(strlen(ms[i].name) + strlen(ms[i].peer_urls[j]) + 2);
      if (!pairs[k])
        abort();
      sprintf(pairs[k++], "%s=%s", ms[i].name, ms[i].peer_urls[j]);
    }
  for (size_t i = 1; i < total; i++)
    for (size_t j = i; j > 0 && strcmp(pairs[j - 1], pairs[j]) > 0; j--) {
      char *t = pairs[j];
      pairs[j] = pairs[j - 1];
      pairs[j - 1] = t;
    }
  buf[0] = '\0';
  for (size_t i = 0; i < total; i++) {
    if (w < cap)
      w += (size_t)snprintf(buf + w, cap - w, "%s%s", i ? "," : "", pairs[i]);
    free(pairs[i]);
  }
  free(pairs);
}

static void join_urls(char *const *v, size_t n, const char *prefix, char *buf, size_t cap)
{
  size_t w = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n && w < cap; i++)
    w += (size_t)snprintf(buf + w, cap - w, "%s%s%s", i ? "," : "", prefix, v[i]);
}

/* Go's %q of a []string: ["a" "b"]. */
static void go_quote_list(char *const *v, size_t n, char *buf, size_t cap)
{
  char q[CONFIG_URL_MAX + 16];
  size_t w = (size_t)snprintf(buf, cap, "[");
  for (size_t i = 0; i < n && w < cap; i++)
    w += (size_t)snprintf(buf + w, cap - w, "%s%s", i ? " " : "", go_quote(q, sizeof q, v[i]));
  if (w < cap)
    snprintf(buf + w, cap - w, "]");
}

static bool list_has(char *const *v, size_t n, const char *s)
{
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i], s) == 0)
      return true;
  return false;
}

/* etcdserver ServerConfig.advertiseMatchesCluster, with string comparison in
 * place of DNS resolution. Both lists are sorted. */
static int check_advertise_matches(const char *name, char *const *ic, size_t n_ic,
                                   char *const *ap, size_t n_ap, char *err, size_t cap)
{
  char a[CONFIG_MSG_MAX], b[CONFIG_MSG_MAX], m[CONFIG_MSG_MAX], why[2 * CONFIG_MSG_MAX + 16];
  size_t i = 0;
  if (n_ic != n_ap) {
    go_quote_list(ap, n_ap, a, sizeof a);
    go_quote_list(ic, n_ic, b, sizeof b);
    snprintf(why, sizeof why, "len(%s) != len(%s)", a, b);
  } else {
    while (i < n_ap && strcmp(ap[i], ic[i]) == 0)
      i++;
    if (i == n_ap)
      return 0;
    snprintf(why, sizeof why, "resolved urls: \"%s\" != \"%s\"", ap[i], ic[i]);
  }
  join_urls(ap, n_ap, "", a, sizeof a);
  size_t w = 0;
  m[0] = '\0';
  for (i = 0; i < n_ic; i++)
    if (!list_has(ap, n_ap, ic[i]) && w < sizeof m)
      w += (size_t)snprintf(m + w, sizeof m - w, "%s%s=%s", w ? "," : "", name, ic[i]);
  if (m[0]) {
    snprintf(err, cap, "--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s (%s)",
             m, a, why);
    return -1;
  }
  w = 0;
  for (i = 0; i < n_ap; i++)
    if (!list_has(ic, n_ic, ap[i]) && w < sizeof m)
      w += (size_t)snprintf(m + w, sizeof m - w, "%s%s", w ? "," : "", ap[i]);
  char prefix[CONFIG_MSG_MAX];
  snprintf(prefix, sizeof prefix, "%s=", name);
  join_urls(ap, n_ap, prefix, b, sizeof b);
  if (m[0])
    snprintf(err, cap, "--initial-advertise-peer-urls has %s but missing from --initial-cluster=%s",
             m, b);
  else
    snprintf(err, cap, "failed to resolve %s to match --initial-cluster=%s (%s)", a, b, why);
  return -1;
}

static bool members_have_duplicate_url(const ids_member *ms, size_t n)
{
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < ms[i].n_peer_urls; j++)
      for (size_t k = i; k < n; k++)
        for (size_t l = (k == i ? j + 1 : 0); l < ms[k].n_peer_urls; l++)
          if (strcmp(ms[i].peer_urls[j], ms[k].peer_urls[l]) == 0)
            return true;
  return false;
}

int config_verify_bootstrap(const cetcd_config *cfg, uint64_t *member_id, uint64_t *cluster_id,
                            char *err, size_t err_len)
{
  ids_member *ms = NULL;
  size_t n = 0;
  char msg[CONFIG_MSG_MAX], all[CONFIG_MSG_MAX];
  int rc = -1;
  if (ids_parse_initial_cluster(cfg->initial_cluster, cfg->initial_cluster_token, &ms, &n, msg,
                                sizeof msg) != 0) {
    snprintf(err, err_len, "error setting up initial cluster: %s", msg);
    return -1;
  }
  const ids_member *self = NULL;
  for (size_t i = 0; i < n; i++)
    if (strcmp(ms[i].name, cfg->name) == 0)
      self = &ms[i];
  if (!self) {
    snprintf(err, err_len, "couldn't find local name \"%s\" in the initial cluster configuration",
             cfg->name);
    goto out;
  }
  if (check_advertise_matches(cfg->name, self->peer_urls, self->n_peer_urls,
                              cfg->initial_advertise_peer_urls.v,
                              cfg->initial_advertise_peer_urls.n, err, err_len) != 0)
    goto out;
  members_string(ms, n, all, sizeof all);
  if (members_have_duplicate_url(ms, n)) {
    snprintf(err, err_len, "initial cluster %s has duplicate url", all);
    goto out;
  }
  uint64_t *ids = malloc(n * sizeof *ids);
  if (!ids)
    abort();
  for (size_t i = 0; i < n; i++)
    ids[i] = ms[i].id;
  if (member_id)
    *member_id = self->id;
  if (cluster_id)
    *cluster_id = ids_cluster_id(ids, n);
  free(ids);
  rc = 0;
out:
  ids_members_free(ms, n);
  return rc;
}

static void log_url_list(const char *what, const cetcd_url_list *l)
{
  char buf[CONFIG_MSG_MAX];
  join_urls(l->v, l->n, "", buf, sizeof buf);
  log_printf(LOG_LEVEL_INFO, "embed", "%s = %s", what, buf);
}

void config_log_startup(const cetcd_config *c, bool member_initialized)
{
#if defined(__x86_64__)
  const char *arch = "amd64";
#elif defined(__aarch64__)
  const char *arch = "arm64";
#else
  const char *arch = "unknown";
#endif
  log_printf(LOG_LEVEL_INFO, "etcdmain", "cetcd Version: %s", CETCD_VERSION);
  log_printf(LOG_LEVEL_INFO, "etcdmain", "Git SHA: %s", CETCD_GIT_SHA);
  log_printf(LOG_LEVEL_INFO, "etcdmain", "etcd API version: %s (clients see server version %s)",
             CETCD_API_VERSION, CETCD_ETCD_COMPAT_VERSION);
  log_printf(LOG_LEVEL_INFO, "etcdmain", "OS/Arch: linux/%s", arch);
  if (c->data_dir_defaulted)
    log_printf(LOG_LEVEL_WARNING, "etcdmain", "no data-dir provided, using default data-dir ./%s",
               c->data_dir);
  if (member_initialized)
    log_printf(LOG_LEVEL_NOTICE, "etcdmain",
               "the server is already initialized as member before, starting as etcd member...");
  log_printf(LOG_LEVEL_INFO, "embed", "name = %s", c->name);
  log_printf(LOG_LEVEL_INFO, "embed", "data dir = %s", c->data_dir);
  log_printf(LOG_LEVEL_INFO, "embed", "member dir = %s/member", c->data_dir);
  log_printf(LOG_LEVEL_INFO, "embed", "heartbeat = %ums", c->heartbeat_interval_ms);
  /* etcd prints election ticks times the tick: 1050 with 100 prints 1000 */
  log_printf(LOG_LEVEL_INFO, "embed", "election = %ums",
             c->election_timeout_ms / c->heartbeat_interval_ms * c->heartbeat_interval_ms);
  log_printf(LOG_LEVEL_INFO, "embed", "snapshot count = %llu",
             (unsigned long long)c->snapshot_count);
  log_url_list("advertise client URLs", &c->advertise_client_urls);
  if (member_initialized) {
    log_url_list("initial advertise peer URLs", &c->initial_advertise_peer_urls);
    log_printf(LOG_LEVEL_INFO, "embed", "initial cluster = ");
  }
}
