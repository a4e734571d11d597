/*
 * pbscan.h -- reading just the fields the bench needs from a protobuf
 * message, in place.
 *
 * watch-latency receives tens of millions of WatchResponses; unpacking
 * each with protobuf-c would malloc a tree per message and decode the
 * header, key and value the bench does not look at. These functions walk
 * the wire format ((buf, len) in, fields out, no allocation, no state) and
 * pick out what is needed: the watch id and flags of a WatchResponse, and
 * per event its type, key, mod_revision and the first 8 bytes of its
 * value (where the bench writes the put's sequence number). Unknown fields
 * are skipped, as protobuf requires. Pure: tests/unit/test_bench_pbscan.c.
 */
#ifndef CETCD_BENCH_PBSCAN_H
#define CETCD_BENCH_PBSCAN_H

#include <stddef.h>
#include <stdint.h>

/* One field of a message. Varint and fixed fields: v. Length-delimited
 * (wire type 2): p, len. */
typedef struct pb_field {
  uint32_t num;
  int wire; /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  uint64_t v;
  const uint8_t *p;
  size_t len;
} pb_field;

/* Reads the field at *pos and moves *pos past it. Returns 1, 0 at the end
 * of buf, -1 if the bytes are not a valid field (groups included). */
int pb_next(const uint8_t *buf, size_t len, size_t *pos, pb_field *f);

/* A WatchResponse's scalars (rpc.proto field numbers). */
typedef struct pb_watch_resp {
  int64_t watch_id;   /* 2 */
  int created;        /* 3 */
  int canceled;       /* 4 */
  int64_t compact_revision; /* 5 */
  const uint8_t *cancel_reason; /* 6, not NUL-terminated */
  size_t cancel_reason_len;
  int64_t header_revision; /* header (1) . revision (3) */
  int n_events;       /* 11, repeated */
} pb_watch_resp;

/* One event (kv.proto's Event and its KeyValue). */
typedef struct pb_watch_event {
  int type;             /* 0 PUT, 1 DELETE */
  const uint8_t *key;   /* into the message */
  size_t key_len;
  int64_t mod_revision;
  uint64_t value_seq;   /* the value's first 8 bytes, little-endian (0 if shorter) */
  size_t value_len;
} pb_watch_event;

/* Fills *r from a WatchResponse; returns 0, or -1 if it does not parse. */
int pb_watch_resp_scan(const uint8_t *buf, size_t len, pb_watch_resp *r);

/* Calls cb for each event of a WatchResponse, in order; returns the number
 * of events, or -1 if one does not parse (cb has run for those before). */
int pb_watch_events(const uint8_t *buf, size_t len,
                    void (*cb)(void *ud, const pb_watch_event *ev), void *ud);

/* From a Maintenance StatusResponse: header.member_id and leader. Returns
 * 0, or -1 if it does not parse. */
int pb_status_scan(const uint8_t *buf, size_t len, uint64_t *member_id, uint64_t *leader);

#endif /* CETCD_BENCH_PBSCAN_H */
