/*
 * store.h: the core's only way into a storage backend. Each wrapper checks
 * the method's contract (in debug builds) so the session never calls a
 * method pointer directly, as SQLite's sqlite3Os* wrappers do for its VFS.
 */
#ifndef LIPSYNC_STORE_H
#define LIPSYNC_STORE_H

#include "lipsync.h"

#include <assert.h>
#include <stdbool.h>

static inline int store_begin(lipsync_store *s) {
  return s->methods->begin(s);
}
static inline int store_commit(lipsync_store *s) {
  return s->methods->commit(s);
}
static inline int store_rollback(lipsync_store *s) {
  return s->methods->rollback(s);
}
static inline int store_open_table(lipsync_store *s, const char *name,
                                   lipsync_table **out) {
  *out = NULL;
  return s->methods->open_table(s, name, out);
}
static inline int store_prepare_table(lipsync_store *s, lipsync_table *t) {
  return s->methods->prepare_table(s, t);
}
static inline int store_scan(lipsync_store *s, lipsync_table *t,
                             const uint8_t *lower, const uint8_t *upper,
                             lipsync_cursor **out) {
  *out = NULL;
  return s->methods->scan(s, t, lower, upper, out);
}
static inline int store_next(lipsync_store *s, lipsync_cursor *c,
                             lipsync_row *row) {
  int rc = s->methods->next(c, row);
  assert(rc <= 0 || row->nvalues == c->table->ncolumns);
  return rc;
}
static inline void store_close_cursor(lipsync_store *s, lipsync_cursor *c) {
  if (c)
    s->methods->close_cursor(c);
}
static inline bool store_can_scan_uuids(lipsync_store *s) {
  return s->methods->scan_uuids != NULL;
}
static inline int store_scan_uuids(lipsync_store *s, lipsync_table *t,
                                   const uint8_t *uuids, size_t n,
                                   lipsync_cursor **out) {
  *out = NULL;
  return s->methods->scan_uuids(s, t, uuids, n, out);
}
static inline int store_fetch(lipsync_store *s, lipsync_table *t,
                              const uint8_t *uuid, lipsync_row *row) {
  int rc = s->methods->fetch(s, t, uuid, row);
  assert(rc != 0 || row->nvalues == t->ncolumns);
  return rc;
}
static inline int store_insert(lipsync_store *s, lipsync_table *t,
                               const lipsync_row *row) {
  assert(row->deleted || row->nvalues == t->ncolumns);
  return s->methods->insert(s, t, row);
}
static inline int store_flush(lipsync_store *s) {
  return s->methods->flush ? s->methods->flush(s) : 0;
}
static inline int store_update(lipsync_store *s, lipsync_table *t,
                               const lipsync_row *row) {
  assert(row->deleted || row->nvalues == t->ncolumns);
  return s->methods->update(s, t, row);
}
static inline int store_scan_items(lipsync_store *s, lipsync_table *t,
                                   lipsync_cursor **out) {
  *out = NULL;
  return s->methods->scan_items(s, t, out);
}
static inline int store_next_item(lipsync_store *s, lipsync_cursor *c,
                                  lipsync_item *out) {
  return s->methods->next_item(c, out);
}
static inline int store_finish_table(lipsync_store *s, lipsync_table *t,
                                     const lipsync_finish *f) {
  return s->methods->finish_table(s, t, f);
}
static inline int store_tick(lipsync_store *s, lipsync_version *out) {
  return s->methods->tick(s, out);
}
static inline int store_list_tables(lipsync_store *s, const char *const **names,
                                    size_t *count) {
  *names = NULL;
  *count = 0;
  if (!s->methods->list_tables)
    return LIPSYNC_ERR_INTERNAL;
  return s->methods->list_tables(s, names, count);
}
static inline const char *store_errmsg(lipsync_store *s) {
  const char *m = s->methods->errmsg(s);
  return m ? m : "";
}

#endif
