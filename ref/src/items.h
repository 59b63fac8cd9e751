/*
 * items.h: what the session knows of a table without its contents: one
 * item (UUID, version, deleted flag, and the client's base) per row or
 * tombstone, sorted by UUID (spec 8.1). It is read once per sync from the
 * backend's items and stays fixed for the session (a snapshot), so ranges
 * map to index intervals and every fingerprint, split or item list is
 * computed from memory, 64 bytes per row.
 */
#ifndef LIPSYNC_ITEMS_H
#define LIPSYNC_ITEMS_H

#include "canon.h"

#include <stdbool.h>

#define ITEM_DELETED 1u /* a tombstone */
#define ITEM_APPLIED 2u /* replaced in this session by the peer's row */
#define ITEM_BASE_ZERO UINT32_MAX /* item.base: never synced as a client */

typedef struct item {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  uint8_t digest[LIPSYNC_DIGEST_LEN]; /* item digest, spec 8.1 */
  uint8_t site[LIPSYNC_SITE_LEN];
  uint64_t clock;
  uint32_t base; /* 0: base == version; ITEM_BASE_ZERO: the zero version;
                    else 1 + index in item_index.bases */
  uint32_t flags;
} item;

typedef struct item_index {
  item *v;
  size_t n, cap;
  lipsync_version *bases; /* bases that differ from their version */
  size_t nbases, cap_bases;
  uint8_t (*hidden)[LIPSYNC_UUID_LEN]; /* items left out, sorted */
  size_t nhidden;
} item_index;

/* Reads every item of |table| and builds the sorted index, keeping bases
 * when |with_base| (the client). A duplicate UUID is a storage error.
 * |errbuf| receives the detail of a failure. */
int items_load(item_index *idx, lipsync_store *store, lipsync_table *table,
               canon_hasher *h, bool with_base, char *errbuf, size_t errlen);

/* Leaves out of the index the tombstones whose clock is below |horizon|:
 * all of them, or with |clean_only| those whose base equals their version
 * (spec 8.7). Their UUIDs stay findable with items_hidden(). Returns 0 or
 * LIPSYNC_ERR_NOMEM. */
int items_hide_old_tombstones(item_index *idx, uint64_t horizon,
                              bool clean_only);
bool items_hidden(const item_index *idx, const uint8_t *uuid);

void items_free(item_index *idx);

/* The version and base of |it| (base: the version itself when equal). */
void item_version(const item *it, lipsync_version *out);
void item_base(const item_index *idx, const item *it, lipsync_version *out);

/* Position of the first item whose UUID is >= |uuid|; |uuid| NULL means
 * the lowest possible UUID (position 0). */
size_t items_lower_bound(const item_index *idx, const uint8_t *uuid);

/* Position of |uuid|, or (size_t)-1 when absent. */
size_t items_find(const item_index *idx, const uint8_t *uuid);

/* Fingerprint accumulator of items [lo, hi). */
void items_fingerprint(const item_index *idx, size_t lo, size_t hi,
                       canon_fp *fp);

#endif
