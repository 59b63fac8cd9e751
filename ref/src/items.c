/* items.c: the sorted item snapshot of a table (items.h). */
#include "items.h"

#include "buf.h"
#include "decide.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int item_cmp(const void *a, const void *b) {
  return memcmp(a, b, LIPSYNC_UUID_LEN);
}

static int items_push(item_index *idx, const lipsync_item *in, canon_hasher *h,
                      bool with_base) {
  if (idx->n == idx->cap) {
    size_t cap = idx->cap ? idx->cap * 2 : 1024;
    item *v = realloc(idx->v, cap * sizeof *v);
    if (!v)
      return LIPSYNC_ERR_NOMEM;
    idx->v = v;
    idx->cap = cap;
  }
  item *it = &idx->v[idx->n];
  memcpy(it->uuid, in->uuid, LIPSYNC_UUID_LEN);
  memcpy(it->site, in->version.site, LIPSYNC_SITE_LEN);
  it->clock = in->version.clock;
  it->flags = in->deleted ? ITEM_DELETED : 0;
  it->base = 0;
  if (with_base && version_is_zero(&in->base)) {
    it->base = ITEM_BASE_ZERO; /* the common case needs no entry in bases */
  } else if (with_base && lipsync_version_cmp(&in->base, &in->version) != 0) {
    if (vec_reserve((void **)&idx->bases, &idx->cap_bases, idx->nbases + 1,
                    sizeof *idx->bases))
      return LIPSYNC_ERR_NOMEM;
    idx->bases[idx->nbases++] = in->base;
    it->base = (uint32_t)idx->nbases;
  }
  int rc = canon_item_digest(h, it->uuid, &in->version, in->deleted != 0,
                             it->digest);
  if (rc)
    return rc;
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
               canon_hasher *h, bool with_base, char *errbuf, size_t errlen) {
  lipsync_cursor *cur;
  lipsync_item in;
  int rc;

  idx->n = 0;
  rc = store_scan_items(store, table, &cur);
  if (rc) {
    snprintf(errbuf, errlen, "%s", store_errmsg(store));
    return rc;
  }
  while ((rc = store_next_item(store, cur, &in)) > 0)
    if ((rc = items_push(idx, &in, h, with_base)) != 0)
      break;
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

static bool to_hide(const item *it, uint64_t horizon, bool clean_only) {
  return (it->flags & ITEM_DELETED) && it->clock < horizon &&
         (!clean_only || it->base == 0);
}

int items_hide_old_tombstones(item_index *idx, uint64_t horizon,
                              bool clean_only) {
  size_t n = 0, k = 0;
  for (size_t i = 0; i < idx->n; i++)
    n += to_hide(&idx->v[i], horizon, clean_only);
  if (n == 0)
    return 0;
  idx->hidden = malloc(n * sizeof *idx->hidden);
  if (!idx->hidden)
    return LIPSYNC_ERR_NOMEM;
  for (size_t i = 0; i < idx->n; i++) {
    const item *it = &idx->v[i];
    if (to_hide(it, horizon, clean_only))
      memcpy(idx->hidden[idx->nhidden++], it->uuid, LIPSYNC_UUID_LEN);
    else
      idx->v[k++] = *it;
  }
  idx->n = k;
  return 0;
}

bool items_hidden(const item_index *idx, const uint8_t *uuid) {
  size_t lo = 0, hi = idx->nhidden;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = memcmp(idx->hidden[mid], uuid, LIPSYNC_UUID_LEN);
    if (c == 0)
      return true;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

void items_free(item_index *idx) {
  free(idx->v);
  free(idx->bases);
  free(idx->hidden);
  memset(idx, 0, sizeof *idx);
}

void item_version(const item *it, lipsync_version *out) {
  out->clock = it->clock;
  memcpy(out->site, it->site, LIPSYNC_SITE_LEN);
}

void item_base(const item_index *idx, const item *it, lipsync_version *out) {
  if (it->base == ITEM_BASE_ZERO)
    memset(out, 0, sizeof *out);
  else if (it->base)
    *out = idx->bases[it->base - 1];
  else
    item_version(it, out);
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
