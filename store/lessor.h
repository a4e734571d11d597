/*
 * lessor.h -- etcd 3.4's lease table and expiry queue, as a pure core.
 *
 * What it holds: every lease (id, granted TTL, expiry, attached keys) in an
 * open-addressing hash table, and a binary min-heap of the leases ordered by
 * expiry. Each lease knows its heap slot, so a renewal is one sift:
 * O(log n); finding what expired looks only at the heap top; nothing ever
 * scans all leases except promote (a leader change, as etcd's Promote) and
 * listing (LeaseLeases).
 *
 * Pure: no threads, no clock, no I/O. Every call that needs the time takes
 * `now_ms` (a monotonic clock in ms); the caller (the apply actor) owns the
 * lessor and is its only user.
 *
 * Semantics (etcd 3.4 lease/lessor.go):
 *   - grant: id 0 is refused (LEASE_NOT_FOUND), ttl > LESSOR_MAX_TTL is
 *     refused (LEASE_TTL_TOO_LARGE), an existing id is refused (LEASE_EXIST),
 *     ttl < min_ttl becomes min_ttl. A primary (leader) starts the clock at
 *     once; a non-primary keeps the lease at "forever" until promoted.
 *   - renew: primary only; expiry = now + ttl; returns the granted ttl.
 *   - promote(extend): every lease's expiry = now + extend + ttl (what a
 *     leader change and a restart give: a fresh full TTL); demote: forever.
 *   - pop_expired: at most `limit` leases whose expiry passed; each is
 *     pushed back by LESSOR_RETRY_MS (etcd's expiredLeaseRetryInterval) so
 *     that if its revoke proposal is lost it is proposed again later.
 */
#ifndef CETCD_STORE_LESSOR_H
#define CETCD_STORE_LESSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* etcd lease.MaxLeaseTTL (seconds). */
#define LESSOR_MAX_TTL 9000000000LL
/* etcd defaultExpiredleaseRetryInterval. */
#define LESSOR_RETRY_MS 3000
/* etcd leaseRevokeRate: revokes proposed per second at most. The expiry
 * check runs every 500 ms and takes half of it, as etcd's runLoop does. */
#define LESSOR_REVOKE_RATE 1000
#define LESSOR_FOREVER UINT64_MAX

typedef struct lessor lessor;

typedef struct lease_key {
  uint32_t len;
  uint8_t *key; /* malloc'd copy, owned by the lessor */
} lease_key;

typedef struct lease {
  int64_t id;
  int64_t ttl;        /* granted TTL, seconds (after the min-TTL rule) */
  uint64_t expiry_ms; /* LESSOR_FOREVER while not primary */
  uint32_t heap_at;   /* slot in the expiry heap */
  uint32_t n_keys, cap_keys;
  lease_key *keys;    /* attached keys, unordered (detach swaps the last in) */
  uint32_t *kidx;     /* past LESSOR_KIDX_MIN keys: open-addressing index
                       * key -> position + 1 in keys (0 = empty), so detach
                       * stays O(1) for a lease shared by many keys */
  uint32_t kidx_cap;  /* slots, a power of two, at least 2 * n_keys */
} lease;

#define LESSOR_KIDX_MIN 16

lessor *lessor_new(int64_t min_ttl);
void lessor_free(lessor *l);

size_t lessor_count(const lessor *l);
bool lessor_is_primary(const lessor *l);
lease *lessor_lookup(lessor *l, int64_t id);

/* Returns 0 or -CETCD_E_LEASE_NOT_FOUND / _LEASE_TTL_TOO_LARGE / _LEASE_EXIST
 * / _NOMEM; *out (may be NULL) = the new lease. */
int lessor_grant(lessor *l, int64_t id, int64_t ttl, uint64_t now_ms, lease **out);
/* Forgets the lease (the caller deleted its keys first). 0 or
 * -CETCD_E_LEASE_NOT_FOUND. */
int lessor_remove(lessor *l, int64_t id);
/* Returns the granted TTL, 0 if the lease does not exist or has expired
 * (etcd answers a keepalive of an unknown lease with TTL 0), or -1 if this
 * lessor is not primary. */
int64_t lessor_renew(lessor *l, int64_t id, uint64_t now_ms);
/* Remaining whole seconds (etcd truncates), or -1 if unknown. */
int64_t lessor_remaining_s(lessor *l, int64_t id, uint64_t now_ms);

void lessor_promote(lessor *l, uint64_t now_ms, uint64_t extend_ms);
void lessor_demote(lessor *l);

/* Up to `limit` expired lease ids into out[]; see above. Returns how many. */
size_t lessor_pop_expired(lessor *l, uint64_t now_ms, int64_t *out, size_t limit);
/* Expiry of the heap top (LESSOR_FOREVER if none): when to look again. */
uint64_t lessor_next_expiry(const lessor *l);

int lessor_attach(lessor *l, int64_t id, const uint8_t *key, size_t len);
void lessor_detach(lessor *l, int64_t id, const uint8_t *key, size_t len);

/* Every lease, ordered by expiry (etcd's Leases()); malloc'd array of ids
 * the caller frees, count in *n. NULL on allocation failure. */
int64_t *lessor_list(lessor *l, size_t *n);

/* Heap invariant check, for tests. */
bool lessor_check(const lessor *l);

#endif
