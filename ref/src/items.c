/* items.c: my table's items, read through the store (items.h). */
#include "items.h"

#include "decide.h"
#include "fault.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int items_digest(item_view *v, const lipsync_item *it,
                 uint8_t out[LIPSYNC_DIGEST_LEN]) {
  return canon_item_digest(v->hasher, it->uuid, &it->version, it->deleted != 0,
                           out);
}

static bool clean(const lipsync_item *it) {
  return lipsync_version_cmp(&it->version, &it->base) == 0;
}

bool items_hidden(const item_view *v, const lipsync_item *it) {
  return it->deleted && it->version.clock < v->horizon &&
         (!v->client || clean(it));
}

int items_open(item_view *v, lipsync_store *store, lipsync_table *table,
               canon_hasher *h, bool client, uint64_t horizon, char *errbuf,
               size_t errlen) {
  lipsync_summary sum;
  lipsync_cursor *c;
  lipsync_item it;
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  int rc;

  memset(v, 0, sizeof *v);
  v->store = store;
  v->table = table;
  v->hasher = h;
  v->client = client;
  v->horizon = horizon;
  if ((rc = store_summarize(store, table, &sum)) != 0) {
    snprintf(errbuf, errlen, "%s", store_errmsg(store));
    return rc;
  }
  canon_fp_load(&v->visible, &sum);
  v->final = v->visible;
  v->total = sum.count;
  /* Old tombstones are in the summary but neither in the final item set
   * nor, unless a client has not synced them yet, in the visible one. */
  if (horizon == 0)
    return 0;
  if ((rc = store_scan_tombstones(store, table, horizon, &c)) != 0) {
    snprintf(errbuf, errlen, "%s", store_errmsg(store));
    return rc;
  }
  while ((rc = store_next_item(store, c, &it)) > 0) {
    if ((rc = items_digest(v, &it, digest)) != 0)
      break;
    canon_fp_sub(&v->final, digest);
    if (items_hidden(v, &it))
      canon_fp_sub(&v->visible, digest);
  }
  store_close_cursor(store, c);
  if (rc < 0)
    snprintf(errbuf, errlen, "table %s: %s", table->name, store_errmsg(store));
  return rc < 0 ? rc : 0;
}

int items_scan(item_view *v, const uint8_t *lower, const uint8_t *upper,
               item_cursor *out) {
  out->view = v;
  out->lower = lower;
  return store_scan_item_range(v->store, v->table, lower, upper, &out->cursor);
}

int items_changes(item_view *v, const lipsync_position *since,
                  item_cursor *out) {
  out->view = v;
  out->lower = NULL;
  return store_scan_changes(v->store, v->table, since, &out->cursor);
}

int items_next(item_cursor *c, lipsync_item *it,
               uint8_t digest[LIPSYNC_DIGEST_LEN]) {
  int rc;
  while ((rc = store_next_item(c->view->store, c->cursor, it)) > 0) {
    if (items_hidden(c->view, it))
      continue;
    if (c->lower && fault_on("range-exclusive-lower") && /* self-test */
        memcmp(it->uuid, c->lower, LIPSYNC_UUID_LEN) == 0)
      continue;
    if (digest && (rc = items_digest(c->view, it, digest)) != 0)
      return rc;
    return 1;
  }
  return rc;
}

void items_close(item_cursor *c) {
  if (c->cursor)
    store_close_cursor(c->view->store, c->cursor);
  c->cursor = NULL;
}

int items_fingerprint(item_view *v, const uint8_t *lower, const uint8_t *upper,
                      canon_fp *out) {
  item_cursor c;
  lipsync_item it;
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  int rc;
  if (!lower && !upper) {
    *out = v->visible;
    return 0;
  }
  canon_fp_init(out);
  if ((rc = items_scan(v, lower, upper, &c)) != 0)
    return rc;
  while ((rc = items_next(&c, &it, digest)) > 0)
    canon_fp_add(out, digest);
  items_close(&c);
  return rc;
}

static int uuid_cmp(const void *a, const void *b) {
  return memcmp(a, b, LIPSYNC_UUID_LEN);
}

void items_sort_uuids(uint8_t (*uuids)[LIPSYNC_UUID_LEN], size_t n) {
  if (n > 1)
    qsort(uuids, n, LIPSYNC_UUID_LEN, uuid_cmp);
}

int items_lookup(item_view *v, const uint8_t *uuids, size_t n,
                 items_found_fn found, void *arg) {
  uint8_t(*sorted)[LIPSYNC_UUID_LEN];
  lipsync_cursor *c;
  lipsync_item it;
  int rc;
  if (n == 0)
    return 0;
  if (!(sorted = malloc(n * LIPSYNC_UUID_LEN)))
    return LIPSYNC_ERR_NOMEM;
  memcpy(sorted, uuids, n * LIPSYNC_UUID_LEN);
  items_sort_uuids(sorted, n);
  size_t k = 0; /* each once */
  for (size_t i = 0; i < n; i++)
    if (k == 0 || memcmp(sorted[k - 1], sorted[i], LIPSYNC_UUID_LEN) != 0)
      memmove(sorted[k++], sorted[i], LIPSYNC_UUID_LEN);
  n = k;
  rc = store_lookup_items(v->store, v->table, (const uint8_t *)sorted, n, &c);
  free(sorted);
  if (rc)
    return rc;
  while ((rc = store_next_item(v->store, c, &it)) > 0)
    if ((rc = found(arg, &it)) != 0)
      break;
  store_close_cursor(v->store, c);
  return rc < 0 ? rc : 0;
}
