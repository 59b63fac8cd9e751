/* items.c: the sorted (UUID, digest) snapshot of a table (items.h). */
#include "items.h"

#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int item_cmp(const void *a, const void *b) {
  return memcmp(a, b, LIPSYNC_UUID_LEN);
}

static int items_push(item_index *idx, const uint8_t *uuid,
                      const uint8_t *digest) {
  if (idx->n == idx->cap) {
    size_t cap = idx->cap ? idx->cap * 2 : 1024;
    item *v = realloc(idx->v, cap * sizeof *v);
    if (!v)
      return LIPSYNC_ERR_NOMEM;
    idx->v = v;
    idx->cap = cap;
  }
  memcpy(idx->v[idx->n].uuid, uuid, LIPSYNC_UUID_LEN);
  memcpy(idx->v[idx->n].digest, digest, LIPSYNC_DIGEST_LEN);
  idx->n++;
  return 0;
}

/* Sorts by UUID: one in-place pass of American flag sort on the first byte
 * (UUIDs are random, so the 256 buckets come out even), then each bucket
 * with qsort, whose scratch space is then a bucket's, not the table's. */
static void items_sort(item *v, size_t n) {
  size_t count[256] = {0}, start[257], next[256];
  if (n < 4096) {
    if (n > 1)
      qsort(v, n, sizeof *v, item_cmp);
    return;
  }
  for (size_t i = 0; i < n; i++)
    count[v[i].uuid[0]]++;
  start[0] = 0;
  for (int b = 0; b < 256; b++)
    start[b + 1] = start[b] + count[b];
  memcpy(next, start, sizeof next);
  for (int b = 0; b < 256; b++) {
    while (next[b] < start[b + 1]) {
      item *x = &v[next[b]];
      int dst = x->uuid[0];
      if (dst == b) {
        next[b]++;
        continue;
      }
      item tmp = v[next[dst]];
      v[next[dst]++] = *x;
      *x = tmp;
    }
  }
  for (int b = 0; b < 256; b++)
    if (count[b] > 1)
      qsort(v + start[b], count[b], sizeof *v, item_cmp);
}

int items_load(item_index *idx, lipsync_store *store, lipsync_table *table,
               canon_hasher *h, char *errbuf, size_t errlen) {
  lipsync_cursor *cur;
  lipsync_row row;
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  int rc;

  idx->n = 0;
  rc = store_scan(store, table, NULL, NULL, &cur);
  if (rc) {
    snprintf(errbuf, errlen, "%s", store_errmsg(store));
    return rc;
  }
  while ((rc = store_next(store, cur, &row)) > 0) {
    rc = canon_row_digest(h, &row, digest);
    if (!rc)
      rc = items_push(idx, row.uuid, digest);
    if (rc)
      break;
  }
  if (rc < 0) {
    snprintf(errbuf, errlen, "table %s: %s", table->name,
             rc == LIPSYNC_ERR_NOMEM ? "out of memory" : store_errmsg(store));
    store_close_cursor(store, cur);
    return rc;
  }
  store_close_cursor(store, cur);
  items_sort(idx->v, idx->n);
  for (size_t i = 1; i < idx->n; i++) {
    if (memcmp(idx->v[i - 1].uuid, idx->v[i].uuid, LIPSYNC_UUID_LEN) == 0) {
      char text[37];
      lipsync_uuid_format(idx->v[i].uuid, text);
      snprintf(errbuf, errlen, "table %s: duplicate _lipsync_uuid %s",
               table->name, text);
      return LIPSYNC_ERR_STORAGE;
    }
  }
  return 0;
}

void items_free(item_index *idx) {
  free(idx->v);
  memset(idx, 0, sizeof *idx);
}

size_t items_lower_bound(const item_index *idx, const uint8_t *uuid) {
  size_t lo = 0, hi = idx->n;
  if (!uuid)
    return 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (memcmp(idx->v[mid].uuid, uuid, LIPSYNC_UUID_LEN) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

size_t items_find(const item_index *idx, const uint8_t *uuid) {
  size_t pos = items_lower_bound(idx, uuid);
  if (pos < idx->n && memcmp(idx->v[pos].uuid, uuid, LIPSYNC_UUID_LEN) == 0)
    return pos;
  return (size_t)-1;
}

void items_fingerprint(const item_index *idx, size_t lo, size_t hi,
                       canon_fp *fp) {
  canon_fp_init(fp);
  for (size_t i = lo; i < hi; i++)
    canon_fp_add(fp, idx->v[i].digest);
}
