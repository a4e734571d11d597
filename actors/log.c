/*
 * log.c -- etcd 3.4's capnslog line format, written with one write(2) per
 * line. See log.h for the format and the contract.
 *
 * A line is built in a stack buffer; a message too long for it is built again
 * in a heap buffer of the exact size, so nothing is ever cut. The level and
 * the fd are atomics so any thread may log while main adjusts them.
 */
#include "actors/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { LOG_LINE_STACK_BYTES = 2048 };

static _Atomic int log_threshold = LOG_LEVEL_INFO;
static _Atomic int log_fd = 2;
static pthread_mutex_t log_write_mu = PTHREAD_MUTEX_INITIALIZER;

static const char log_letters[] = "CEWNID";

int log_level_from_name(const char *name, enum log_level *out)
{
  static const struct {
    const char *name;
    enum log_level lvl;
  } names[] = {
      {"debug", LOG_LEVEL_DEBUG},    {"info", LOG_LEVEL_INFO},
      {"warn", LOG_LEVEL_WARNING},   {"error", LOG_LEVEL_ERROR},
      {"dpanic", LOG_LEVEL_CRITICAL}, {"panic", LOG_LEVEL_CRITICAL},
      {"fatal", LOG_LEVEL_CRITICAL},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcmp(name, names[i].name) == 0) {
      *out = names[i].lvl;
      return 0;
    }
  }
  return -1;
}

void log_set_level(enum log_level threshold) { atomic_store(&log_threshold, (int)threshold); }
enum log_level log_get_level(void) { return (enum log_level)atomic_load(&log_threshold); }
bool log_enabled(enum log_level lvl) { return (int)lvl <= atomic_load(&log_threshold); }
void log_set_fd(int fd) { atomic_store(&log_fd, fd); }

static void log_now(struct timespec *ts) { clock_gettime(CLOCK_REALTIME, ts); }

/* Appends vsnprintf output; returns the bytes the text needs. */
static size_t log_append_v(char *buf, size_t cap, size_t at, const char *fmt, va_list ap)
{
  char *dst = at < cap ? buf + at : NULL;
  size_t room = at < cap ? cap - at : 0;
  char dummy;
  int n = vsnprintf(dst ? dst : &dummy, dst ? room : 0, fmt, ap);
  return n < 0 ? 0 : (size_t)n;
}

static size_t log_append(char *buf, size_t cap, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t log_append(char *buf, size_t cap, size_t at, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  size_t n = log_append_v(buf, cap, at, fmt, ap);
  va_end(ap);
  return n;
}

/* Ends the line with '\n' unless the message already did (capnslog's rule). */
static size_t log_finish(char *buf, size_t cap, size_t len)
{
  bool ends_nl = len > 0 && len <= cap - 1 && buf[len - 1] == '\n';
  if (ends_nl)
    return len;
  if (len + 1 < cap) {
    buf[len] = '\n';
    buf[len + 1] = '\0';
  }
  return len + 1;
}

size_t log_vformat(char *buf, size_t cap, const struct timespec *when, enum log_level lvl,
                   const char *pkg, const char *fmt, va_list ap)
{
  struct timespec now;
  struct tm tm;
  if (!when) {
    log_now(&now);
    when = &now;
  }
  localtime_r(&when->tv_sec, &tm);
  int li = lvl < LOG_LEVEL_CRITICAL || lvl > LOG_LEVEL_DEBUG ? LOG_LEVEL_DEBUG : (int)lvl;
  size_t len = log_append(buf, cap, 0, "%04d-%02d-%02d %02d:%02d:%02d.%06ld %c | ",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                          tm.tm_min, tm.tm_sec, when->tv_nsec / 1000, log_letters[li]);
  if (pkg && pkg[0])
    len += log_append(buf, cap, len, "%s: ", pkg);
  len += log_append_v(buf, cap, len, fmt, ap);
  /* A message ending in '\n' must be seen whole to know; if truncated the
   * caller retries with the exact size anyway. */
  if (len >= cap)
    return len + 1;
  return log_finish(buf, cap, len);
}

size_t log_format(char *buf, size_t cap, const struct timespec *when, enum log_level lvl,
                  const char *pkg, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  size_t n = log_vformat(buf, cap, when, lvl, pkg, fmt, ap);
  va_end(ap);
  return n;
}

static void log_write_all(const char *p, size_t len)
{
  int fd = atomic_load(&log_fd);
  pthread_mutex_lock(&log_write_mu);
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      break; /* nowhere left to report a failing log fd */
    }
    p += w;
    len -= (size_t)w;
  }
  pthread_mutex_unlock(&log_write_mu);
}

/* Formats with `format` into a stack buffer, or the heap when it is too small. */
typedef size_t (*log_formatter)(char *buf, size_t cap, const struct timespec *when,
                                enum log_level lvl, const char *pkg, const char *fmt,
                                va_list ap);

static void log_emit(log_formatter format, enum log_level lvl, const char *pkg,
                     const char *fmt, va_list ap)
{
  char stack[LOG_LINE_STACK_BYTES];
  struct timespec now;
  va_list ap2;
  log_now(&now);
  va_copy(ap2, ap);
  size_t need = format(stack, sizeof stack, &now, lvl, pkg, fmt, ap);
  if (need < sizeof stack) {
    log_write_all(stack, need);
  } else {
    char *heap = malloc(need + 2);
    if (heap) {
      size_t n = format(heap, need + 2, &now, lvl, pkg, fmt, ap2);
      log_write_all(heap, n < need + 2 ? n : need + 1);
      free(heap);
    } else {
      stack[sizeof stack - 2] = '\n';
      log_write_all(stack, sizeof stack - 1);
    }
  }
  va_end(ap2);
}

void log_vprintf(enum log_level lvl, const char *pkg, const char *fmt, va_list ap)
{
  if (!log_enabled(lvl))
    return;
  log_emit(log_vformat, lvl, pkg, fmt, ap);
}

void log_printf(enum log_level lvl, const char *pkg, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  log_vprintf(lvl, pkg, fmt, ap);
  va_end(ap);
}

void log_fatalf(const char *pkg, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  log_emit(log_vformat, LOG_LEVEL_CRITICAL, pkg, fmt, ap);
  va_end(ap);
  exit(1);
}

/* Go's log.LstdFlags with prefix "raft": "raft2006/01/02 15:04:05 LEVEL: msg". */
static size_t log_raft_vformat(char *buf, size_t cap, const struct timespec *when,
                               enum log_level lvl, const char *pkg, const char *fmt,
                               va_list ap)
{
  static const char *const names[] = {"FATAL", "ERROR", "WARN", "WARN", "INFO", "DEBUG"};
  struct tm tm;
  (void)pkg;
  localtime_r(&when->tv_sec, &tm);
  int li = lvl < LOG_LEVEL_CRITICAL || lvl > LOG_LEVEL_DEBUG ? LOG_LEVEL_DEBUG : (int)lvl;
  size_t len = log_append(buf, cap, 0, "raft%04d/%02d/%02d %02d:%02d:%02d %s: ",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                          tm.tm_min, tm.tm_sec, names[li]);
  len += log_append_v(buf, cap, len, fmt, ap);
  if (len >= cap)
    return len + 1;
  return log_finish(buf, cap, len);
}

void log_raft_printf(enum log_level lvl, const char *fmt, ...)
{
  if (lvl == LOG_LEVEL_DEBUG && !log_enabled(LOG_LEVEL_DEBUG))
    return;
  va_list ap;
  va_start(ap, fmt);
  log_emit(log_raft_vformat, lvl, NULL, fmt, ap);
  va_end(ap);
}
