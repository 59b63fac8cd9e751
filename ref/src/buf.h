/*
 * buf.h: the two memory tools of the core. A bytebuf is a growable byte
 * array (outgoing frames, a frame being received). An arena is a bump
 * allocator handed to protobuf-c, so decoding or building a frame of a
 * thousand rows costs a few large allocations instead of thousands of
 * small ones; it is reset after each frame.
 */
#ifndef LIPSYNC_BUF_H
#define LIPSYNC_BUF_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bytebuf {
  uint8_t *data;
  size_t len, cap;
} bytebuf;

/* Makes room for |extra| more bytes. Returns 0 or LIPSYNC_ERR_NOMEM. */
int bytebuf_reserve(bytebuf *b, size_t extra);
int bytebuf_append(bytebuf *b, const void *data, size_t len);
/* Drops the first |n| bytes. */
void bytebuf_consume(bytebuf *b, size_t n);
void bytebuf_free(bytebuf *b);

typedef struct arena_chunk arena_chunk;

typedef struct arena {
  arena_chunk *head;     /* chunk being filled, then older ones */
  size_t used;           /* bytes handed out since the last reset */
  size_t bytes;          /* bytes of the chunks it holds */
  size_t limit;          /* bound on |bytes|, or 0 */
  int failed;            /* an allocation failed since the last reset */
  int over_limit;        /* ... because of |limit| */
  ProtobufCAllocator pb; /* protobuf-c allocator backed by this arena */
} arena;

void arena_init(arena *a);
/* Returns |n| bytes aligned for any type, or NULL. */
void *arena_alloc(arena *a, size_t n);
void *arena_memdup(arena *a, const void *p, size_t n);
/* Forgets every allocation, keeping one chunk for reuse. */
void arena_reset(arena *a);
void arena_free(arena *a);

/* Grows the array |*v| of |elem|-byte elements to hold |need| elements.
 * Returns 0 or LIPSYNC_ERR_NOMEM. */
int vec_reserve(void **v, size_t *cap, size_t need, size_t elem);
#endif
