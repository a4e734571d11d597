#include "msg/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
  arena_chunk *next;
  size_t size; /* bytes of data[] */
  size_t off;  /* bytes of data[] handed out */
  _Alignas(16) unsigned char data[];
};

static void *arena_pb_alloc(void *ctx, size_t n) { return arena_alloc(ctx, n); }
static void arena_pb_free(void *ctx, void *p) { (void)ctx, (void)p; }

void arena_init(arena *a, size_t chunk_bytes) {
  memset(a, 0, sizeof(*a));
  a->chunk_bytes = chunk_bytes ? chunk_bytes : 16384;
  a->pb.alloc = arena_pb_alloc;
  a->pb.free = arena_pb_free;
  a->pb.allocator_data = a;
}

static arena_chunk *chunk_new(arena *a, size_t need) {
  arena_chunk *c = a->spare;
  if (c && c->size >= need) {
    a->spare = c->next;
  } else {
    size_t size = need > a->chunk_bytes ? need : a->chunk_bytes;
    c = malloc(sizeof(*c) + size);
    if (!c) return NULL;
    c->size = size;
  }
  c->off = 0;
  c->next = a->head;
  a->head = c;
  return c;
}

void *arena_alloc(arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n == 0) n = 16;
  arena_chunk *c = a->head;
  if (!c || c->size - c->off < n) {
    c = chunk_new(a, n);
    if (!c) return NULL;
  }
  void *p = c->data + c->off;
  c->off += n;
  a->used_bytes += n;
  return p;
}

void *arena_calloc(arena *a, size_t n) {
  void *p = arena_alloc(a, n);
  if (p) memset(p, 0, n);
  return p;
}

void *arena_memdup(arena *a, const void *src, size_t n) {
  void *p = arena_alloc(a, n);
  if (p && n) memcpy(p, src, n);
  return p;
}

void arena_reset(arena *a) {
  /* Keep at most a few chunks: an unusually big response must not pin memory. */
  size_t kept = 0;
  while (a->head) {
    arena_chunk *c = a->head;
    a->head = c->next;
    if (kept < 4 && c->size <= 4 * a->chunk_bytes) {
      c->next = a->spare;
      a->spare = c;
      kept++;
    } else {
      free(c);
    }
  }
  a->used_bytes = 0;
}

void arena_free(arena *a) {
  arena_reset(a);
  while (a->spare) {
    arena_chunk *c = a->spare;
    a->spare = c->next;
    free(c);
  }
}
