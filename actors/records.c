/*
 * records.c -- payloads of the WAL records the raft actor writes. The WAL
 * frames and checksums them (store/wal.h); these are their contents.
 */
#include <string.h>

#include "actors/server.h"

size_t rec_entry_size(uint32_t data_len) { return 9 + (size_t)data_len; }

void rec_entry_encode(uint8_t *out, uint64_t term, uint8_t type, const uint8_t *data, uint32_t len) {
  put_u64le(out, term);
  out[8] = type;
  if (len) memcpy(out + 9, data, len);
}

int rec_entry_decode(const uint8_t *buf, size_t len, uint64_t *term, uint8_t *type,
                     const uint8_t **data, uint32_t *data_len) {
  if (len < 9 || len - 9 > UINT32_MAX) return -1;
  *term = get_u64le(buf);
  *type = buf[8];
  *data = buf + 9;
  *data_len = (uint32_t)(len - 9);
  return 0;
}

void rec_hard_state_encode(uint8_t out[24], const raft_hard_state *hs) {
  put_u64le(out, hs->term);
  put_u64le(out + 8, hs->vote);
  put_u64le(out + 16, hs->commit);
}

int rec_hard_state_decode(const uint8_t *buf, size_t len, raft_hard_state *hs) {
  if (len != 24) return -1;
  hs->term = get_u64le(buf);
  hs->vote = get_u64le(buf + 8);
  hs->commit = get_u64le(buf + 16);
  return 0;
}

size_t rec_snapshot_encode(uint8_t *out, size_t cap, const raft_snapshot_meta *m) {
  size_t need = 20 + 8 * (size_t)m->conf.n_voters;
  if (cap < need) return 0;
  put_u64le(out, m->index);
  put_u64le(out + 8, m->term);
  uint32_t n = m->conf.n_voters;
  memcpy(out + 16, &n, 4);
  for (uint32_t i = 0; i < n; i++) put_u64le(out + 20 + 8 * i, m->conf.voters[i]);
  return need;
}

int rec_snapshot_decode(const uint8_t *buf, size_t len, raft_snapshot_meta *m) {
  if (len < 20) return -1;
  memset(m, 0, sizeof(*m));
  m->index = get_u64le(buf);
  m->term = get_u64le(buf + 8);
  uint32_t n;
  memcpy(&n, buf + 16, 4);
  if (n > RAFT_MAX_MEMBERS || len != 20 + 8 * (size_t)n) return -1;
  m->conf.n_voters = n;
  for (uint32_t i = 0; i < n; i++) m->conf.voters[i] = get_u64le(buf + 20 + 8 * i);
  return 0;
}

void rec_meta_encode(uint8_t out[16], uint64_t member_id, uint64_t cluster_id) {
  put_u64le(out, member_id);
  put_u64le(out + 8, cluster_id);
}

int rec_meta_decode(const uint8_t *buf, size_t len, uint64_t *member_id, uint64_t *cluster_id) {
  if (len != 16) return -1;
  *member_id = get_u64le(buf);
  *cluster_id = get_u64le(buf + 8);
  return 0;
}
