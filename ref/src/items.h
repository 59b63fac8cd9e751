/*
 * items.h: what the session knows of its own table without its contents:
 * the items (spec 8.1), read through the store whenever they are needed,
 * never held in memory. A view knows the session's visibility rule (spec
 * LS-TOMB-3), answers summaries of ranges (the whole table from the
 * backend's kept summary, a part by scanning it in UUID order), and looks
 * items up by UUID in batches.
 */
#ifndef LIPSYNC_ITEMS_H
#define LIPSYNC_ITEMS_H

#include "canon.h"

#include <stdbool.h>

typedef struct item_view {
  lipsync_store *store;
  lipsync_table *table;
  canon_hasher *hasher;
  bool client;      /* the client's rule: only clean old tombstones hide */
  uint64_t horizon; /* tombstones with a lower clock are old */
  uint64_t total;   /* items, old tombstones included */
  canon_fp visible; /* the visible item set at the start of the session */
  canon_fp final;   /* its final item set then (spec LS-VERIFY-5) */
} item_view;

/* A cursor over the visible items of a range, in UUID order. */
typedef struct item_cursor {
  item_view *view;
  lipsync_cursor *cursor;
  const uint8_t *lower; /* fault "range-exclusive-lower" only */
} item_cursor;

/* Reads the summary of |table| and its old tombstones. |errbuf| receives
 * the detail of a failure. */
int items_open(item_view *v, lipsync_store *store, lipsync_table *table,
               canon_hasher *h, bool client, uint64_t horizon, char *errbuf,
               size_t errlen);

/* Whether |it| is left out of the visible item set (an old tombstone). */
bool items_hidden(const item_view *v, const lipsync_item *it);

/* The fingerprint accumulator of my visible items in [lower, upper) (NULL:
 * unbounded): from the summary for the whole table, else by a scan. */
int items_fingerprint(item_view *v, const uint8_t *lower, const uint8_t *upper,
                      canon_fp *out);

/* Opens a cursor over my visible items in [lower, upper). */
int items_scan(item_view *v, const uint8_t *lower, const uint8_t *upper,
               item_cursor *out);
/* Opens a cursor over my visible items changed since |since|. */
int items_changes(item_view *v, const lipsync_position *since,
                  item_cursor *out);
/* The next item and its digest: 1, 0 at the end, or an error. */
int items_next(item_cursor *c, lipsync_item *it,
               uint8_t digest[LIPSYNC_DIGEST_LEN]);
void items_close(item_cursor *c);

/* Looks up the items of the |n| UUIDs at |uuids| (any order; it sorts a
 * copy) and calls |found| for each that exists (hidden ones included:
 * items_hidden tells), in UUID order. Stops at the first error |found|
 * returns (negative) and returns it. */
typedef int (*items_found_fn)(void *arg, const lipsync_item *it);
int items_lookup(item_view *v, const uint8_t *uuids, size_t n,
                 items_found_fn found, void *arg);

/* Sorts |n| 16-byte UUIDs in place. */
void items_sort_uuids(uint8_t (*uuids)[LIPSYNC_UUID_LEN], size_t n);

/* The item digest of |it|. Returns 0 or LIPSYNC_ERR_INTERNAL. */
int items_digest(item_view *v, const lipsync_item *it,
                 uint8_t out[LIPSYNC_DIGEST_LEN]);

#endif
