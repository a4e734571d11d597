/*
 * test_wal.c -- the WAL: record codec, group commit, replay rules (torn tail
 * vs. corruption), I/O errors through the wal_io seam, release, reopen cycles.
 *
 * The fault seam (fault_io) wraps the real system calls and can count them,
 * fail the Nth pwritev/fdatasync/fallocate with a chosen errno, or write only
 * the first K bytes of a pwritev and then "crash": every later call fails, as
 * if the process had died, and the test reopens the directory with the real
 * calls to check what replay makes of it.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/crc32c.h"
#include "store/wal.h"

/* --- fault-injecting wal_io -------------------------------------------------- */

typedef struct fault {
  int pwritev_calls, fdatasync_calls, fsync_calls, fallocate_calls;
  int fail_pwritev_at; /* 1-based call number, 0 = never */
  int pwritev_errno;
  int torn;            /* the failing pwritev writes torn_bytes, then crash */
  size_t torn_bytes;
  int fail_fdatasync_at, fdatasync_errno;
  int fail_fallocate_at, fallocate_errno;
  int crashed;
} fault;

static fault F;

static int f_open(const char *path, int flags, mode_t mode) {
  if (F.crashed) {
    errno = EIO;
    return -1;
  }
  return open(path, flags, mode);
}

static ssize_t f_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off) {
  if (F.crashed) {
    errno = EIO;
    return -1;
  }
  F.pwritev_calls++;
  if (F.pwritev_calls != F.fail_pwritev_at)
    return pwritev(fd, iov, iovcnt, off);
  if (F.torn) {
    size_t left = F.torn_bytes;
    for (int i = 0; i < iovcnt && left; i++) {
      size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
      if (pwrite(fd, iov[i].iov_base, n, off) != (ssize_t)n)
        abort();
      off += (off_t)n;
      left -= n;
    }
    F.crashed = 1;
    errno = EIO;
    return -1;
  }
  errno = F.pwritev_errno;
  return -1;
}

static ssize_t f_pread(int fd, void *buf, size_t n, off_t off) {
  return pread(fd, buf, n, off);
}

static int f_fdatasync(int fd) {
  if (F.crashed) {
    errno = EIO;
    return -1;
  }
  F.fdatasync_calls++;
  if (F.fdatasync_calls == F.fail_fdatasync_at) {
    errno = F.fdatasync_errno;
    return -1;
  }
  return fdatasync(fd);
}

static int f_fsync(int fd) {
  if (F.crashed) {
    errno = EIO;
    return -1;
  }
  F.fsync_calls++;
  return fsync(fd);
}

static int f_fallocate(int fd, off_t off, off_t len) {
  if (F.crashed) {
    errno = EIO;
    return -1;
  }
  F.fallocate_calls++;
  if (F.fallocate_calls == F.fail_fallocate_at) {
    errno = F.fallocate_errno;
    return -1;
  }
  return wal_io_posix.fallocate(fd, off, len);
}

static int f_ftruncate(int fd, off_t len) {
  if (F.crashed) {
    errno = EIO;
    return -1;
  }
  return ftruncate(fd, len);
}

static int f_close(int fd) {
  return close(fd);
}

static const wal_io fault_io = {
    .open = f_open,
    .pwritev = f_pwritev,
    .pread = f_pread,
    .fdatasync = f_fdatasync,
    .fsync = f_fsync,
    .fallocate = f_fallocate,
    .ftruncate = f_ftruncate,
    .close = f_close,
};

static void fault_reset(void) {
  memset(&F, 0, sizeof(F));
}

/* --- helpers ------------------------------------------------------------------- */

typedef struct rec {
  uint8_t type;
  uint64_t index;
  size_t len;
  uint8_t *data;
} rec;

typedef struct replay {
  rec *r;
  size_t n, cap;
} replay;

static int collect(void *arg, uint8_t type, uint64_t index, const uint8_t *data, size_t len) {
  replay *p = arg;
  if (p->n == p->cap) {
    p->cap = p->cap ? 2 * p->cap : 64;
    p->r = realloc(p->r, p->cap * sizeof(*p->r));
    if (!p->r)
      abort();
  }
  rec *r = &p->r[p->n++];
  r->type = type;
  r->index = index;
  r->len = len;
  r->data = malloc(len ? len : 1);
  if (!r->data)
    abort();
  if (len)
    memcpy(r->data, data, len);
  return 0;
}

static void replay_free(replay *p) {
  for (size_t i = 0; i < p->n; i++)
    free(p->r[i].data);
  free(p->r);
  memset(p, 0, sizeof(*p));
}

/* The entries of a replay, in order (META/HARDSTATE copies skipped). */
static size_t entries(const replay *p, const rec **out, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < p->n; i++)
    if (p->r[i].type == WAL_REC_ENTRY && n < max)
      out[n++] = &p->r[i];
  return n;
}

typedef struct warns {
  int n;
  char last[1024];
} warns;

static void on_warn(void *arg, const char *msg) {
  warns *w = arg;
  w->n++;
  snprintf(w->last, sizeof(w->last), "%s", msg);
}

static wal_options opts(size_t seg, const wal_io *io, warns *wn) {
  wal_options o = {.segment_bytes = seg, .io = io, .warn = on_warn, .warn_arg = wn};
  return o;
}

static void payload(uint64_t seed, uint8_t *buf, size_t len) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (uint8_t)x;
  }
}

static int payload_matches(const rec *r, uint64_t seed, size_t len) {
  uint8_t buf[20000];
  if (r->len != len || len > sizeof(buf))
    return 0;
  payload(seed, buf, len);
  return memcmp(buf, r->data, len) == 0;
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/wal-test-XXXXXX");
  if (!d || !mkdtemp(d))
    abort();
  return d;
}

static void rmdir_all(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted segment file names; returns the count. Free with free_names. */
static size_t list_names(const char *dir, char ***out) {
  DIR *d = opendir(dir);
  char **v = NULL;
  size_t n = 0;
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    size_t l = strlen(de->d_name);
    if (l < 4 || strcmp(de->d_name + l - 4, ".wal") != 0)
      continue;
    v = realloc(v, (n + 1) * sizeof(*v));
    v[n++] = strdup(de->d_name);
  }
  if (d)
    closedir(d);
  if (n)
    qsort(v, n, sizeof(*v), name_cmp);
  *out = v;
  return n;
}

static void free_names(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)sz + 1);
  *len = fread(b, 1, (size_t)sz, f);
  fclose(f);
  return b;
}

static void write_file(const char *path, const uint8_t *b, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(b, 1, len, f) != len)
    abort();
  fclose(f);
}

static void copy_dir(const char *from, const char *to) {
  char **names;
  size_t n = list_names(from, &names);
  for (size_t i = 0; i < n; i++) {
    char a[PATH_MAX], b[PATH_MAX];
    size_t len;
    snprintf(a, sizeof(a), "%s/%s", from, names[i]);
    snprintf(b, sizeof(b), "%s/%s", to, names[i]);
    uint8_t *buf = read_file(a, &len);
    write_file(b, buf, len);
    free(buf);
  }
  free_names(names, n);
}

/* Offsets of the records in a segment file's valid prefix; returns the count. */
static size_t record_offsets(const uint8_t *b, size_t len, size_t *offs, size_t max) {
  size_t off = 0, n = 0;
  for (;;) {
    wal_record r;
    size_t used;
    if (off >= len || wal_decode_record(b + off, len - off, &r, &used) != WAL_DECODE_OK)
      break;
    if (n < max)
      offs[n] = off;
    n++;
    off += used;
  }
  if (n < max)
    offs[n] = off; /* end of the valid records */
  return n;
}

/* Appends entries [from, to) with payload seed = index and len = plen. */
static int append_entries(wal *w, uint64_t from, uint64_t to, size_t plen) {
  uint8_t buf[20000];
  for (uint64_t i = from; i < to; i++) {
    payload(i, buf, plen);
    int rc = wal_append(w, WAL_REC_ENTRY, i, buf, plen);
    if (rc)
      return rc;
  }
  return 0;
}

/* Entries replayed must be exactly indexes [1, n] with payload len plen. */
static int entries_are(const replay *p, uint64_t n, size_t plen) {
  static const rec *e[32768];
  size_t got = entries(p, e, 32768);
  if (got != n)
    return 0;
  for (size_t i = 0; i < got; i++)
    if (e[i]->index != i + 1 || !payload_matches(e[i], i + 1, plen))
      return 0;
  return 1;
}

/* --- codec ----------------------------------------------------------------------- */

static void test_crc32c(void) {
  CU_ASSERT_EQUAL(crc32c(0, "123456789", 9), 0xE3069283u);
  CU_ASSERT_EQUAL(crc32c_sw(0, "123456789", 9), 0xE3069283u);
  uint8_t zeros[32] = {0};
  CU_ASSERT_EQUAL(crc32c(0, zeros, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
  uint8_t buf[1100];
  payload(7, buf, sizeof(buf));
  for (size_t off = 0; off < 8; off++)
    for (size_t len = 0; len < 1090; len += 13)
      CU_ASSERT_EQUAL(crc32c(0, buf + off, len), crc32c_sw(0, buf + off, len));
  /* chaining */
  CU_ASSERT_EQUAL(crc32c(crc32c(0, buf, 100), buf + 100, 900), crc32c(0, buf, 1000));
}

static void test_codec(void) {
  uint8_t data[100], out[200];
  payload(1, data, sizeof(data));
  wal_encode_record(out, WAL_REC_ENTRY, 0x0102030405060708ull, data, sizeof(data));
  size_t full = wal_record_bytes(sizeof(data));
  CU_ASSERT_EQUAL(full, 117u);
  CU_ASSERT_EQUAL(out[0], 109); /* len = 9 + 100, little-endian */
  CU_ASSERT_EQUAL(out[8], WAL_REC_ENTRY);
  CU_ASSERT_EQUAL(out[9], 0x08);
  wal_record r;
  size_t used = 0;
  CU_ASSERT_EQUAL(wal_decode_record(out, full, &r, &used), WAL_DECODE_OK);
  CU_ASSERT_EQUAL(used, full);
  CU_ASSERT_EQUAL(r.index, 0x0102030405060708ull);
  CU_ASSERT_EQUAL(r.len, 100u);
  CU_ASSERT(memcmp(r.data, data, 100) == 0);
  CU_ASSERT_EQUAL(wal_decode_record(out, 0, &r, &used), WAL_DECODE_ZERO); /* plain EOF */
  for (size_t l = 1; l < full; l++)
    CU_ASSERT_EQUAL(wal_decode_record(out, l, &r, &used), WAL_DECODE_SHORT);
  for (size_t i = 0; i < full; i++) { /* every single-byte flip is caught */
    out[i] ^= 0x20;
    CU_ASSERT_NOT_EQUAL(wal_decode_record(out, sizeof(out), &r, &used), WAL_DECODE_OK);
    out[i] ^= 0x20;
  }
  uint8_t z[32] = {0};
  CU_ASSERT_EQUAL(wal_decode_record(z, sizeof(z), &r, &used), WAL_DECODE_ZERO);
  CU_ASSERT_EQUAL(wal_decode_record(z, 2, &r, &used), WAL_DECODE_ZERO);
  z[0] = 5;
  CU_ASSERT_EQUAL(wal_decode_record(z, sizeof(z), &r, &used), WAL_DECODE_BAD_LEN);
  z[0] = 0, z[3] = 0x10; /* 256 MiB */
  CU_ASSERT_EQUAL(wal_decode_record(z, sizeof(z), &r, &used), WAL_DECODE_BAD_LEN);
  /* a CRC-valid record of an unknown type */
  wal_encode_record(out, WAL_REC_ENTRY, 1, data, 4);
  out[8] = 9;
  uint32_t c = crc32c(0, out + 8, 13);
  memcpy(out + 4, &c, 4); /* test host is little-endian (x86-64) */
  CU_ASSERT_EQUAL(wal_decode_record(out, 21, &r, &used), WAL_DECODE_BAD_TYPE);
  /* empty data */
  wal_encode_record(out, WAL_REC_HARDSTATE, 3, NULL, 0);
  CU_ASSERT_EQUAL(wal_decode_record(out, 17, &r, &used), WAL_DECODE_OK);
  CU_ASSERT_EQUAL(r.len, 0u);
}


static int stop_at_two(void *arg, uint8_t type, uint64_t index, const uint8_t *data, size_t len) {
  (void)type, (void)data, (void)len;
  int *seen = arg;
  (void)index;
  return ++*seen == 2 ? 42 : 0;
}

/* wal_scan_segment on hand-made buffers: the pure replay path. */
static void test_scan(void) {
  static uint8_t seg[8192];
  uint8_t data[300];
  payload(3, data, sizeof(data));
  wal_scan_result res;
  /* clean: three records, then zeros */
  memset(seg, 0, sizeof(seg));
  size_t off = 0;
  for (int i = 0; i < 3; i++) {
    wal_encode_record(seg + off, WAL_REC_ENTRY, (uint64_t)i + 1, data, 50);
    off += wal_record_bytes(50);
  }
  CU_ASSERT_EQUAL(wal_scan_segment(seg, sizeof(seg), NULL, NULL, &res), 0);
  CU_ASSERT(res.damage == 0 && res.records == 3 && res.valid_bytes == off);
  CU_ASSERT(res.has_entry && res.entry_max == 3);
  /* exact EOF is clean too */
  CU_ASSERT_EQUAL(wal_scan_segment(seg, off, NULL, NULL, &res), 0);
  CU_ASSERT(res.damage == 0 && res.records == 3);
  /* damage, zeros, then a valid record whose length field starts with a zero
   * byte (len = 9 + 247 = 0x100) at every offset in a window */
  for (size_t at = off + 200; at < off + 240; at++) {
    memset(seg + off, 0, sizeof(seg) - off);
    seg[off] = 0x55; /* a non-zero length that is garbage */
    wal_encode_record(seg + at, WAL_REC_ENTRY, 9, data, 247);
    CU_ASSERT_EQUAL(seg[at], 0);
    CU_ASSERT_EQUAL(wal_scan_segment(seg, sizeof(seg), NULL, NULL, &res), 0);
    CU_ASSERT(res.records == 3 && res.valid_bytes == off && res.damage != 0);
    CU_ASSERT(res.valid_after == 1 && res.valid_after_off == at);
  }
  /* damage followed by garbage only: a torn tail */
  memset(seg + off, 0, sizeof(seg) - off);
  payload(4, seg + off, 500);
  CU_ASSERT_EQUAL(wal_scan_segment(seg, sizeof(seg), NULL, NULL, &res), 0);
  CU_ASSERT(res.damage != 0 && res.valid_after == 0 && res.valid_bytes == off);
  /* garbage made of plausible ~2 MiB headers: the search for a valid record
   * gives up (budget 256 MiB + 4 x 8 MiB) instead of running for long */
  {
    size_t big = 8u << 20;
    uint8_t *g = calloc(1, big);
    CU_ASSERT_FATAL(g != NULL);
    for (size_t q = 0; q + 17 < big / 2; q += 20) {
      g[q] = 0x00, g[q + 1] = 0x00, g[q + 2] = 0x20, g[q + 3] = 0x00; /* len 2 MiB */
      g[q + 8] = WAL_REC_ENTRY;
    }
    CU_ASSERT_EQUAL(wal_scan_segment(g, big, NULL, NULL, &res), 0);
    CU_ASSERT(res.records == 0 && res.damage == WAL_DECODE_BAD_CRC && res.valid_after == -1);
    free(g);
  }
  /* the callback stops the scan */
  int seen = 0;
  CU_ASSERT_EQUAL(wal_scan_segment(seg, sizeof(seg), stop_at_two, &seen, &res), 42);
  CU_ASSERT_EQUAL(seen, 2);
}

/* --- round trip / group commit ------------------------------------------------------ */

static void test_roundtrip_segments(void) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(4096, NULL, &wn);
  char err[512];
  wal *w;
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  CU_ASSERT_EQUAL(wal_append(w, WAL_REC_META, 0, "member", 6), 0);
  uint8_t buf[400];
  uint64_t hs_last = 0;
  for (uint64_t i = 1; i <= 600; i++) {
    size_t len = (size_t)(i * 37 % 300);
    payload(i, buf, len);
    CU_ASSERT_EQUAL_FATAL(wal_append(w, WAL_REC_ENTRY, i, buf, len), 0);
    if (i % 50 == 0) {
      hs_last = i;
      CU_ASSERT_EQUAL(wal_append(w, WAL_REC_HARDSTATE, i, &i, sizeof(i)), 0);
    }
    if (i % 7 == 0)
      CU_ASSERT_EQUAL_FATAL(wal_sync(w), 0);
  }
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  size_t nseg = wal_segment_count(w);
  wal_close(w);
  char **names;
  size_t nfiles = list_names(dir, &names);
  CU_ASSERT(nfiles >= 5);
  CU_ASSERT_EQUAL(nfiles, nseg);
  free_names(names, nfiles);

  replay p = {0};
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT_EQUAL(wn.n, 0);
  const rec *e[1000];
  size_t n = entries(&p, e, 1000);
  CU_ASSERT_EQUAL(n, 600u);
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_EQUAL(e[i]->index, i + 1);
    CU_ASSERT(payload_matches(e[i], i + 1, (i + 1) * 37 % 300));
  }
  CU_ASSERT(p.n > 0 && p.r[0].type == WAL_REC_META && p.r[0].len == 6);
  uint64_t hs_seen = 0;
  for (size_t i = 0; i < p.n; i++)
    if (p.r[i].type == WAL_REC_HARDSTATE)
      memcpy(&hs_seen, p.r[i].data, sizeof(hs_seen));
  CU_ASSERT_EQUAL(hs_seen, hs_last);
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

static void test_group_commit(void) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(1 << 20, &fault_io, &wn);
  char err[512];
  wal *w;
  fault_reset();
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  fault_reset();
  CU_ASSERT_EQUAL(append_entries(w, 1, 101, 300), 0);
  CU_ASSERT_EQUAL(F.pwritev_calls, 0); /* append only buffers */
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  CU_ASSERT_EQUAL(F.pwritev_calls, 1);
  CU_ASSERT_EQUAL(F.fdatasync_calls, 1);
  CU_ASSERT_EQUAL(F.fsync_calls, 0);
  CU_ASSERT_EQUAL(F.fallocate_calls, 0);
  CU_ASSERT_EQUAL(append_entries(w, 101, 1101, 300), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  CU_ASSERT_EQUAL(F.pwritev_calls, 2);
  CU_ASSERT_EQUAL(F.fdatasync_calls, 2);
  CU_ASSERT_EQUAL(wal_sync(w), 0); /* nothing buffered: no I/O */
  CU_ASSERT_EQUAL(F.pwritev_calls, 2);
  CU_ASSERT_EQUAL(F.fdatasync_calls, 2);
  /* ~1101 * 317 bytes = 349 KiB so far; 3000 more cross into a new segment:
   * per segment one pwritev + one fdatasync, plus fallocate, file fsync and
   * directory fsync for the new one. */
  CU_ASSERT_EQUAL(append_entries(w, 1101, 4101, 300), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  CU_ASSERT_EQUAL(F.pwritev_calls, 4);
  CU_ASSERT_EQUAL(F.fdatasync_calls, 4);
  CU_ASSERT_EQUAL(F.fallocate_calls, 1);
  CU_ASSERT_EQUAL(F.fsync_calls, 2);
  CU_ASSERT_EQUAL(wal_segment_count(w), 2u);
  wal_close(w);
  replay p = {0};
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, 4100, 300));
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

/* Segments larger than the 1 MiB zero-ahead window: zeros are written ahead
 * of the records over and over; none may land on a record, and each sync is
 * still one pwritev + one fdatasync. */
static void test_zero_ahead(void) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(4u << 20, &fault_io, &wn);
  char err[512];
  wal *w;
  fault_reset();
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  fault_reset();
  uint64_t n = 0;
  for (int b = 0; b < 40; b++) { /* 40 x 500 x 317 B = 6.3 MB: two segments */
    CU_ASSERT_EQUAL(append_entries(w, n + 1, n + 501, 300), 0);
    n += 500;
    CU_ASSERT_EQUAL_FATAL(wal_sync(w), 0);
  }
  CU_ASSERT_EQUAL(wal_segment_count(w), 2u);
  CU_ASSERT_EQUAL(F.pwritev_calls, 41); /* one more for the sync that crossed */
  CU_ASSERT_EQUAL(F.fdatasync_calls, 41);
  wal_close(w);
  o.io = NULL;
  replay p = {0};
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, n, 300));
  replay_free(&p);
  /* reopened: the writer does not know how far zeros go; it zeroes again */
  CU_ASSERT_EQUAL(append_entries(w, n + 1, n + 101, 300), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  wal_close(w);
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, n + 100, 300));
  CU_ASSERT_EQUAL(wn.n, 0);
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

static void test_big_record(void) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(4096, NULL, &wn);
  char err[512];
  wal *w;
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  uint8_t big[15000];
  payload(2, big, sizeof(big));
  CU_ASSERT_EQUAL(append_entries(w, 1, 2, 100), 0);
  CU_ASSERT_EQUAL(wal_append(w, WAL_REC_ENTRY, 2, big, sizeof(big)), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  CU_ASSERT_EQUAL(wal_append(w, WAL_REC_ENTRY, 3, big, 100), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  CU_ASSERT_EQUAL(wal_append(w, WAL_REC_ENTRY, 4, big, WAL_RECORD_DATA_MAX + 1), -EINVAL);
  CU_ASSERT_EQUAL(wal_append(w, 0, 4, big, 1), -EINVAL);
  /* the pending-bytes limit: 32 x 8 MiB fills it, the next record is refused */
  uint8_t *huge = calloc(1, 8u << 20);
  CU_ASSERT_FATAL(huge != NULL);
  int rc = 0, ok = 0;
  while (ok < 40 && (rc = wal_append(w, WAL_REC_ENTRY, 4, huge, (8u << 20) - 17)) == 0)
    ok++;
  CU_ASSERT_EQUAL(rc, -ENOBUFS);
  CU_ASSERT_EQUAL(ok, 32);
  free(huge);
  wal_close(w); /* drops the unsynced 256 MiB */
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  wal_close(w);
  replay p = {0};
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  const rec *e[8];
  CU_ASSERT_EQUAL_FATAL(entries(&p, e, 8), 3u);
  CU_ASSERT(payload_matches(e[1], 2, sizeof(big)));
  CU_ASSERT(e[2]->len == 100 && memcmp(e[2]->data, big, 100) == 0);
  CU_ASSERT_EQUAL(wn.n, 0);
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

/* --- torn tails ------------------------------------------------------------------------- */

#define TORN_N 50 /* entries of 100 bytes = 117-byte records: 2 segments of 4 KiB */

static void build_log(const char *dir, uint64_t n) {
  wal_options o = opts(4096, NULL, NULL);
  o.warn = NULL;
  char err[512];
  wal *w;
  if (wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) || append_entries(w, 1, n + 1, 100) ||
      wal_sync(w))
    abort();
  wal_close(w);
}

enum damage_mode { CUT_FILE, ZERO_REST, FLIP_LAST };

/* Damages the last record of a copy of `tmpl`: at byte t of that record. */
static void torn_case(const char *tmpl, enum damage_mode mode, size_t t) {
  char *dir = tmpdir();
  copy_dir(tmpl, dir);
  char **names;
  size_t nn = list_names(dir, &names);
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, names[nn - 1]);
  size_t len, offs[64];
  uint8_t *b = read_file(path, &len);
  size_t nrec = record_offsets(b, len, offs, 64);
  CU_ASSERT_FATAL(nrec >= 2 && nrec < 63);
  size_t a = offs[nrec - 1], end = offs[nrec];
  if (mode == CUT_FILE)
    len = a + t;
  else if (mode == ZERO_REST)
    memset(b + a + t, 0, end - a - t);
  else
    b[a + t] ^= 0x01;
  write_file(path, b, len);
  free(b);

  warns wn = {0};
  wal_options o = opts(4096, NULL, &wn);
  char err[512];
  replay p = {0};
  wal *w;
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, TORN_N - 1, 100));
  int expect_warn = mode == FLIP_LAST || t > 0;
  CU_ASSERT_EQUAL(wn.n, expect_warn);
  if (expect_warn) {
    char want[64];
    snprintf(want, sizeof(want), "at offset %zu", a);
    CU_ASSERT(strstr(wn.last, names[nn - 1]) != NULL);
    CU_ASSERT(strstr(wn.last, want) != NULL);
  }
  /* the torn bytes are gone from the file already, before any new write */
  {
    size_t l2;
    uint8_t *b2 = read_file(path, &l2);
    CU_ASSERT(l2 >= 4096);
    size_t nz = 0;
    for (size_t i = a; i < l2; i++)
      nz += b2[i] != 0;
    CU_ASSERT_EQUAL(nz, 0u);
    free(b2);
  }
  /* the writer continues right after the last valid record */
  CU_ASSERT_EQUAL(append_entries(w, TORN_N, TORN_N + 1, 100), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  wal_close(w);
  replay_free(&p);
  memset(&wn, 0, sizeof(wn));
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, TORN_N, 100));
  CU_ASSERT_EQUAL(wn.n, 0);
  wal_close(w);
  replay_free(&p);
  free_names(names, nn);
  rmdir_all(dir);
  free(dir);
}

static void test_torn_tail_every_length(void) {
  char *tmpl = tmpdir();
  build_log(tmpl, TORN_N);
  char **names;
  size_t nn = list_names(tmpl, &names);
  CU_ASSERT_EQUAL(nn, 2u);
  free_names(names, nn);
  for (size_t t = 0; t < 117; t++) {
    torn_case(tmpl, CUT_FILE, t);
    torn_case(tmpl, ZERO_REST, t);
  }
  for (size_t t = 0; t < 117; t += 5)
    torn_case(tmpl, FLIP_LAST, t);
  rmdir_all(tmpl);
  free(tmpl);
}

/* The process dies in the middle of a pwritev: K bytes of the batch reach
 * the file. Replay keeps the whole records among them. */
static void test_torn_write_crash(void) {
  size_t cuts[] = {0, 1, 16, 17, 116, 117, 118, 500, 1169};
  for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
    char *dir = tmpdir();
    warns wn = {0};
    wal_options o = opts(1 << 16, &fault_io, &wn);
    char err[512];
    wal *w;
    fault_reset();
    CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
    CU_ASSERT_EQUAL(append_entries(w, 1, 6, 100), 0);
    CU_ASSERT_EQUAL(wal_sync(w), 0);
    F.fail_pwritev_at = F.pwritev_calls + 1;
    F.torn = 1;
    F.torn_bytes = cuts[c];
    CU_ASSERT_EQUAL(append_entries(w, 6, 16, 100), 0);
    CU_ASSERT_EQUAL(wal_sync(w), -EIO);
    CU_ASSERT_EQUAL(wal_sync(w), -EIO);
    wal_close(w);

    fault_reset();
    replay p = {0};
    o.io = NULL;
    CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
    uint64_t whole = 5 + cuts[c] / 117;
    CU_ASSERT(entries_are(&p, whole, 100));
    CU_ASSERT_EQUAL(wn.n, cuts[c] % 117 ? 1 : 0);
    CU_ASSERT_EQUAL(append_entries(w, whole + 1, whole + 3, 100), 0);
    CU_ASSERT_EQUAL(wal_sync(w), 0);
    wal_close(w);
    replay_free(&p);
    CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
    CU_ASSERT(entries_are(&p, whole + 2, 100));
    wal_close(w);
    replay_free(&p);
    rmdir_all(dir);
    free(dir);
  }
}

/* --- corruption ----------------------------------------------------------------------- */

/* Opening must fail with an error naming `name` and "at offset off", and
 * leave the file as it was. */
static void expect_corrupt(const char *dir, const char *name, size_t off, const char *also) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  size_t len0, len1;
  uint8_t *before = read_file(path, &len0);
  warns wn = {0};
  wal_options o = opts(4096, NULL, &wn);
  char err[512] = "";
  wal *w = NULL;
  CU_ASSERT(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) < 0);
  CU_ASSERT_PTR_NULL(w);
  char want[PATH_MAX + 64];
  snprintf(want, sizeof(want), "wal: corrupt record in %s at offset %zu: ", path, off);
  CU_ASSERT(strncmp(err, want, strlen(want)) == 0);
  if (also)
    CU_ASSERT(strstr(err, also) != NULL);
  if (strncmp(err, want, strlen(want)) != 0)
    fprintf(stderr, "\n  got:  %s\n  want: %s...\n", err, want);
  CU_ASSERT_EQUAL(wn.n, 0);
  uint8_t *after = read_file(path, &len1);
  CU_ASSERT(len0 == len1 && memcmp(before, after, len0) == 0);
  free(before);
  free(after);
}

static void test_corrupt_middle(void) {
  /* each byte class of record 3 of 10: len, crc, type, index, data */
  size_t at[] = {0, 1, 3, 4, 7, 8, 9, 16, 17, 60, 116};
  for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
    char *dir = tmpdir();
    build_log(dir, 10);
    char **names;
    size_t nn = list_names(dir, &names);
    CU_ASSERT_FATAL(nn == 1);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
    size_t len, offs[16];
    uint8_t *b = read_file(path, &len);
    CU_ASSERT_FATAL(record_offsets(b, len, offs, 16) == 10);
    b[offs[3] + at[k]] ^= 0x80;
    write_file(path, b, len);
    free(b);
    expect_corrupt(dir, names[0], offs[3], "valid record follows");
    free_names(names, nn);
    rmdir_all(dir);
    free(dir);
  }
  /* a zeroed record in the middle is not the end of the log */
  char *dir = tmpdir();
  build_log(dir, 10);
  char **names;
  size_t nn = list_names(dir, &names);
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
  size_t len, offs[16];
  uint8_t *b = read_file(path, &len);
  record_offsets(b, len, offs, 16);
  memset(b + offs[4], 0, offs[5] - offs[4]);
  write_file(path, b, len);
  free(b);
  expect_corrupt(dir, names[0], offs[4], "zero-length");
  free_names(names, nn);
  rmdir_all(dir);
  free(dir);
}

static void test_corrupt_earlier_segment(void) {
  char *dir = tmpdir();
  build_log(dir, 100); /* 117-byte records, 4 KiB segments: 3+ segments */
  char **names;
  size_t nn = list_names(dir, &names);
  CU_ASSERT_FATAL(nn >= 3);
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
  size_t len, offs[64];
  uint8_t *b = read_file(path, &len);
  size_t nrec = record_offsets(b, len, offs, 64);
  /* the LAST record of segment 0: nothing valid after it in that file */
  b[offs[nrec - 1] + 30] ^= 0xff;
  write_file(path, b, len);
  expect_corrupt(dir, names[0], offs[nrec - 1], "not the last segment");
  /* cut segment 0 short instead: a partial record in a non-last segment */
  b[offs[nrec - 1] + 30] ^= 0xff;
  write_file(path, b, offs[nrec - 1] + 50);
  expect_corrupt(dir, names[0], offs[nrec - 1], "partial record");
  free(b);

  /* a missing segment in the sequence */
  char *dir2 = tmpdir();
  build_log(dir2, 100);
  char **n2;
  size_t nn2 = list_names(dir2, &n2);
  snprintf(path, sizeof(path), "%s/%s", dir2, n2[1]);
  unlink(path);
  char err[512] = "";
  wal *w = NULL;
  wal_options o = opts(4096, NULL, NULL);
  CU_ASSERT(wal_open(dir2, &o, NULL, NULL, &w, err, sizeof(err)) < 0);
  CU_ASSERT(strstr(err, "missing segment") != NULL);
  CU_ASSERT(strstr(err, n2[2]) != NULL);
  free_names(n2, nn2);
  rmdir_all(dir2);
  free(dir2);
  free_names(names, nn);
  rmdir_all(dir);
  free(dir);
}

/* --- I/O errors ------------------------------------------------------------------------- */

enum fail_what { FAIL_WRITE, FAIL_DATASYNC, FAIL_FALLOCATE };

static void sticky_case(enum fail_what what, int eno) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(4096, &fault_io, &wn);
  char err[512];
  wal *w;
  fault_reset();
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  CU_ASSERT_EQUAL(append_entries(w, 1, 11, 100), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  if (what == FAIL_WRITE)
    F.fail_pwritev_at = F.pwritev_calls + 1, F.pwritev_errno = eno;
  else if (what == FAIL_DATASYNC)
    F.fail_fdatasync_at = F.fdatasync_calls + 1, F.fdatasync_errno = eno;
  else
    F.fail_fallocate_at = F.fallocate_calls + 1, F.fallocate_errno = eno;
  /* 40 more records cross into a new segment (so fallocate is reached) */
  CU_ASSERT_EQUAL(append_entries(w, 11, 51, 100), 0);
  CU_ASSERT_EQUAL(wal_sync(w), -eno);
  int writes = F.pwritev_calls, syncs = F.fdatasync_calls;
  CU_ASSERT_EQUAL(wal_sync(w), -eno);
  CU_ASSERT_EQUAL(wal_append(w, WAL_REC_ENTRY, 51, "x", 1), -eno);
  CU_ASSERT_EQUAL(wal_release(w, 1000), -eno);
  CU_ASSERT_EQUAL(F.pwritev_calls, writes); /* refused, not retried */
  CU_ASSERT_EQUAL(F.fdatasync_calls, syncs);
  wal_close(w);
  /* what was synced before the failure is still there */
  fault_reset();
  replay p = {0};
  o.io = NULL;
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  const rec *e[64];
  size_t n = entries(&p, e, 64);
  CU_ASSERT(n >= 10);
  for (size_t i = 0; i < n; i++)
    CU_ASSERT(e[i]->index == i + 1 && payload_matches(e[i], i + 1, 100));
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

static void test_io_errors_sticky(void) {
  sticky_case(FAIL_WRITE, EIO);
  sticky_case(FAIL_WRITE, ENOSPC);
  sticky_case(FAIL_DATASYNC, EIO);
  sticky_case(FAIL_DATASYNC, ENOSPC);
  sticky_case(FAIL_FALLOCATE, ENOSPC);
}

/* --- release ------------------------------------------------------------------------------ */

static uint64_t name_first_index(const char *name) {
  return strtoull(name + 17, NULL, 16);
}

static int file_exists(const char *dir, const char *name) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  return access(path, F_OK) == 0;
}

static void test_release(void) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(4096, NULL, &wn);
  char err[512];
  wal *w;
  CU_ASSERT_FATAL(wal_open(dir, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  CU_ASSERT_EQUAL(wal_append(w, WAL_REC_META, 0, "member-7", 8), 0);
  for (uint64_t i = 1; i <= 200; i += 20) {
    CU_ASSERT_EQUAL(append_entries(w, i, i + 20, 200), 0);
    uint64_t hs = i + 19;
    CU_ASSERT_EQUAL(wal_append(w, WAL_REC_HARDSTATE, hs, &hs, sizeof(hs)), 0);
  }
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  char **names;
  size_t nn = list_names(dir, &names);
  CU_ASSERT_FATAL(nn >= 6);
  CU_ASSERT_EQUAL(wal_segment_count(w), nn);
  /* entries are increasing, so segment i holds [first(i), first(i+1) - 1] */
  uint64_t f3 = name_first_index(names[3]), f4 = name_first_index(names[4]);
  CU_ASSERT(f3 > 1 && f4 > f3);
  CU_ASSERT_EQUAL(wal_release(w, f3), 0); /* segments 0..2 end below f3 */
  for (size_t i = 0; i < nn; i++)
    CU_ASSERT_EQUAL(file_exists(dir, names[i]), i >= 3);
  CU_ASSERT_EQUAL(wal_release(w, f4 - 1), 0); /* segment 3 holds f4 - 1 */
  CU_ASSERT(file_exists(dir, names[3]));
  CU_ASSERT_EQUAL(wal_release(w, f4), 0);
  CU_ASSERT(!file_exists(dir, names[3]) && file_exists(dir, names[4]));
  CU_ASSERT_EQUAL(wal_release(w, UINT64_MAX), 0); /* never the current one */
  CU_ASSERT_EQUAL(wal_segment_count(w), 1u);
  CU_ASSERT(file_exists(dir, names[nn - 1]));
  uint64_t flast = name_first_index(names[nn - 1]);
  /* the log goes on after a release */
  CU_ASSERT_EQUAL(append_entries(w, 201, 211, 200), 0);
  CU_ASSERT_EQUAL(wal_sync(w), 0);
  wal_close(w);

  /* META and HARDSTATE survive: every segment starts with copies */
  replay p = {0};
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT_FATAL(p.n > 2);
  CU_ASSERT(p.r[0].type == WAL_REC_META && p.r[0].len == 8 && memcmp(p.r[0].data, "member-7", 8) == 0);
  CU_ASSERT(p.r[1].type == WAL_REC_HARDSTATE && p.r[1].index < flast);
  uint64_t hs_last = 0;
  for (size_t i = 0; i < p.n; i++)
    if (p.r[i].type == WAL_REC_HARDSTATE)
      hs_last = p.r[i].index;
  CU_ASSERT_EQUAL(hs_last, 200u);
  const rec *e[256];
  size_t n = entries(&p, e, 256);
  CU_ASSERT_EQUAL_FATAL(n, 210 - flast + 1);
  for (size_t i = 0; i < n; i++)
    CU_ASSERT(e[i]->index == flast + i && payload_matches(e[i], flast + i, 200));
  wal_close(w);
  replay_free(&p);
  free_names(names, nn);
  rmdir_all(dir);
  free(dir);
}

/* --- reopen cycles ------------------------------------------------------------------------- */

static void test_reopen_cycles(void) {
  char *dir = tmpdir();
  warns wn = {0};
  wal_options o = opts(4096, NULL, &wn);
  char err[512];
  uint64_t n = 0;
  for (int cycle = 0; cycle < 25; cycle++) {
    replay p = {0};
    wal *w;
    CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
    CU_ASSERT(entries_are(&p, n, 150));
    replay_free(&p);
    for (int batch = 0; batch < 1 + cycle % 3; batch++) {
      uint64_t k = 1 + (uint64_t)(cycle * 7 + batch * 3) % 23;
      CU_ASSERT_EQUAL(append_entries(w, n + 1, n + 1 + k, 150), 0);
      CU_ASSERT_EQUAL(wal_sync(w), 0);
      n += k;
    }
    /* appended but not synced: gone after close, like a crash */
    CU_ASSERT_EQUAL(append_entries(w, n + 1, n + 3, 150), 0);
    wal_close(w);
  }
  CU_ASSERT_EQUAL(wn.n, 0);
  rmdir_all(dir);
  free(dir);
}

typedef struct stopper {
  char *err;
  size_t err_len;
  int write_msg;
  int seen;
} stopper;

static int stop_at_third(void *arg, uint8_t type, uint64_t index, const uint8_t *data, size_t len) {
  (void)type, (void)index, (void)data, (void)len;
  stopper *st = arg;
  if (++st->seen < 3)
    return 0;
  if (st->write_msg)
    snprintf(st->err, st->err_len, "raft: bad entry %" PRIu64, index);
  return 1;
}

static void test_replay_callback_stops(void) {
  char *dir = tmpdir();
  build_log(dir, 10);
  wal_options o = opts(4096, NULL, NULL);
  char err[512];
  for (int write_msg = 0; write_msg < 2; write_msg++) {
    stopper st = {.err = err, .err_len = sizeof(err), .write_msg = write_msg};
    wal *w = NULL;
    snprintf(err, sizeof(err), "stale");
    CU_ASSERT_EQUAL(wal_open(dir, &o, stop_at_third, &st, &w, err, sizeof(err)), -ECANCELED);
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT_EQUAL(st.seen, 3);
    if (write_msg)
      CU_ASSERT_STRING_EQUAL(err, "raft: bad entry 3");
    if (!write_msg)
      CU_ASSERT(strstr(err, "stopped at offset 234") != NULL); /* 2 x 117 */
  }
  /* the failed opens released the lock and changed nothing */
  replay p = {0};
  wal *w;
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, 10, 100));
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

/* A crash while a segment is being created leaves `<name>.wal.tmp`: ignored
 * and removed at open. */
static void test_stale_tmp(void) {
  char *dir = tmpdir();
  build_log(dir, 10);
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof(tmp), "%s/0000000000000001-000000000000000b.wal.tmp", dir);
  uint8_t junk[100];
  payload(5, junk, sizeof(junk));
  write_file(tmp, junk, sizeof(junk));
  wal_options o = opts(4096, NULL, NULL);
  char err[512];
  replay p = {0};
  wal *w;
  CU_ASSERT_FATAL(wal_open(dir, &o, collect, &p, &w, err, sizeof(err)) == 0);
  CU_ASSERT(entries_are(&p, 10, 100));
  CU_ASSERT(access(tmp, F_OK) != 0);
  CU_ASSERT_EQUAL(wal_segment_count(w), 1u);
  wal_close(w);
  replay_free(&p);
  rmdir_all(dir);
  free(dir);
}

static void test_lock(void) {
  char *dir = tmpdir();
  char sub[PATH_MAX];
  snprintf(sub, sizeof(sub), "%s/wal", dir); /* created by wal_open */
  wal_options o = opts(4096, NULL, NULL);
  char err[512] = "";
  wal *w, *w2 = NULL;
  CU_ASSERT_FATAL(wal_open(sub, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  CU_ASSERT(wal_open(sub, &o, NULL, NULL, &w2, err, sizeof(err)) < 0);
  CU_ASSERT_PTR_NULL(w2);
  CU_ASSERT(strstr(err, "in use") != NULL);
  wal_close(w);
  CU_ASSERT_FATAL(wal_open(sub, &o, NULL, NULL, &w, err, sizeof(err)) == 0);
  wal_close(w);
  rmdir_all(sub);
  rmdir(dir);
  free(dir);
}

int main(void) {
  if (CU_initialize_registry() != CUE_SUCCESS)
    return 2;
  CU_pSuite s = CU_add_suite("wal", NULL, NULL);
  if (!s)
    return 2;
  CU_add_test(s, "crc32c", test_crc32c);
  CU_add_test(s, "codec", test_codec);
  CU_add_test(s, "scan", test_scan);
  CU_add_test(s, "roundtrip_segments", test_roundtrip_segments);
  CU_add_test(s, "group_commit", test_group_commit);
  CU_add_test(s, "zero_ahead", test_zero_ahead);
  CU_add_test(s, "big_record", test_big_record);
  CU_add_test(s, "torn_tail_every_length", test_torn_tail_every_length);
  CU_add_test(s, "torn_write_crash", test_torn_write_crash);
  CU_add_test(s, "corrupt_middle", test_corrupt_middle);
  CU_add_test(s, "corrupt_earlier_segment", test_corrupt_earlier_segment);
  CU_add_test(s, "io_errors_sticky", test_io_errors_sticky);
  CU_add_test(s, "release", test_release);
  CU_add_test(s, "reopen_cycles", test_reopen_cycles);
  CU_add_test(s, "lock", test_lock);
  CU_add_test(s, "stale_tmp", test_stale_tmp);
  CU_add_test(s, "replay_callback_stops", test_replay_callback_stops);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
