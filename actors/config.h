/*
 * config.h -- cetcd's command line and ETCD_* environment, parsed and
 * checked the way etcd 3.4 does it (etcdmain/config.go, pkg/flags,
 * embed/config.go).
 *
 * Syntax is Go's `flag` package: --flag value, --flag=value, -flag value,
 * -flag=value; booleans as --flag or --flag=true|false (never "--flag false");
 * "--" ends the flags; the first non-flag argument stops parsing and is an
 * error ("'x' is not a valid flag"). A flag given twice: the last one wins.
 *
 * Environment: each flag --foo-bar may come from ETCD_FOO_BAR when the flag is
 * not on the command line (flags win). Like etcd: a used variable is logged
 * ("recognized and used environment variable ..."), an ETCD_* variable that
 * names no flag gets a warning, and a variable shadowed by a flag given on the
 * command line is fatal (exit 1).
 *
 * cetcd implements a subset of etcd's flags. Every other etcd 3.4 flag is
 * recognised by name and refused ("cetcd: flag --x is not supported yet",
 * exit 2), whether it comes from argv or from ETCD_*; etcd's own list of
 * ignored legacy flags (-v, -vv, -config, ...) is ignored with etcd's warning.
 */
#ifndef CETCD_ACTORS_CONFIG_H
#define CETCD_ACTORS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "actors/log.h"

/* Longest URL accepted, normalised, including the NUL. */
#define CONFIG_URL_MAX 512

typedef struct cetcd_url_list {
  char **v; /* normalised URLs, sorted as etcd's types.NewURLs sorts them */
  size_t n;
} cetcd_url_list;

typedef struct cetcd_config {
  char *name;     /* --name, "default" */
  char *data_dir; /* --data-dir; default "${name}.cetcd" (etcd: "${name}.etcd";
                     the on-disk formats differ, so the default dirs do too) */
  bool data_dir_defaulted; /* true when data_dir is that default: etcd then
                              logs W "no data-dir provided, using default
                              data-dir ./<dir>" (etcdmain) after the version
                              lines */
  cetcd_url_list listen_client_urls;          /* "http://localhost:2379" */
  cetcd_url_list advertise_client_urls;       /* "http://localhost:2379"; empty
                                                 when only --listen-client-urls
                                                 was set (an error, as etcd) */
  cetcd_url_list listen_peer_urls;            /* "http://localhost:2380" */
  cetcd_url_list initial_advertise_peer_urls; /* "http://localhost:2380" */
  char *initial_cluster;       /* raw; default "default=http://localhost:2380",
                                  which for a --name other than "default"
                                  becomes "<name>=<each advertise peer url>"
                                  (etcd's UpdateDefaultClusterFromName) */
  char *initial_cluster_token; /* "etcd-cluster" */
  char *initial_cluster_state; /* "new" | "existing" */
  uint64_t snapshot_count;     /* 100000 */
  uint64_t max_request_bytes;  /* 1572864 (1.5 MiB) */
  uint32_t max_txn_ops;        /* 128 */
  int64_t quota_backend_bytes; /* 0 = default (2 GiB in etcd 3.4) */
  uint32_t heartbeat_interval_ms; /* 100 */
  uint32_t election_timeout_ms;   /* 1000; >= 5 * heartbeat, <= 50000 */
  char *log_level;                /* "info" */
  enum log_level log_threshold;   /* log_level mapped for log_set_level() */
  char *logger;                   /* "capnslog" (the only logger cetcd has) */
  char *log_outputs;              /* "default" | "stderr" | "stdout" */
  int log_fd;                     /* 2, or 1 for --log-outputs=stdout */
  bool experimental_initial_corrupt_check; /* false */
  int64_t experimental_watch_progress_notify_interval_ns; /* 0 (= etcd's 10m); Go duration */
  bool strict_reconfig_check;              /* true */
} cetcd_config;

/* config_parse's results. */
enum {
  CONFIG_RUN = 0,          /* start the server */
  CONFIG_EXITED = 1,       /* printed --help or --version: exit 0 */
  CONFIG_USAGE_ERROR = -1, /* bad flag syntax/value, unknown or unsupported
                              flag: exit 2 (Go flag package) */
  CONFIG_INVALID = -2,     /* flags parse but fail etcd's validation (also an
                              env var shadowed by a flag): exit 1 */
};

/* Parses argv (argv[0] is the program) then envp (NULL-terminated "K=V",
 * may be NULL). --help/-h print to out; everything else (errors, the env
 * log lines, warnings) goes to err, errors already in etcd's wording.
 * On any result cfg is initialised and must be config_free()d. */
int config_parse(int argc, char **argv, char **envp, cetcd_config *cfg, FILE *out, FILE *err);

/* The process exit status for a config_parse result other than CONFIG_RUN. */
int config_exit_status(int rc);

void config_free(cetcd_config *cfg);

void config_print_help(FILE *out);
void config_print_version(FILE *out);

/* Logs (log_printf) what etcd 3.4 logs between parsing its flags and
 * creating the server, in its order, with cetcd's version lines in place of
 * etcd's:
 *   I | etcdmain: cetcd Version: 0.1.0
 *   I | etcdmain: Git SHA: Not provided
 *   I | etcdmain: etcd API version: 3.4 (clients see server version 3.4.23)
 *   I | etcdmain: OS/Arch: linux/amd64
 *   W | etcdmain: no data-dir provided, using default data-dir ./default.cetcd   (if defaulted)
 *   N | etcdmain: the server is already initialized as member before, starting as etcd member...
 *                                                            (member_initialized only)
 *   I | embed: name = t
 *   I | embed: data dir = /tmp/d
 *   I | embed: member dir = /tmp/d/member
 *   I | embed: heartbeat = 100ms
 *   I | embed: election = 1000ms
 *   I | embed: snapshot count = 100000
 *   I | embed: advertise client URLs = http://127.0.0.1:2379
 *   I | embed: initial advertise peer URLs = http://127.0.0.1:2380   (member_initialized only)
 *   I | embed: initial cluster =                 (member_initialized only; etcd prints it empty)
 * Call after log_set_fd/log_set_level with the config's values. */
void config_log_startup(const cetcd_config *cfg, bool member_initialized);

/* Checks a new member's --initial-cluster against --name and
 * --initial-advertise-peer-urls, as etcd does when it bootstraps a fresh
 * data dir (etcdserver ServerConfig.VerifyBootstrap), and derives the ids.
 * Returns 0, or -1 with etcd's message in err (etcd logs it as
 * "C | etcdmain: <message>" and exits 1). member_id/cluster_id may be NULL.
 * Unlike etcd, URLs are compared as strings: no DNS resolution. */
int config_verify_bootstrap(const cetcd_config *cfg, uint64_t *member_id, uint64_t *cluster_id,
                            char *err, size_t err_len);

/* Checks one URL as etcd's types.NewURLs does (scheme http|https|unix|unixs,
 * "host:port", no path) and writes its normalised form (trimmed, lowercase
 * scheme) to out. Returns 0, or -1 with etcd's message in err. */
int config_url_parse(const char *in, char *out, size_t out_cap, char *err, size_t err_len);

#endif
