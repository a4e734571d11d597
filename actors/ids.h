/*
 * ids.h -- member and cluster ids, derived exactly as etcd 3.4 derives them.
 *
 * A member's id is the first 8 bytes (big-endian) of
 *   SHA-1( sorted peer URLs, concatenated with no separator || cluster token )
 * (etcdserver/api/membership/member.go, newMember; a member added at runtime
 * also appends the Unix time, which initial members never do).
 * The cluster id is the first 8 bytes (big-endian) of
 *   SHA-1( the member ids sorted ascending, each as 8 big-endian bytes )
 * (membership/cluster.go, genID).
 *
 * With the same --initial-cluster and --initial-cluster-token, cetcd's ids are
 * etcd's, so response headers and `member list` agree.
 */
#ifndef CETCD_ACTORS_IDS_H
#define CETCD_ACTORS_IDS_H

#include <stddef.h>
#include <stdint.h>

typedef struct ids_member {
  char *name;       /* owned */
  char **peer_urls; /* owned; normalised and sorted as etcd stores them */
  size_t n_peer_urls;
  uint64_t id;
} ids_member;

/* Peer URLs are taken as given (callers pass normalised URLs, see
 * config_url_parse) and sorted internally; order of the input is irrelevant. */
uint64_t ids_member_id(const char *const *peer_urls, size_t n, const char *cluster_token);

/* The same, with the Unix time etcd appends for a member added at runtime
 * (MemberAdd: NewMember(..., &now)). */
uint64_t ids_member_id_at(const char *const *peer_urls, size_t n, const char *cluster_token,
                          int64_t unix_seconds);

/* Order of member_ids is irrelevant: they are sorted internally. */
uint64_t ids_cluster_id(const uint64_t *member_ids, size_t n);

/* Parses --initial-cluster "n1=u1,n1=u2,n2=u3" (etcd's types.NewURLsMap:
 * entries split on ',', name and URL on the first '=', empty entries
 * skipped; the URLs of one name are gathered). Members come out sorted by id
 * (the order etcd lists them in). Every URL is checked like etcd checks them;
 * on a bad one returns -1 with etcd's text in err ("URL scheme must be http,
 * https, unix, or unixs: foo"). An empty string gives 0 members. A URL
 * listed twice (hence possibly two members with one id) is not an error
 * here: config_verify_bootstrap reports it first, in etcd's words, as etcd
 * does. On success returns 0, *out is
 * malloc'd (free with ids_members_free). */
int ids_parse_initial_cluster(const char *s, const char *token, ids_member **out, size_t *n,
                              char *err, size_t err_len);
void ids_members_free(ids_member *m, size_t n);

#endif
