/*
 * compare_proc.h -- the processes and files `cetcd-bench compare` handles:
 * servers it starts and stops by pid, child benches whose output it reads,
 * free loopback ports, scratch directories.
 *
 * Every child is started with PR_SET_PDEATHSIG = SIGKILL, so nothing
 * outlives compare, also when compare itself is killed.
 */
#ifndef CETCD_BENCH_COMPARE_PROC_H
#define CETCD_BENCH_COMPARE_PROC_H

#include <stddef.h>
#include <stdio.h>

/* Starts argv (PATH searched) with stdin from /dev/null and stdout and
 * stderr appended to log_path. Returns its pid, or -1 (errno set). */
int proc_spawn(char *const argv[], const char *log_path);

/* Runs path with argv, stderr to err_path, and collects its stdout
 * (NUL-terminated, malloc'ed into *out) until it exits or timeout_s passes
 * (then it is killed). Returns 0 with its wait status in *status, 1 on
 * timeout, -1 if it could not be run. */
int proc_capture(const char *path, char *const argv[], const char *err_path, int timeout_s,
                 char **out, int *status);

/* 1 (and its wait status in *status) if pid has exited and was reaped. */
int proc_exited(int pid, int *status);

/* SIGTERM, then SIGKILL after grace_ms; reaps it. Returns its wait status,
 * or -1 if it could not be waited for. */
int proc_stop(int pid, int grace_ms);

/* A loopback TCP port that nothing listens on, below Linux's ephemeral
 * range, never handed out twice by this process; -1 if none was found. */
int port_pick(void);

/* rm -r path (no symlinks followed). */
int path_remove_tree(const char *path);

/* The last `lines` lines of a file, each printed with `prefix`. */
void file_print_tail(FILE *to, const char *path, int lines, const char *prefix);

/* The first (first != 0) or last non-blank line of a file into buf ("" if none). */
void file_line(const char *path, int first, char *buf, size_t len);

/* The first line a command prints on stdout (and stderr), "" if none. */
void proc_first_line(char *const argv[], char *buf, size_t len);

#endif /* CETCD_BENCH_COMPARE_PROC_H */
