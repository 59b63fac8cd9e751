/*
 * uuidset.h: a set of 16-byte UUIDs (open addressing), for what a session
 * must remember per UUID while it runs: the rows it applied, the UUIDs the
 * peer listed as changed. It grows with what the session moves, never with
 * the table.
 */
#ifndef LIPSYNC_UUIDSET_H
#define LIPSYNC_UUIDSET_H

#include "lipsync.h"

#include <stdbool.h>

typedef struct uuid_set {
  uint8_t (*slots)[LIPSYNC_UUID_LEN];
  uint8_t *used;
  size_t n, cap; /* cap: a power of two, or 0 */
  uint64_t seed;
} uuid_set;

/* Adds |uuid|: 1 if it was new, 0 if it was there, or LIPSYNC_ERR_NOMEM. */
int uuid_set_add(uuid_set *s, const uint8_t *uuid);
bool uuid_set_has(const uuid_set *s, const uint8_t *uuid);
void uuid_set_free(uuid_set *s);

#endif
