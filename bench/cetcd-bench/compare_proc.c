/*
 * compare_proc.c -- child processes, ports and scratch files for
 * `cetcd-bench compare` (see compare_proc.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/cetcd-bench/compare_proc.h"

#define CAPTURE_MAX (64u << 20) /* a child's stdout beyond this is dropped */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* In the child, before exec: die with the parent; stdin from /dev/null;
 * fd 1 and 2 as given (-1: keep). */
static void child_setup(int out_fd, int err_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) _exit(127); /* the parent is already gone */
  int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) dup2(null_fd, 0);
  if (out_fd >= 0) dup2(out_fd, 1);
  if (err_fd >= 0) dup2(err_fd, 2);
}

int proc_spawn(char *const argv[], const char *log_path) {
  int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    child_setup(log_fd, log_fd);
    execvp(argv[0], argv);
    dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(log_fd);
  return pid < 0 ? -1 : (int)pid;
}

/* Reads what fd has (non-blocking) into *buf, growing it; 0 at EOF. */
static int read_some(int fd, char **buf, size_t *len, size_t *cap) {
  char chunk[65536];
  ssize_t n = read(fd, chunk, sizeof chunk);
  if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : 0;
  if (n == 0) return 0;
  if (*len + (size_t)n + 1 > *cap && *len + (size_t)n < CAPTURE_MAX) {
    size_t ncap = (*cap ? *cap * 2 : 65536) + (size_t)n;
    char *nb = realloc(*buf, ncap);
    if (!nb) return 1; /* drop this chunk, keep draining */
    *buf = nb;
    *cap = ncap;
  }
  if (*len + (size_t)n + 1 <= *cap) {
    memcpy(*buf + *len, chunk, (size_t)n);
    *len += (size_t)n;
  }
  return 1;
}

/* Drains the pipe until EOF or the deadline; 1 on timeout. */
static int drain(int fd, double deadline, char **buf, size_t *len, size_t *cap) {
  for (;;) {
    int left_ms = (int)((deadline - now_s()) * 1000);
    if (left_ms <= 0) return 1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, left_ms);
    if (r < 0 && errno != EINTR) return 0;
    if (r > 0 && !read_some(fd, buf, len, cap)) return 0;
  }
}

int proc_capture(const char *path, char *const argv[], const char *err_path, int timeout_s,
                 char **out, int *status) {
  int fds[2];
  *out = NULL;
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_t pid = fork();
  if (pid == 0) {
    child_setup(fds[1], err_fd);
    execv(path, argv);
    _exit(127);
  }
  close(fds[1]);
  if (err_fd >= 0) close(err_fd);
  if (pid < 0) {
    close(fds[0]);
    return -1;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int timed_out = drain(fds[0], now_s() + timeout_s, &buf, &len, &cap);
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
  if (!buf) buf = calloc(1, 1);
  else buf[len] = '\0';
  *out = buf;
  return timed_out;
}

int proc_exited(int pid, int *status) {
  return waitpid(pid, status, WNOHANG) == pid;
}

int proc_stop(int pid, int grace_ms) {
  int status = 0;
  if (proc_exited(pid, &status)) return status;
  kill(pid, SIGTERM);
  for (int waited = 0; waited < grace_ms; waited += 20) {
    if (proc_exited(pid, &status)) return status;
    sleep_ms(20);
  }
  kill(pid, SIGKILL);
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

#define PORTS_MAX 4096
static int ports_used[PORTS_MAX];
static int n_ports_used;

static int port_taken(int port) {
  for (int i = 0; i < n_ports_used; i++)
    if (ports_used[i] == port) return 1;
  return 0;
}

/* 1 if a listening socket can be bound to 127.0.0.1:port now. */
static int port_bindable(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 1) == 0;
  close(fd);
  return ok;
}

int port_pick(void) {
  static unsigned seed;
  if (!seed) seed = (unsigned)getpid() ^ (unsigned)time(NULL);
  for (int tries = 0; tries < 1000 && n_ports_used < PORTS_MAX; tries++) {
    /* 10000..31999: below the ephemeral range (32768-60999), so no clash
     * with outgoing connections' source ports and no TCP self-connect */
    int port = 10000 + (int)(rand_r(&seed) % 22000);
    if (port_taken(port) || !port_bindable(port)) continue;
    ports_used[n_ports_used++] = port;
    return port;
  }
  return -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int path_remove_tree(const char *path) {
  return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The file's last (head: first) `max` bytes, NUL-terminated, malloc'ed;
 * NULL if unreadable. */
static char *file_bytes(const char *path, long max, int head) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  long from = size > max ? size - max : 0;
  if (head) {
    from = 0;
    size = size > max ? max : size;
  }
  fseek(f, from, SEEK_SET);
  char *buf = malloc((size_t)(size - from) + 1);
  size_t n = buf ? fread(buf, 1, (size_t)(size - from), f) : 0;
  fclose(f);
  if (buf) buf[n] = '\0';
  return buf;
}

void file_print_tail(FILE *to, const char *path, int lines, const char *prefix) {
  char *buf = file_bytes(path, 16384, 0);
  if (!buf) return;
  char *start = buf + strlen(buf);
  if (start > buf && start[-1] == '\n') start--;
  for (int n = 0; start > buf; start--)
    if (start[-1] == '\n' && ++n == lines) break;
  for (char *save = NULL, *l = strtok_r(start, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
    fprintf(to, "%s%s\n", prefix, l);
  free(buf);
}

void file_line(const char *path, int first, char *out, size_t len) {
  out[0] = '\0';
  char *buf = file_bytes(path, 4096, first);
  if (!buf) return;
  for (char *save = NULL, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    if (strspn(l, " \t\r") == strlen(l)) continue;
    snprintf(out, len, "%s", l);
    if (first) break;
  }
  free(buf);
}

void proc_first_line(char *const argv[], char *buf, size_t len) {
  buf[0] = '\0';
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return;
  pid_t pid = fork();
  if (pid == 0) {
    child_setup(fds[1], fds[1]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(fds[1]);
  char *out = NULL;
  size_t n = 0, cap = 0;
  if (pid > 0) {
    if (drain(fds[0], now_s() + 10, &out, &n, &cap)) kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  close(fds[0]);
  if (out) {
    out[n] = '\0';
    snprintf(buf, len, "%.*s", (int)strcspn(out, "\n"), out);
  }
  free(out);
}
