/*
 * items.h: what the session knows of a table without its contents: one
 * (UUID, digest) item per row, sorted by UUID (spec 8.1). It is read once
 * per sync with a sequential scan and stays fixed for the session (a
 * snapshot), so ranges map to index intervals and every fingerprint, split
 * or item list is computed from memory, 32 bytes per row.
 */
#ifndef LIPSYNC_ITEMS_H
#define LIPSYNC_ITEMS_H

#include "canon.h"

typedef struct item {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  uint8_t digest[LIPSYNC_DIGEST_LEN];
} item;

typedef struct item_index {
  item *v;
  size_t n, cap;
} item_index;

/* Reads every row of |table| and builds the sorted index. A duplicate UUID
 * is a storage error. |errbuf| receives the detail of a failure. */
int items_load(item_index *idx, lipsync_store *store, lipsync_table *table,
               canon_hasher *h, char *errbuf, size_t errlen);

void items_free(item_index *idx);

/* Position of the first item whose UUID is >= |uuid|; |uuid| NULL means
 * the lowest possible UUID (position 0). */
size_t items_lower_bound(const item_index *idx, const uint8_t *uuid);

/* Position of |uuid|, or (size_t)-1 when absent. */
size_t items_find(const item_index *idx, const uint8_t *uuid);

/* Fingerprint accumulator of items [lo, hi). */
void items_fingerprint(const item_index *idx, size_t lo, size_t hi,
                       canon_fp *fp);

#endif
