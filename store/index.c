/*
 * index.c -- the RCU B-tree from key to revision history (see index.h).
 *
 * Node layout. A leaf holds up to IDX_ORDER idx_key pointers in key order. An
 * inner node holds up to IDX_ORDER children; key[i] (i >= 1) is a lower bound
 * of child[i]'s keys and every key of child[i-1] is below it; key[0] is
 * unused. Keys never leave the tree except by compaction, which rebuilds the
 * whole tree, so nodes never merge and separators always point at live keys.
 *
 * Memory: nodes, keys, values and roots are single malloc blocks, so every
 * deferred free (call_rcu) is a plain free(); changes (idx_rev) come from a
 * writer-owned block allocator and go back to it after a grace period. An
 * allocation failure in the index is fatal (abort): a half-updated index
 * cannot be reasoned about, and the process would be lost anyway.
 */
#include "store/index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu.h>

#define IDX_ORDER 32 /* max entries (leaf) or children (inner) per node */
#define IDX_FILL 24  /* entries per node when the tree is built in bulk */

struct idx_node {
  uint64_t epoch; /* the unpublished epoch it was created in */
  uint32_t n;     /* entries or children in use */
  uint32_t leaf;
  idx_key *key[IDX_ORDER];
  idx_node *child[]; /* inner nodes only: IDX_ORDER of them */
};

/* Objects unreachable after the next publish: freed by call_rcu after it. */
typedef struct idx_retired {
  struct rcu_head rcu;
  size_t n;
  void *p[];
} idx_retired;

/* idx_rev nodes come from 64 KiB blocks (no per-node malloc header: 48
 * bytes instead of 64 per change). Only the writer allocates and frees them
 * (frees happen in compaction, after a grace period), so no locking. */
#define REV_BLOCK_BYTES (64 * 1024)
#define REVS_PER_BLOCK ((REV_BLOCK_BYTES - sizeof(void *)) / sizeof(idx_rev))
typedef struct rev_block {
  struct rev_block *next;
  idx_rev revs[];
} rev_block;

struct idx {
  rev_block *blocks;  /* every block, for idx_free */
  size_t block_used;  /* revs handed out from blocks (the newest) */
  idx_rev *rev_free;  /* freed revs, linked through next */
  idx_root *pub;   /* published snapshot; RCU-protected */
  idx_node *wroot; /* working tree */
  uint64_t epoch;  /* nodes with this epoch are unpublished: mutate in place */
  uint64_t nkeys;
  uint64_t copies; /* nodes copied by cow() */
  void **ret; /* retired since the last publish */
  size_t nret, capret;
};

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    fprintf(stderr, "cetcd: index: out of memory (%zu bytes)\n", n);
    abort();
  }
  return p;
}

static idx_rev *rev_alloc(idx *t) {
  idx_rev *r = t->rev_free;
  if (r) {
    t->rev_free = r->next;
    return r;
  }
  if (!t->blocks || t->block_used == REVS_PER_BLOCK) {
    rev_block *b = xmalloc(REV_BLOCK_BYTES);
    b->next = t->blocks;
    t->blocks = b;
    t->block_used = 0;
  }
  return &t->blocks->revs[t->block_used++];
}

static void rev_free(idx *t, idx_rev *r) {
  r->next = t->rev_free;
  t->rev_free = r;
}

static int kcmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
  size_t n = al < bl ? al : bl;
  int c = n ? memcmp(a, b, n) : 0;
  if (c) return c;
  return al < bl ? -1 : al > bl;
}

static size_t node_bytes(bool leaf) {
  return sizeof(idx_node) + (leaf ? 0 : IDX_ORDER * sizeof(idx_node *));
}

static idx_node *node_new(idx *t, bool leaf) {
  idx_node *n = xmalloc(node_bytes(leaf));
  n->epoch = t->epoch;
  n->n = 0;
  n->leaf = leaf;
  return n;
}

static void retire(idx *t, void *p) {
  if (t->nret == t->capret) {
    t->capret = t->capret ? t->capret * 2 : 64;
    void **np = realloc(t->ret, t->capret * sizeof(*np));
    if (!np) {
      fprintf(stderr, "cetcd: index: out of memory\n");
      abort();
    }
    t->ret = np;
  }
  t->ret[t->nret++] = p;
}

static idx_node *cow(idx *t, idx_node *n) {
  if (n->epoch == t->epoch) return n;
  idx_node *c = xmalloc(node_bytes(n->leaf));
  memcpy(c, n, node_bytes(n->leaf));
  c->epoch = t->epoch;
  retire(t, n);
  t->copies++;
  return c;
}

/* First i with key[i] >= k. */
static uint32_t leaf_lower(const idx_node *n, const uint8_t *k, size_t len) {
  uint32_t lo = 0, hi = n->n;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (kcmp(n->key[mid]->key, n->key[mid]->len, k, len) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The child whose key interval holds k: the last i >= 1 with key[i] <= k, or 0. */
static uint32_t child_index(const idx_node *n, const uint8_t *k, size_t len) {
  uint32_t lo = 1, hi = n->n;
  while (lo < hi) {
    uint32_t mid = (lo + hi) / 2;
    if (kcmp(n->key[mid]->key, n->key[mid]->len, k, len) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo - 1;
}

idx *idx_new(void) {
  idx *t = calloc(1, sizeof(*t));
  if (!t) return NULL;
  t->epoch = 1;
  t->pub = calloc(1, sizeof(*t->pub));
  if (!t->pub) {
    free(t);
    return NULL;
  }
  t->pub->rev = 1;
  t->pub->compact_rev = -1;
  return t;
}

static void free_tree(idx_node *n, bool keys) {
  if (!n) return;
  for (uint32_t i = 0; i < n->n; i++) {
    if (!n->leaf) {
      free_tree(n->child[i], keys);
      continue;
    }
    if (!keys) continue;
    free(n->key[i]->val); /* its revs go with the blocks */
    free(n->key[i]);
  }
  free(n);
}

void idx_free(idx *t) {
  if (!t) return;
  rcu_barrier(); /* every call_rcu callback has run */
  free_tree(t->wroot, true);
  for (size_t i = 0; i < t->nret; i++) free(t->ret[i]);
  free(t->ret);
  free(t->pub);
  for (rev_block *b = t->blocks, *next; b; b = next) next = b->next, free(b);
  free(t);
}

const idx_root *idx_reader_root(idx *t) { return rcu_dereference(t->pub); }

int64_t idx_compact_rev(idx *t) {
  cmm_smp_rmb(); /* loads of the data just read happen before this one */
  return rcu_dereference(t->pub)->compact_rev;
}

idx_key *idx_find(const idx_node *n, const uint8_t *key, size_t len) {
  if (!n) return NULL;
  while (!n->leaf) n = n->child[child_index(n, key, len)];
  uint32_t i = leaf_lower(n, key, len);
  if (i < n->n && kcmp(n->key[i]->key, n->key[i]->len, key, len) == 0) return n->key[i];
  return NULL;
}

const idx_rev *idx_key_at(const idx_key *k, int64_t at_rev) {
  const idx_rev *r = rcu_dereference(k->head);
  while (r && r->main > at_rev) r = rcu_dereference(r->next);
  return r && !r->tomb ? r : NULL;
}

typedef struct range_ctx {
  const uint8_t *key, *end;
  size_t key_len, end_len;
  idx_visit_fn fn;
  void *arg;
} range_ctx;

static bool range_node(const range_ctx *c, const idx_node *n, bool from_start) {
  if (n->leaf) {
    uint32_t i = from_start ? 0 : leaf_lower(n, c->key, c->key_len);
    for (; i < n->n; i++) {
      const idx_key *k = n->key[i];
      if (c->end_len && kcmp(k->key, k->len, c->end, c->end_len) >= 0) return false;
      if (!c->fn(c->arg, k)) return false;
    }
    return true;
  }
  uint32_t i = from_start ? 0 : child_index(n, c->key, c->key_len);
  for (bool first = true; i < n->n; i++, first = false) {
    if (!first && c->end_len && kcmp(n->key[i]->key, n->key[i]->len, c->end, c->end_len) >= 0)
      return false;
    if (!range_node(c, n->child[i], from_start || !first)) return false;
  }
  return true;
}

void idx_range(const idx_node *root, const uint8_t *key, size_t key_len, const uint8_t *end,
               size_t end_len, idx_visit_fn fn, void *arg) {
  if (!root) return;
  range_ctx c = {key, end, key_len, end_len, fn, arg};
  range_node(&c, root, false);
}

const idx_node *idx_writer_node(const idx *t) { return t->wroot; }

uint64_t idx_key_count(const idx *t) { return t->nkeys; }

uint64_t idx_nodes_copied(const idx *t) { return t->copies; }

static void node_insert_at(idx_node *n, uint32_t i, idx_key *k, idx_node *child) {
  memmove(&n->key[i + 1], &n->key[i], (n->n - i) * sizeof(n->key[0]));
  n->key[i] = k;
  if (!n->leaf) {
    memmove(&n->child[i + 1], &n->child[i], (n->n - i) * sizeof(n->child[0]));
    n->child[i] = child;
  }
  n->n++;
}

/* Moves the upper half of a full node into a new right sibling. */
static idx_node *node_split(idx *t, idx_node *n) {
  idx_node *r = node_new(t, n->leaf);
  uint32_t half = IDX_ORDER / 2;
  r->n = n->n - half;
  memcpy(r->key, &n->key[half], r->n * sizeof(r->key[0]));
  if (!n->leaf) memcpy(r->child, &n->child[half], r->n * sizeof(r->child[0]));
  n->n = half;
  return r;
}

/* Inserts the new key k below n (which does not hold it). Returns n or its
 * copy; sets *split to a new right sibling (lower bound *split_key) or NULL. */
static idx_node *insert(idx *t, idx_node *n, idx_key *k, idx_node **split, idx_key **split_key) {
  n = cow(t, n);
  *split = NULL;
  uint32_t pos;
  idx_key *ek = k;
  idx_node *echild = NULL;
  if (n->leaf) {
    pos = leaf_lower(n, k->key, k->len);
  } else {
    uint32_t ci = child_index(n, k->key, k->len);
    idx_node *s;
    idx_key *sk;
    n->child[ci] = insert(t, n->child[ci], k, &s, &sk);
    if (!s) return n;
    pos = ci + 1, ek = sk, echild = s;
  }
  if (n->n < IDX_ORDER) {
    node_insert_at(n, pos, ek, echild);
    return n;
  }
  idx_node *r = node_split(t, n);
  if (pos > n->n)
    node_insert_at(r, pos - n->n, ek, echild);
  else
    node_insert_at(n, pos, ek, echild);
  *split = r;
  *split_key = r->key[0];
  return n;
}

static void tree_insert(idx *t, idx_key *k) {
  if (!t->wroot) {
    t->wroot = node_new(t, true);
  }
  idx_node *s;
  idx_key *sk;
  idx_node *n = insert(t, t->wroot, k, &s, &sk);
  if (s) {
    idx_node *root = node_new(t, false);
    root->n = 2;
    root->key[0] = NULL;
    root->child[0] = n;
    root->key[1] = sk;
    root->child[1] = s;
    n = root;
  }
  t->wroot = n;
}

idx_key *idx_append(idx *t, const uint8_t *key, size_t len, const idx_rev *change) {
  idx_key *k = idx_find(t->wroot, key, len);
  if (!k) {
    k = xmalloc(sizeof(*k) + len);
    k->head = NULL;
    k->val = NULL;
    k->len = (uint32_t)len;
    if (len) memcpy(k->key, key, len);
    tree_insert(t, k);
    t->nkeys++;
  }
  idx_prepend(t, k, change);
  return k;
}

void idx_prepend(idx *t, idx_key *k, const idx_rev *change) {
  idx_rev *r = rev_alloc(t);
  *r = *change;
  r->next = k->head;
  rcu_assign_pointer(k->head, r);
}

void idx_set_val(idx *t, idx_key *k, idx_val *v) {
  idx_val *old = k->val;
  rcu_assign_pointer(k->val, v);
  if (old) retire(t, old);
}

void idx_set_val_unshared(idx *t, idx_key *k, idx_val *v) {
  (void)t;
  free(k->val);
  k->val = v;
}

static void free_retired(struct rcu_head *h) {
  idx_retired *b = caa_container_of(h, idx_retired, rcu);
  for (size_t i = 0; i < b->n; i++) free(b->p[i]);
  free(b);
}

int idx_publish(idx *t, int64_t rev, int64_t compact_rev) {
  idx_root *r = xmalloc(sizeof(*r));
  r->node = t->wroot;
  r->rev = rev;
  r->compact_rev = compact_rev;
  idx_root *old = t->pub;
  rcu_assign_pointer(t->pub, r);
  retire(t, old);
  idx_retired *b = xmalloc(sizeof(*b) + t->nret * sizeof(void *));
  b->n = t->nret;
  memcpy(b->p, t->ret, t->nret * sizeof(void *));
  t->nret = 0;
  call_rcu(&b->rcu, free_retired);
  t->epoch++;
  return 0;
}

/* --- compaction ------------------------------------------------------------ */

typedef struct vec {
  void **p;
  size_t n, cap;
} vec;

static void vec_push(vec *v, void *x) {
  if (v->n == v->cap) {
    v->cap = v->cap ? v->cap * 2 : 256;
    void **np = realloc(v->p, v->cap * sizeof(*np));
    if (!np) {
      fprintf(stderr, "cetcd: index: out of memory\n");
      abort();
    }
    v->p = np;
  }
  v->p[v->n++] = x;
}

typedef struct compact_ctx {
  int64_t at_rev;
  idx_drop_fn drop;
  void *arg;
  vec keep;    /* surviving keys, in order */
  vec gone;    /* removed keys: freed with their whole history */
  vec chains;  /* cut-off tails of surviving keys */
} compact_ctx;

static bool compact_key(void *arg, const idx_key *ck) {
  compact_ctx *c = arg;
  idx_key *k = (idx_key *)ck;
  idx_rev *prev = NULL, *p = k->head;
  while (p && p->main > c->at_rev) prev = p, p = p->next;
  idx_rev *cut = !p ? NULL : p->tomb ? p : p->next;
  if (!cut) {
    vec_push(&c->keep, k);
    return true;
  }
  for (idx_rev *q = cut; q; q = q->next) c->drop(c->arg, k, q);
  if (cut == k->head) {
    vec_push(&c->gone, k); /* readers of older snapshots may still walk it */
    return true;
  }
  idx_rev *last_kept = cut == p ? prev : p;
  rcu_assign_pointer(last_kept->next, NULL);
  vec_push(&c->chains, cut);
  vec_push(&c->keep, k);
  return true;
}

static void retire_tree(idx *t, idx_node *n) {
  if (!n) return;
  if (!n->leaf)
    for (uint32_t i = 0; i < n->n; i++) retire_tree(t, n->child[i]);
  retire(t, n);
}

/* Builds a tree over keys[0..n) (sorted), IDX_FILL per node. */
static idx_node *build(idx *t, idx_key **keys, size_t n) {
  if (n == 0) return NULL;
  size_t cnt = (n + IDX_FILL - 1) / IDX_FILL;
  idx_node **level = xmalloc(cnt * sizeof(*level));
  idx_key **low = xmalloc(cnt * sizeof(*low));
  for (size_t i = 0; i < cnt; i++) {
    idx_node *l = node_new(t, true);
    size_t m = n - i * IDX_FILL < IDX_FILL ? n - i * IDX_FILL : IDX_FILL;
    memcpy(l->key, &keys[i * IDX_FILL], m * sizeof(*keys));
    l->n = (uint32_t)m;
    level[i] = l;
    low[i] = l->key[0];
  }
  while (cnt > 1) {
    size_t up = (cnt + IDX_FILL - 1) / IDX_FILL;
    for (size_t i = 0; i < up; i++) {
      idx_node *in = node_new(t, false);
      size_t m = cnt - i * IDX_FILL < IDX_FILL ? cnt - i * IDX_FILL : IDX_FILL;
      for (size_t j = 0; j < m; j++) {
        in->child[j] = level[i * IDX_FILL + j];
        in->key[j] = low[i * IDX_FILL + j];
      }
      in->n = (uint32_t)m;
      level[i] = in;
      low[i] = in->key[0];
    }
    cnt = up;
  }
  idx_node *root = level[0];
  free(level);
  free(low);
  return root;
}

int idx_compact(idx *t, int64_t at_rev, idx_drop_fn drop, void *arg) {
  compact_ctx c = {.at_rev = at_rev, .drop = drop, .arg = arg};
  idx_range(t->wroot, NULL, 0, NULL, 0, compact_key, &c);
  if (c.gone.n) {
    retire_tree(t, t->wroot);
    t->wroot = build(t, (idx_key **)c.keep.p, c.keep.n);
    t->nkeys = c.keep.n;
    idx_publish(t, t->pub->rev, t->pub->compact_rev);
  }
  synchronize_rcu(); /* nobody reads a cut chain or a removed key any more */
  for (size_t i = 0; i < c.chains.n; i++) {
    for (idx_rev *q = c.chains.p[i], *next; q; q = next) next = q->next, rev_free(t, q);
  }
  for (size_t i = 0; i < c.gone.n; i++) {
    idx_key *k = c.gone.p[i];
    for (idx_rev *q = k->head, *next; q; q = next) next = q->next, rev_free(t, q);
    free(k->val);
    free(k);
  }
  free(c.keep.p);
  free(c.gone.p);
  free(c.chains.p);
  return 0;
}
