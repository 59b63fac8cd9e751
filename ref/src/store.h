/*
 * store.h: the core's only way into a storage backend. Each wrapper checks
 * the method's contract (in debug builds) so the session never calls a
 * method pointer directly, as SQLite's sqlite3Os* wrappers do for its VFS.
 */
#ifndef LIPSYNC_STORE_H
#define LIPSYNC_STORE_H

#include "fault.h"
#include "lipsync.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

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
  fault_point("write");
  return s->methods->insert(s, t, row);
}
static inline int store_flush(lipsync_store *s) {
  return s->methods->flush ? s->methods->flush(s) : 0;
}
static inline int store_update(lipsync_store *s, lipsync_table *t,
                               const lipsync_row *row) {
  assert(row->deleted || row->nvalues == t->ncolumns);
  fault_point("write");
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
/* Version 3 (the session requires it). */
static inline int store_begin_read(lipsync_store *s) {
  return s->methods->begin_read(s);
}
static inline int store_begin_write(lipsync_store *s) {
  return s->methods->begin_write(s);
}
static inline int store_position(lipsync_store *s, lipsync_table *t,
                                 lipsync_position *out) {
  out->len = 0;
  int rc = s->methods->position(s, t, out);
  assert(rc || out->len <= LIPSYNC_POSITION_MAX);
  return rc;
}
static inline int store_scan_changes(lipsync_store *s, lipsync_table *t,
                                     const lipsync_position *since,
                                     lipsync_cursor **out) {
  *out = NULL;
  return s->methods->scan_changes(s, t, since, out);
}
static inline int store_scan_item_range(lipsync_store *s, lipsync_table *t,
                                        const uint8_t *lower,
                                        const uint8_t *upper,
                                        lipsync_cursor **out) {
  *out = NULL;
  return s->methods->scan_item_range(s, t, lower, upper, out);
}
static inline int store_lookup_items(lipsync_store *s, lipsync_table *t,
                                     const uint8_t *uuids, size_t n,
                                     lipsync_cursor **out) {
  *out = NULL;
  return s->methods->lookup_items(s, t, uuids, n, out);
}
static inline int store_scan_tombstones(lipsync_store *s, lipsync_table *t,
                                        uint64_t clock, lipsync_cursor **out) {
  *out = NULL;
  return s->methods->scan_tombstones(s, t, clock, out);
}
static inline int store_summarize(lipsync_store *s, lipsync_table *t,
                                  lipsync_summary *out) {
  memset(out, 0, sizeof *out);
  return s->methods->summarize(s, t, out);
}
static inline int store_load_checkpoint(lipsync_store *s, lipsync_table *t,
                                        lipsync_checkpoint *out) {
  memset(out, 0, sizeof *out);
  return s->methods->load_checkpoint(s, t, out);
}
static inline int store_load_token(lipsync_store *s, lipsync_table *t,
                                   const uint8_t *site, uint8_t *token,
                                   int *found) {
  *found = 0;
  return s->methods->load_token(s, t, site, token, found);
}
static inline int store_distrust(lipsync_store *s, const char *name) {
  return s->methods->distrust(s, name);
}
static inline int store_recount(lipsync_store *s, lipsync_table *t) {
  return s->methods->recount(s, t);
}
/* Whether |s| is a backend the session can use. */
/* The methods version a session needs. */
#define STORE_SESSION_VERSION 3
static inline bool store_usable(const lipsync_store *s) {
  return s->methods->version >= STORE_SESSION_VERSION;
}
static inline const char *store_errmsg(lipsync_store *s) {
  const char *m = s->methods->errmsg(s);
  return m ? m : "";
}

#endif
