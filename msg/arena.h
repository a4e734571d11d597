/*
 * arena.h -- bump allocator for one request's decoded and response structs.
 *
 * A request handler allocates everything its response points to (KeyValue
 * arrays, nested responses, copies of keys) from one arena and drops it all
 * at once after the response is packed. Chunks are malloc'd as needed and
 * kept for reuse by arena_reset(); nothing is freed piecemeal.
 *
 * Not thread-safe: an arena belongs to the one thread that uses it.
 */
#ifndef CETCD_MSG_ARENA_H
#define CETCD_MSG_ARENA_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

typedef struct arena_chunk arena_chunk;

typedef struct arena {
  arena_chunk *head;      /* chunk being carved */
  arena_chunk *spare;     /* chunks kept by arena_reset for reuse */
  size_t chunk_bytes;     /* default chunk size */
  size_t used_bytes;      /* total handed out since the last reset */
  ProtobufCAllocator pb;  /* protobuf-c allocator view: unpack into the arena */
} arena;

void arena_init(arena *a, size_t chunk_bytes);
/* 16-byte aligned; NULL only when malloc fails. */
void *arena_alloc(arena *a, size_t n);
void *arena_calloc(arena *a, size_t n);
void *arena_memdup(arena *a, const void *p, size_t n);
/* Forget every allocation, keep the memory for the next request. */
void arena_reset(arena *a);
void arena_free(arena *a);

#endif
