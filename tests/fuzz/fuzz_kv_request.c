/*
 * fuzz_kv_request.c -- arbitrary bytes as each KV request the net loop
 * decodes (protobuf-c unpack into an arena) and then etcd's gRPC-layer
 * checks (nested txns, duplicate-key intervals), and as the Raft log payload
 * the apply actor decodes. None of it may crash, hang or leak.
 *
 * The first byte picks the message type; the rest is the message.
 */
#include <stddef.h>
#include <stdint.h>

#include "internal.pb-c.h"
#include "msg/arena.h"
#include "store/mvcc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static arena a;
  static int init;
  if (!init) arena_init(&a, 64 * 1024), init = 1;
  arena_reset(&a);
  const uint8_t *msg = data + 1;
  size_t len = size - 1;
  switch (data[0] % 6) {
  case 0: {
    Etcdserverpb__RangeRequest *r = etcdserverpb__range_request__unpack(&a.pb, len, msg);
    if (r) (void)kv_validate_range(r);
    break;
  }
  case 1: {
    Etcdserverpb__PutRequest *r = etcdserverpb__put_request__unpack(&a.pb, len, msg);
    if (r) (void)kv_validate_put(r);
    break;
  }
  case 2: {
    Etcdserverpb__DeleteRangeRequest *r = etcdserverpb__delete_range_request__unpack(&a.pb, len, msg);
    if (r) (void)kv_validate_delete_range(r);
    break;
  }
  case 3: {
    Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(&a.pb, len, msg);
    if (r) (void)kv_validate_txn(r, 128);
    break;
  }
  case 4: {
    Etcdserverpb__CompactionRequest *r = etcdserverpb__compaction_request__unpack(&a.pb, len, msg);
    (void)r;
    break;
  }
  default: {
    Cetcdpb__InternalRequest *r = cetcdpb__internal_request__unpack(&a.pb, len, msg);
    (void)r;
    break;
  }
  }
  return 0;
}
