/*
 * log.h -- etcd 3.4's default log format (capnslog's "pretty" formatter).
 *
 * etcd 3.4 logs with capnslog unless --logger=zap is given; each line is
 *
 *   2026-11-23 22:21:41.629493 I | embed: ready to serve client requests
 *
 * local time to the microsecond, one level letter, " | ", the package, ": ",
 * the message. Scripts and tests grep for these lines, so cetcd writes the
 * same shape. The Raft library logs through Go's `log` package instead:
 *
 *   raft2026/11/23 22:21:41 INFO: bdae9bbc11dd390d became leader at term 2
 *
 * which log_raft_printf() reproduces.
 *
 * Thread safety: every line is formatted into a private buffer and handed to
 * the kernel with one write(2) (a loop only if the kernel accepts it in parts,
 * under a mutex so lines never interleave). Safe from any thread.
 */
#ifndef CETCD_ACTORS_LOG_H
#define CETCD_ACTORS_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* capnslog's levels, most severe first. A line is written when its level is
 * <= the threshold. --log-level maps onto these as etcd's
 * logutil.ConvertToCapnslogLogLevel does: debug->DEBUG, info->INFO,
 * warn->WARNING, error->ERROR, panic/fatal->CRITICAL. NOTICE lines ("N") thus
 * show at info and debug only. */
enum log_level {
  LOG_LEVEL_CRITICAL = 0, /* "C" */
  LOG_LEVEL_ERROR,        /* "E" */
  LOG_LEVEL_WARNING,      /* "W" */
  LOG_LEVEL_NOTICE,       /* "N" */
  LOG_LEVEL_INFO,         /* "I" */
  LOG_LEVEL_DEBUG,        /* "D" */
};

/* Maps an etcd --log-level name (debug|info|warn|error|panic|fatal, also
 * "dpanic" like etcd) to a threshold. Returns 0, or -1 for an unknown name. */
int log_level_from_name(const char *name, enum log_level *out);

/* The threshold; default LOG_LEVEL_INFO, as etcd. */
void log_set_level(enum log_level threshold);
enum log_level log_get_level(void);
bool log_enabled(enum log_level lvl);

/* Where lines go; default 2 (stderr). The fd is not closed by the logger. */
void log_set_fd(int fd);

/* Formats one capnslog line (with its trailing newline) into buf. `when` may
 * be NULL for "now". Returns the length the full line needs, like snprintf;
 * buf holds a NUL-terminated, possibly truncated line. A message that already
 * ends in '\n' gets no second one (as capnslog). */
size_t log_vformat(char *buf, size_t cap, const struct timespec *when,
                   enum log_level lvl, const char *pkg, const char *fmt,
                   va_list ap) __attribute__((format(printf, 6, 0)));
size_t log_format(char *buf, size_t cap, const struct timespec *when,
                  enum log_level lvl, const char *pkg, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Writes one line if lvl passes the threshold. pkg is etcd's package name
 * for the line ("etcdmain", "embed", "etcdserver", "etcdserver/membership",
 * "etcdserver/api", "pkg/flags", ...). */
void log_printf(enum log_level lvl, const char *pkg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vprintf(enum log_level lvl, const char *pkg, const char *fmt,
                 va_list ap) __attribute__((format(printf, 3, 0)));

/* capnslog's Fatalf: a "C" line, then exit(1). */
_Noreturn void log_fatalf(const char *pkg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A line in the Raft library's format: "raft" + "YYYY/MM/DD HH:MM:SS" + " " +
 * "INFO: " + message. Like etcd 3.4 (raft's DefaultLogger ignores
 * --log-level), INFO/WARN/ERROR lines are always written; DEBUG lines only at
 * --log-level=debug. lvl maps CRITICAL->"FATAL"(no exit), ERROR->"ERROR",
 * WARNING/NOTICE->"WARN", INFO->"INFO", DEBUG->"DEBUG". */
void log_raft_printf(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
