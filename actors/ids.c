/*
 * ids.c -- etcd 3.4's member and cluster id derivation (see ids.h).
 */
#include "actors/ids.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/config.h"

static int ids_cmp_str(const void *a, const void *b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int ids_cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t ids_be64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

static uint64_t ids_sha1_be64(const void *data, size_t len)
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(data, len, md, &md_len, EVP_sha1(), NULL) != 1 || md_len < 8)
    abort(); /* SHA-1 cannot fail short of a broken libcrypto */
  return ids_be64(md);
}

static uint64_t ids_member_hash(const char *const *peer_urls, size_t n, const char *token,
                                const char *suffix)
{
  const char **sorted = malloc((n ? n : 1) * sizeof *sorted);
  size_t len = strlen(token) + (suffix ? strlen(suffix) : 0);
  if (!sorted)
    abort(); /* a few pointers at startup: nothing sensible to do */
  memcpy(sorted, peer_urls, n * sizeof *sorted);
  qsort(sorted, n, sizeof *sorted, ids_cmp_str);
  for (size_t i = 0; i < n; i++)
    len += strlen(sorted[i]);
  char *b = malloc(len + 1), *w = b;
  if (!b)
    abort();
  for (size_t i = 0; i < n; i++)
    w = stpcpy(w, sorted[i]);
  w = stpcpy(w, token);
  if (suffix)
    stpcpy(w, suffix);
  uint64_t id = ids_sha1_be64(b, len);
  free(b);
  free(sorted);
  return id;
}

uint64_t ids_member_id(const char *const *peer_urls, size_t n, const char *cluster_token)
{
  return ids_member_hash(peer_urls, n, cluster_token, NULL);
}

uint64_t ids_member_id_at(const char *const *peer_urls, size_t n, const char *cluster_token,
                          int64_t unix_seconds)
{
  char t[24];
  snprintf(t, sizeof t, "%" PRId64, unix_seconds);
  return ids_member_hash(peer_urls, n, cluster_token, t);
}

uint64_t ids_cluster_id(const uint64_t *member_ids, size_t n)
{
  uint64_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
  unsigned char *b = malloc(n * 8 + 1);
  if (!sorted || !b)
    abort();
  memcpy(sorted, member_ids, n * sizeof *sorted);
  qsort(sorted, n, sizeof *sorted, ids_cmp_u64);
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < 8; k++)
      b[8 * i + (size_t)k] = (unsigned char)(sorted[i] >> (56 - 8 * k));
  uint64_t id = ids_sha1_be64(b, n * 8);
  free(b);
  free(sorted);
  return id;
}

void ids_members_free(ids_member *m, size_t n)
{
  if (!m)
    return;
  for (size_t i = 0; i < n; i++) {
    free(m[i].name);
    for (size_t j = 0; j < m[i].n_peer_urls; j++)
      free(m[i].peer_urls[j]);
    free(m[i].peer_urls);
  }
  free(m);
}

static ids_member *ids_find(ids_member *m, size_t n, const char *name, size_t name_len)
{
  for (size_t i = 0; i < n; i++)
    if (strlen(m[i].name) == name_len && memcmp(m[i].name, name, name_len) == 0)
      return &m[i];
  return NULL;
}

/* Adds one "name=url" entry; the URL is checked and normalised. */
static int ids_add_entry(ids_member **ms, size_t *n, const char *e, size_t len, char *err,
                         size_t err_len)
{
  const char *eq = memchr(e, '=', len);
  size_t name_len = eq ? (size_t)(eq - e) : len;
  char *url_in = eq ? strndup(eq + 1, len - name_len - 1) : strdup("");
  char url[CONFIG_URL_MAX];
  if (!url_in)
    abort();
  int rc = config_url_parse(url_in, url, sizeof url, err, err_len);
  free(url_in);
  if (rc != 0)
    return -1;
  ids_member *m = ids_find(*ms, *n, e, name_len);
  if (!m) {
    ids_member *grown = realloc(*ms, (*n + 1) * sizeof **ms);
    if (!grown)
      abort();
    *ms = grown;
    m = &grown[(*n)++];
    memset(m, 0, sizeof *m);
    m->name = strndup(e, name_len);
  }
  char **urls = realloc(m->peer_urls, (m->n_peer_urls + 1) * sizeof *urls);
  if (!urls || !m->name)
    abort();
  m->peer_urls = urls;
  m->peer_urls[m->n_peer_urls++] = strdup(url);
  return 0;
}

static int ids_cmp_member(const void *a, const void *b)
{
  const ids_member *x = a, *y = b;
  return x->id < y->id ? -1 : x->id > y->id;
}

int ids_parse_initial_cluster(const char *s, const char *token, ids_member **out, size_t *n,
                              char *err, size_t err_len)
{
  ids_member *ms = NULL;
  size_t nm = 0;
  const char *p = s;
  *out = NULL;
  *n = 0;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (len > 0 && ids_add_entry(&ms, &nm, p, len, err, err_len) != 0)
      goto fail;
    p += len + (comma ? 1 : 0);
  }
  for (size_t i = 0; i < nm; i++) {
    qsort(ms[i].peer_urls, ms[i].n_peer_urls, sizeof *ms[i].peer_urls, ids_cmp_str);
    ms[i].id = ids_member_id((const char *const *)ms[i].peer_urls, ms[i].n_peer_urls, token);
  }
  qsort(ms, nm, sizeof *ms, ids_cmp_member);
  *out = ms;
  *n = nm;
  return 0;
fail:
  ids_members_free(ms, nm);
  return -1;
}
