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
 * records are all below a given index.
 *
 * Group commit: wal_append() only buffers; wal_sync() writes every buffered
 * record with one write(v) and one fdatasync. A new segment is created (and the
 * directory fsynced) when the current one is full.
 *
 * Replay (wal_open): records are handed to the callback in order. A torn tail
 * -- a partial or zero-length/zero-filled record at the end of the last
 * segment, or a CRC mismatch at the very end of the last segment -- is
 * truncated with a warning. Damage anywhere else (bad CRC followed by valid
 * records, bad header in a non-last segment) fails the open with an error
 * naming the file and byte offset.
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
 * and writes a message naming file and offset into err. */
int wal_open(const char *dir, const wal_options *opt, wal_replay_fn fn, void *arg, wal **out,
             char *err, size_t err_len);
void wal_close(wal *w);

/* Buffers one record (copied). Returns 0 or -ENOMEM. */
int wal_append(wal *w, uint8_t type, uint64_t index, const void *data, size_t len);
/* Writes everything buffered and fdatasyncs once. Returns 0 or -errno; after
 * an error the WAL refuses further writes (the server must stop). */
int wal_sync(wal *w);
/* Deletes whole segments all of whose entry records have index < index.
 * Never deletes the segment being written. */
int wal_release(wal *w, uint64_t index);

#endif
