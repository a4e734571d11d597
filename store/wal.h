/*
 * wal.h -- the write-ahead log: the durability point of cetcd.
 *
 * A WAL is a directory of segment files `<seq:016x>-<first_index:016x>.wal`,
 * each preallocated to segment_bytes. A segment holds records:
 *
 *   | len u32 LE | crc32c u32 LE | type u8 | index u64 LE | data[len - 9] |
 *
 * crc32c covers type, index and data. `index` is opaque to the WAL except that
 * it must not decrease within the log's records of type WAL_REC_ENTRY (a
 * smaller one means the caller overwrote a suffix: replay reports both, the
 * caller keeps the later one) and wal_release() drops whole segments whose
 * entry records are all below a given index.
 *
 * Group commit: wal_append() only buffers; wal_sync() writes every buffered
 * record with one write(v) and one fdatasync. A new segment is created (and the
 * directory fsynced) when the current one is full.
 *
 * Records never straddle segments. A record larger than segment_bytes gets a
 * segment of its own size. A segment's name carries the index of the last
 * WAL_REC_ENTRY written before it, plus one (0 for the very first segment).
 *
 * Each new segment starts with a copy of the latest WAL_REC_META,
 * WAL_REC_SNAPSHOT and WAL_REC_HARDSTATE records written before it (etcd's
 * WAL does the same with its metadata and hard state), so wal_release() can
 * delete old segments without losing them.
 * Replay may therefore deliver those records more than once: the last one
 * delivered is the current one.
 *
 * Replay (wal_open): records are handed to the callback in order. A preallocated
 * segment is zero-filled, so a zero length field followed only by zeros is the
 * clean end of the log. A torn tail -- a partial record, a CRC mismatch, or
 * non-zero garbage, at the end of the last segment, with no valid record
 * anywhere after it -- is cut off (the rest of the file is zeroed) with a
 * warning naming the file and offset; the writer continues right after the
 * last valid record. Damage anywhere else (a bad record followed by any valid
 * record, any bad record in a non-last segment, a gap in the segment
 * sequence) fails the open with an error naming the file and byte offset, e.g.
 *   wal: corrupt record in /d/0000000000000002-0000000000001000.wal at offset 4096: crc mismatch
 *
 * File I/O goes through wal_io so tests can inject EIO, ENOSPC, short/torn
 * writes and crashes.
 */
#ifndef CETCD_STORE_WAL_H
#define CETCD_STORE_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

enum wal_rec_type {
  WAL_REC_ENTRY = 1,     /* a Raft log entry (raft actor's encoding) */
  WAL_REC_HARDSTATE = 2, /* term, vote, commit */
  WAL_REC_SNAPSHOT = 3,  /* snapshot marker: index/term the store holds */
  WAL_REC_META = 4,      /* member id, cluster id: written once at creation */
};

/* Each member behaves like the system call of the same name: -1 and errno on
 * failure. fallocate is mode 0 (allocate and extend, reads give zeros).
 * Directory listing, rename, unlink and mkdir use libc directly. */
typedef struct wal_io {
  int (*open)(const char *path, int flags, mode_t mode);
  ssize_t (*pwritev)(int fd, const struct iovec *iov, int iovcnt, off_t off);
  ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
  int (*fdatasync)(int fd);
  int (*fsync)(int fd);
  int (*fallocate)(int fd, off_t off, off_t len);
  int (*ftruncate)(int fd, off_t len);
  int (*close)(int fd);
} wal_io;

/* The real system calls. */
extern const wal_io wal_io_posix;

typedef struct wal_options {
  size_t segment_bytes;   /* default 64 MiB */
  const wal_io *io;       /* NULL = wal_io_posix */
  /* called for warnings (torn tail truncated); NULL = stderr */
  void (*warn)(void *arg, const char *msg);
  void *warn_arg;
} wal_options;

typedef struct wal wal;

/* Called for each valid record during replay. Return 0 to continue. */
typedef int (*wal_replay_fn)(void *arg, uint8_t type, uint64_t index, const uint8_t *data, size_t len);

/* Opens (creating the directory if needed) and replays. On error returns <0
 * and writes a message naming file and offset into err. err is cleared first;
 * if fn returns non-zero after writing its own message into err (through its
 * arg), that message is kept, else err says "wal: replay of <file> stopped at
 * offset N ..."; a positive fn result becomes -ECANCELED. The directory is flock'ed until wal_close: a
 * second wal_open of it, from any process, fails ("in use"). Records before
 * a damaged one may already have been delivered when the open fails. */
int wal_open(const char *dir, const wal_options *opt, wal_replay_fn fn, void *arg, wal **out,
             char *err, size_t err_len);
/* Does not sync: records appended since the last wal_sync are dropped. */
void wal_close(wal *w);

/* Buffers one record (copied). Returns 0, -ENOMEM, -EINVAL (len above
 * WAL_RECORD_DATA_MAX or a type outside enum wal_rec_type), -ENOBUFS (more
 * than WAL_PENDING_BYTES_MAX buffered: sync first), or the sticky error of an
 * earlier failed wal_sync. */
int wal_append(wal *w, uint8_t type, uint64_t index, const void *data, size_t len);
/* Writes everything buffered and fdatasyncs once: one pwritev + one fdatasync
 * per segment touched (a batch that crosses into a new segment also pays the
 * segment's creation: fallocate, fsync, directory fsync). Returns 0 or
 * -errno; after an error the WAL refuses further writes, syncs and releases
 * with the same error (the server must stop). */
int wal_sync(wal *w);
/* Deletes whole segments all of whose entry records have index < index
 * (a segment without entries qualifies), oldest first and stopping at the
 * first one that does not qualify, so the sequence has no holes; then fsyncs
 * the directory. Never deletes the segment being written. */
int wal_release(wal *w, uint64_t index);

/* Number of segment files, the current one included. */
size_t wal_segment_count(const wal *w);

/* --- record codec: pure, no I/O (tests/fuzz/fuzz_wal_record.c drives it) --- */

#define WAL_RECORD_HEADER_BYTES 17u /* len, crc32c, type, index */
/* A len field above this is damage, not a record: 64 MiB. */
#define WAL_RECORD_LEN_MAX (64u << 20)
#define WAL_RECORD_DATA_MAX (WAL_RECORD_LEN_MAX - 9u)
/* Bytes wal_append may buffer between two wal_sync calls: 256 MiB. */
#define WAL_PENDING_BYTES_MAX ((size_t)256 << 20)

enum wal_decode_status {
  WAL_DECODE_OK = 0,
  WAL_DECODE_ZERO = -1,    /* len field is 0: the zero-filled end of a segment */
  WAL_DECODE_SHORT = -2,   /* buffer ends inside the record */
  WAL_DECODE_BAD_LEN = -3, /* len < 9 or len > WAL_RECORD_LEN_MAX */
  WAL_DECODE_BAD_CRC = -4,
  WAL_DECODE_BAD_TYPE = -5, /* CRC fine but type outside enum wal_rec_type */
};

typedef struct wal_record {
  uint8_t type;
  uint64_t index;
  const uint8_t *data; /* points into the decoded buffer */
  size_t len;
} wal_record;

/* Encoded size of a record with len bytes of data. */
static inline size_t wal_record_bytes(size_t len) { return WAL_RECORD_HEADER_BYTES + len; }
/* Writes wal_record_bytes(len) bytes to out (the caller sized it). */
void wal_encode_record(uint8_t *out, uint8_t type, uint64_t index, const void *data, size_t len);
/* Decodes the record at buf[0]. On WAL_DECODE_OK fills rec and *consumed. */
int wal_decode_record(const uint8_t *buf, size_t len, wal_record *rec, size_t *consumed);
const char *wal_decode_strerror(int status);

/* The replay path over one segment's bytes. Calls fn for each valid record
 * (fn may be NULL); stops at the first record that does not decode, or when fn
 * returns non-zero (then returns that value, else 0). */
typedef struct wal_scan_result {
  size_t valid_bytes;  /* offset just past the last valid record */
  size_t records;      /* valid records delivered */
  int damage;          /* 0: clean end (zeros or EOF), else a wal_decode_status */
  int valid_after;     /* 1: damage is followed by a valid record (not a torn
                        * tail); -1: the search gave up (treat as damage) */
  size_t valid_after_off;
  uint64_t entry_max;  /* largest WAL_REC_ENTRY index seen */
  int has_entry;
} wal_scan_result;
int wal_scan_segment(const uint8_t *buf, size_t len, wal_replay_fn fn, void *arg,
                     wal_scan_result *res);

#endif
