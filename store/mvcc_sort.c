/*
 * mvcc_sort.c -- Go 1.19's sort.Sort (pattern-defeating quicksort), so that a
 * sorted Range returns ties in exactly the order etcd 3.4.23 (built with Go
 * 1.19.8) returns them.
 *
 * sort.Sort is not stable: with more than 12 results, keys with equal sort
 * values (many keys at version 1, several keys written by one txn) come out
 * in an order that depends on the algorithm's every step. So this is a
 * line-by-line port of go/src/sort/zsortinterface.go (pdqsort, insertionSort,
 * heapSort, partition, partitionEqual, partialInsertionSort, breakPatterns,
 * choosePivot with its xorshift seeded by the length) over etcd's Less
 * functions (etcdserver/apply.go kvSortBy*), and sort.Reverse for DESCEND.
 * Any change here must keep it identical to Go's; a comparison sort that
 * merely sorts correctly is not enough.
 */
#include <string.h>

#include "store/mvcc_internal.h"

typedef struct gsort {
  Mvccpb__KeyValue **kv;
  int target;
  bool reverse;
} gsort;

static int bytes_compare(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b) {
  size_t n = a->len < b->len ? a->len : b->len;
  int c = n ? memcmp(a->data, b->data, n) : 0;
  if (c) return c < 0 ? -1 : 1;
  return a->len < b->len ? -1 : a->len > b->len;
}

/* Go's int64 subtraction wraps. */
static bool sub_neg(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b) < 0; }

static bool base_less(const gsort *s, long i, long j) {
  const Mvccpb__KeyValue *a = s->kv[i], *b = s->kv[j];
  switch (s->target) {
  case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION: return sub_neg(a->version, b->version);
  case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE: return sub_neg(a->create_revision, b->create_revision);
  case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD: return sub_neg(a->mod_revision, b->mod_revision);
  case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE: return bytes_compare(&a->value, &b->value) < 0;
  default: return bytes_compare(&a->key, &b->key) < 0;
  }
}

static bool less(const gsort *s, long i, long j) { return s->reverse ? base_less(s, j, i) : base_less(s, i, j); }

static void swap(const gsort *s, long i, long j) {
  Mvccpb__KeyValue *t = s->kv[i];
  s->kv[i] = s->kv[j];
  s->kv[j] = t;
}

static int bits_len(unsigned long x) {
  int n = 0;
  while (x) n++, x >>= 1;
  return n;
}

enum { UNKNOWN_HINT, INCREASING_HINT, DECREASING_HINT };

static void insertion_sort(const gsort *s, long a, long b) {
  for (long i = a + 1; i < b; i++)
    for (long j = i; j > a && less(s, j, j - 1); j--) swap(s, j, j - 1);
}

static void sift_down(const gsort *s, long lo, long hi, long first) {
  long root = lo;
  for (;;) {
    long child = 2 * root + 1;
    if (child >= hi) break;
    if (child + 1 < hi && less(s, first + child, first + child + 1)) child++;
    if (!less(s, first + root, first + child)) return;
    swap(s, first + root, first + child);
    root = child;
  }
}

static void heap_sort(const gsort *s, long a, long b) {
  long first = a, lo = 0, hi = b - a;
  for (long i = (hi - 1) / 2; i >= 0; i--) sift_down(s, i, hi, first);
  for (long i = hi - 1; i >= 0; i--) {
    swap(s, first, first + i);
    sift_down(s, lo, i, first);
  }
}

static long partition(const gsort *s, long a, long b, long pivot, bool *already) {
  swap(s, a, pivot);
  long i = a + 1, j = b - 1;
  while (i <= j && less(s, i, a)) i++;
  while (i <= j && !less(s, j, a)) j--;
  if (i > j) {
    swap(s, j, a);
    *already = true;
    return j;
  }
  swap(s, i, j);
  i++, j--;
  for (;;) {
    while (i <= j && less(s, i, a)) i++;
    while (i <= j && !less(s, j, a)) j--;
    if (i > j) break;
    swap(s, i, j);
    i++, j--;
  }
  swap(s, j, a);
  *already = false;
  return j;
}

static long partition_equal(const gsort *s, long a, long b, long pivot) {
  swap(s, a, pivot);
  long i = a + 1, j = b - 1;
  for (;;) {
    while (i <= j && !less(s, a, i)) i++;
    while (i <= j && less(s, a, j)) j--;
    if (i > j) break;
    swap(s, i, j);
    i++, j--;
  }
  return i;
}

static bool partial_insertion_sort(const gsort *s, long a, long b) {
  const int max_steps = 5;
  const long shortest_shifting = 50;
  long i = a + 1;
  for (int step = 0; step < max_steps; step++) {
    while (i < b && !less(s, i, i - 1)) i++;
    if (i == b) return true;
    if (b - a < shortest_shifting) return false;
    swap(s, i, i - 1);
    if (i - a >= 2) {
      for (long j = i - 1; j >= 1; j--) {
        if (!less(s, j, j - 1)) break;
        swap(s, j, j - 1);
      }
    }
    if (b - i >= 2) {
      for (long j = i + 1; j < b; j++) {
        if (!less(s, j, j - 1)) break;
        swap(s, j, j - 1);
      }
    }
  }
  return false;
}

static void break_patterns(const gsort *s, long a, long b) {
  long length = b - a;
  if (length < 8) return;
  uint64_t random = (uint64_t)length;
  unsigned long modulus = 1ul << bits_len((unsigned long)length);
  for (long ix = a + (length / 4) * 2 - 1; ix <= a + (length / 4) * 2 + 1; ix++) {
    random ^= random << 13;
    random ^= random >> 17;
    random ^= random << 5;
    long other = (long)((unsigned long)random & (modulus - 1));
    if (other >= length) other -= length;
    swap(s, ix, a + other);
  }
}

static void order2(const gsort *s, long *a, long *b, int *swaps) {
  if (less(s, *b, *a)) {
    (*swaps)++;
    long t = *a;
    *a = *b;
    *b = t;
  }
}

static long median(const gsort *s, long a, long b, long c, int *swaps) {
  order2(s, &a, &b, swaps);
  order2(s, &b, &c, swaps);
  order2(s, &a, &b, swaps);
  return b;
}

static long median_adjacent(const gsort *s, long a, int *swaps) { return median(s, a - 1, a, a + 1, swaps); }

static long choose_pivot(const gsort *s, long a, long b, int *hint) {
  const long shortest_ninther = 50;
  const int max_swaps = 4 * 3;
  long l = b - a;
  int swaps = 0;
  long i = a + l / 4 * 1, j = a + l / 4 * 2, k = a + l / 4 * 3;
  if (l >= 8) {
    if (l >= shortest_ninther) {
      i = median_adjacent(s, i, &swaps);
      j = median_adjacent(s, j, &swaps);
      k = median_adjacent(s, k, &swaps);
    }
    j = median(s, i, j, k, &swaps);
  }
  *hint = swaps == 0 ? INCREASING_HINT : swaps == max_swaps ? DECREASING_HINT : UNKNOWN_HINT;
  return j;
}

static void reverse_range(const gsort *s, long a, long b) {
  for (long i = a, j = b - 1; i < j; i++, j--) swap(s, i, j);
}

static void pdqsort(const gsort *s, long a, long b, int limit) {
  const long max_insertion = 12;
  bool was_balanced = true, was_partitioned = true;
  for (;;) {
    long length = b - a;
    if (length <= max_insertion) {
      insertion_sort(s, a, b);
      return;
    }
    if (limit == 0) {
      heap_sort(s, a, b);
      return;
    }
    if (!was_balanced) {
      break_patterns(s, a, b);
      limit--;
    }
    int hint;
    long pivot = choose_pivot(s, a, b, &hint);
    if (hint == DECREASING_HINT) {
      reverse_range(s, a, b);
      pivot = (b - 1) - (pivot - a);
      hint = INCREASING_HINT;
    }
    if (was_balanced && was_partitioned && hint == INCREASING_HINT) {
      if (partial_insertion_sort(s, a, b)) return;
    }
    if (a > 0 && !less(s, a - 1, pivot)) {
      a = partition_equal(s, a, b, pivot);
      continue;
    }
    bool already;
    long mid = partition(s, a, b, pivot, &already);
    was_partitioned = already;
    long left = mid - a, right = b - mid, balance = length / 8;
    if (left < right) {
      was_balanced = left >= balance;
      pdqsort(s, a, mid, limit);
      a = mid + 1;
    } else {
      was_balanced = right >= balance;
      pdqsort(s, mid + 1, b, limit);
      b = mid;
    }
  }
}

void mvcc_sort_kvs(Mvccpb__KeyValue **kvs, size_t n, int target, bool descend) {
  if (n <= 1) return;
  gsort s = {kvs, target, descend};
  pdqsort(&s, 0, (long)n, bits_len(n));
}
