/* buf.c: growable byte buffers and the per-frame arena (buf.h). */
#include "buf.h"

#include "lipsync.h"

#include <stdlib.h>
#include <string.h>

int bytebuf_reserve(bytebuf *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < extra) {
    if (cap > SIZE_MAX / 2)
      return LIPSYNC_ERR_NOMEM;
    cap *= 2;
  }
  uint8_t *p = realloc(b->data, cap);
  if (!p)
    return LIPSYNC_ERR_NOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

int bytebuf_append(bytebuf *b, const void *data, size_t len) {
  int rc = bytebuf_reserve(b, len);
  if (rc)
    return rc;
  if (len)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

void bytebuf_consume(bytebuf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void bytebuf_free(bytebuf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

struct arena_chunk {
  arena_chunk *next;
  size_t size, off;
  max_align_t data[];
};

#define ARENA_CHUNK (256u * 1024u)
#define ALIGN (sizeof(max_align_t))

static void *pb_alloc(void *data, size_t size) {
  return arena_alloc(data, size);
}

static void pb_free(void *data, void *ptr) {
  (void)data; /* arena memory goes back on reset */
  (void)ptr;
}

void arena_init(arena *a) {
  memset(a, 0, sizeof *a);
  a->pb.alloc = pb_alloc;
  a->pb.free = pb_free;
  a->pb.allocator_data = a;
}

void *arena_alloc(arena *a, size_t n) {
  n = (n + ALIGN - 1) / ALIGN * ALIGN;
  if (n == 0)
    n = ALIGN;
  arena_chunk *c = a->head;
  if (!c || c->size - c->off < n) {
    size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
    if (a->limit && (size > a->limit || a->bytes > a->limit - size)) {
      a->failed = a->over_limit = 1;
      return NULL;
    }
    c = malloc(sizeof *c + size);
    if (!c) {
      a->failed = 1;
      return NULL;
    }
    a->bytes += size;
    c->size = size;
    c->off = 0;
    c->next = a->head;
    a->head = c;
  }
  void *p = (char *)c->data + c->off;
  c->off += n;
  a->used += n;
  return p;
}

void *arena_memdup(arena *a, const void *p, size_t n) {
  void *q = arena_alloc(a, n);
  if (q && n)
    memcpy(q, p, n);
  return q;
}

static void free_chunks(arena_chunk *c) {
  while (c) {
    arena_chunk *next = c->next;
    free(c);
    c = next;
  }
}

void arena_reset(arena *a) {
  /* Keep the largest chunk for the next frame; free the rest. */
  arena_chunk *keep = NULL, *c = a->head;
  while (c) {
    arena_chunk *next = c->next;
    if (!keep || c->size > keep->size) {
      free(keep);
      keep = c;
    } else {
      free(c);
    }
    c = next;
  }
  a->head = keep;
  a->bytes = 0;
  if (keep) {
    keep->off = 0;
    keep->next = NULL;
    a->bytes = keep->size;
  }
  a->used = 0;
  a->failed = 0;
  a->over_limit = 0;
}

void arena_free(arena *a) {
  free_chunks(a->head);
  a->head = NULL;
  a->bytes = 0;
}

int vec_reserve(void **v, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 16;
  while (n < need)
    n *= 2;
  if (n > SIZE_MAX / elem)
    return LIPSYNC_ERR_NOMEM;
  void *p = realloc(*v, n * elem);
  if (!p)
    return LIPSYNC_ERR_NOMEM;
  *v = p;
  *cap = n;
  return 0;
}
