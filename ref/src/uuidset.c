/* uuidset.c: a set of UUIDs (uuidset.h). */
#include "uuidset.h"

#include "canon.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* A peer chooses the UUIDs: the hash is keyed by a random seed. */
static size_t slot_of(const uuid_set *s, const uint8_t *uuid) {
  uint64_t h = (canon_get_u64(uuid) ^ s->seed) * 0x9E3779B97F4A7C15ull;
  h ^= canon_get_u64(uuid + 8) + (h >> 29);
  h *= 0xBF58476D1CE4E5B9ull;
  return (size_t)(h ^ (h >> 31)) & (s->cap - 1);
}

static size_t find(const uuid_set *s, const uint8_t *uuid) {
  size_t i = slot_of(s, uuid);
  while (s->used[i] && memcmp(s->slots[i], uuid, LIPSYNC_UUID_LEN) != 0)
    i = (i + 1) & (s->cap - 1);
  return i;
}

static int grow(uuid_set *s) {
  uuid_set bigger = {.cap = s->cap ? s->cap * 2 : 64, .seed = s->seed};
  if (!s->cap &&
      RAND_bytes((unsigned char *)&bigger.seed, sizeof bigger.seed) != 1)
    bigger.seed = (uint64_t)(uintptr_t)s;
  bigger.slots = malloc(bigger.cap * sizeof *bigger.slots);
  bigger.used = calloc(bigger.cap, 1);
  if (!bigger.slots || !bigger.used) {
    uuid_set_free(&bigger);
    return LIPSYNC_ERR_NOMEM;
  }
  for (size_t i = 0; i < s->cap; i++)
    if (s->used[i]) {
      size_t j = find(&bigger, s->slots[i]);
      memcpy(bigger.slots[j], s->slots[i], LIPSYNC_UUID_LEN);
      bigger.used[j] = 1;
    }
  bigger.n = s->n;
  uuid_set_free(s);
  *s = bigger;
  return 0;
}

int uuid_set_add(uuid_set *s, const uint8_t *uuid) {
  if ((s->n + 1) * 4 > s->cap * 3 && grow(s) != 0)
    return LIPSYNC_ERR_NOMEM;
  size_t i = find(s, uuid);
  if (s->used[i])
    return 0;
  memcpy(s->slots[i], uuid, LIPSYNC_UUID_LEN);
  s->used[i] = 1;
  s->n++;
  return 1;
}

bool uuid_set_has(const uuid_set *s, const uint8_t *uuid) {
  return s->cap && s->used[find(s, uuid)];
}

void uuid_set_free(uuid_set *s) {
  free(s->slots);
  free(s->used);
  memset(s, 0, sizeof *s);
}
