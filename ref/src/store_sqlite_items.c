/*
 * store_sqlite_items.c: the items (the rows of "_lipsync_meta_T") that the
 * SQLite backend's insert and update write for the peer's rows, the update
 * of a row that already has an item, and scan_items.
 *
 * The session writes rows under _lipsync_state.applying = 1, so the
 * capture triggers stay quiet and each item takes the version the peer
 * sent. A bulk load into an empty table (the first sync of a million rows)
 * would insert its items in random UUID order into the metadata table's
 * B-tree, several times slower than in order, and once that B-tree
 * outgrows the page cache its pages are written and read back over and
 * over. They are appended to a TEMP staging table instead and join the
 * metadata table in one INSERT ... SELECT ... ORDER BY uuid (SQLite's
 * external sorter, bounded memory) when the indexes set aside are built
 * (sq_need_index), as its rows' indexes do.
 */
#include "store_sqlite_int.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Prepares the statement sqlite3_mprintf() formats from |fmt| (%w and %q
 * are SQLite's, so the compiler cannot check the format). */
static int prepare_mprintf(sqlite_store *s, sqlite_table *t, sqlite3_stmt **out,
                           const char *what, const char *fmt, ...) {
  va_list ap;
  char *sql;
  int rc;
  va_start(ap, fmt);
  sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  if (!sql)
    return sq_fail_nomem(s);
  rc = sq_prepare(s, sql, out);
  sqlite3_free(sql);
  return rc == SQLITE_OK ? 0 : sq_fail_db(s, t->name, what);
}

/* Binds ?1 uuid (t->insert_key), ?2 clock, ?3 site, ?4 deleted, runs |st|
 * and resets it. */
static int write_item(sqlite_store *s, sqlite_table *t, sqlite3_stmt *st,
                      const lipsync_row *row) {
  int rc;
  sqlite3_bind_text(st, 1, t->insert_key, UUID_TEXT_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)row->version.clock);
  sqlite3_bind_blob(st, 3, row->version.site, LIPSYNC_SITE_LEN,
                    SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 4, row->deleted ? 1 : 0);
  rc = sqlite3_step(st);
  if (rc != SQLITE_DONE)
    rc = sq_fail(s, sq_code(sqlite3_extended_errcode(s->db)),
                 "table %s: item %s: %s", t->name, t->insert_key,
                 sqlite3_errmsg(s->db));
  else
    rc = 0;
  sqlite3_reset(st);
  return rc;
}

/* A table never synced as a client reports every base as zero
 * (sq_items_next); its new items store base = version, so that its first
 * sync as a client, which sets every base to its version, rewrites only
 * the items that differ. */
static bool base_is_version(const sqlite_table *t) {
  return t->base.last_sync == 0;
}

static int prepare_meta_insert(sqlite_store *s, sqlite_table *t) {
  if (t->meta_insert)
    return 0;
  return prepare_mprintf(
      s, t, &t->meta_insert, "inserting an item",
      base_is_version(t)
          ? "INSERT INTO main.\"%w\"(uuid, clock, site, deleted, base_clock,"
            " base_site) VALUES (?1, ?2, ?3, ?4, ?2, ?3)"
          : "INSERT INTO main.\"%w\"(uuid, clock, site, deleted)"
            " VALUES (?1, ?2, ?3, ?4)",
      t->meta_name);
}

/* The staging table of |t|: temp."_lipsync_stage_<table>", a rowid table
 * the staged items are appended to in arrival order. */
#define STAGE_PREFIX "_lipsync_stage_"

/* Creates (empty) the staging table and prepares its insert. */
static int open_stage(sqlite_store *s, sqlite_table *t) {
  int rc;
  if (t->stage_insert)
    return 0;
  rc = sq_exec_for_table(
      s, t,
      sqlite3_mprintf("CREATE TEMP TABLE IF NOT EXISTS \"%w%w\"(uuid TEXT,"
                      " clock INTEGER, site BLOB, deleted INTEGER);"
                      " DELETE FROM temp.\"%w%w\"",
                      STAGE_PREFIX, t->name, STAGE_PREFIX, t->name),
      "creating the staging table");
  if (rc)
    return rc;
  return prepare_mprintf(s, t, &t->stage_insert, "staging an item",
                         "INSERT INTO temp.\"%w%w\"(uuid, clock, site,"
                         " deleted) VALUES (?1, ?2, ?3, ?4)",
                         STAGE_PREFIX, t->name);
}

/* Whether a statement of |s|'s connection is running. */
static bool any_busy(sqlite_store *s) {
  for (sqlite3_stmt *st = sqlite3_next_stmt(s->db, NULL); st;
       st = sqlite3_next_stmt(s->db, st))
    if (sqlite3_stmt_busy(st))
      return true;
  return false;
}

/* Moves the staged items into the metadata table in UUID order (SQLite's
 * external sorter, in bounded memory: each item joins the B-tree at its
 * right edge) and drops the staging table. */
static int write_staged(sqlite_store *s, sqlite_table *t) {
  int rc;
  if (!t->stage_insert)
    return 0;
  sqlite3_finalize(t->stage_insert);
  t->stage_insert = NULL;
  rc = sq_exec_for_table(
      s, t,
      sqlite3_mprintf(base_is_version(t)
                          ? "INSERT INTO main.\"%w\"(uuid, clock, site,"
                            " deleted, base_clock, base_site) SELECT uuid,"
                            " clock, site, deleted, clock, site FROM"
                            " temp.\"%w%w\" ORDER BY uuid"
                          : "INSERT INTO main.\"%w\"(uuid, clock, site,"
                            " deleted) SELECT uuid, clock, site, deleted FROM"
                            " temp.\"%w%w\" ORDER BY uuid",
                      t->meta_name, STAGE_PREFIX, t->name),
      "writing the staged items");
  if (rc)
    return rc;
  /* DROP TABLE fails while any statement reads (a scan left open): then
   * the table is only emptied, and the next stage reuses it. */
  return sq_exec_for_table(s, t,
                           sqlite3_mprintf(any_busy(s)
                                               ? "DELETE FROM temp.\"%w%w\""
                                               : "DROP TABLE temp.\"%w%w\"",
                                           STAGE_PREFIX, t->name),
                           "dropping the staging table");
}

static int stage_item(sqlite_store *s, sqlite_table *t,
                      const lipsync_row *row) {
  int rc = open_stage(s, t);
  if (rc)
    return rc;
  lipsync_uuid_format(row->uuid, t->insert_key);
  return write_item(s, t, t->stage_insert, row);
}

int sq_items_insert(sqlite_store *s, sqlite_table *t, const lipsync_row *row) {
  int rc;

  if ((rc = sq_check_clock(s, t, row->version.clock)) != 0)
    return rc;
  if (t->staging)
    return stage_item(s, t, row);
  if ((rc = prepare_meta_insert(s, t)) != 0)
    return rc;
  lipsync_uuid_format(row->uuid, t->insert_key);
  return write_item(s, t, t->meta_insert, row);
}

int sq_items_write_staged(sqlite_store *s, sqlite_table *t) {
  return write_staged(s, t);
}

int sq_items_unstage(sqlite_store *s, sqlite_table *t) {
  int rc;
  if (!t->staging)
    return 0;
  t->staging = false;
  rc = sq_items_write_staged(s, t);
  return rc ? rc : sq_capture_resume(s, t);
}

/* INSERT INTO T(c..., uuid) VALUES (...) ON CONFLICT(uuid) DO UPDATE SET
 * c = excluded.c, ... WHERE some value differs: an UPDATE (and the user's
 * UPDATE triggers) only for a row that changes. */
static int prepare_update(sqlite_store *s, sqlite_table *t) {
  sqlite3_str *sql = sqlite3_str_new(s->db);
  size_t n = t->base.ncolumns;
  char *text;
  int rc;

  sqlite3_str_appendf(sql, "INSERT INTO main.\"%w\"(", t->name);
  for (size_t i = 0; i < n; i++)
    sqlite3_str_appendf(sql, "\"%w\", ", t->columns[i].name);
  sqlite3_str_appendf(sql, "\"%w\") VALUES (", LIPSYNC_UUID_COLUMN);
  for (size_t i = 0; i < n; i++)
    sqlite3_str_appendall(sql, "?, ");
  sqlite3_str_appendf(sql, "?) ON CONFLICT(\"%w\") DO ", LIPSYNC_UUID_COLUMN);
  if (n == 0) {
    sqlite3_str_appendall(sql, "NOTHING");
  } else {
    sqlite3_str_appendall(sql, "UPDATE SET ");
    for (size_t i = 0; i < n; i++)
      sqlite3_str_appendf(sql, "%s\"%w\" = excluded.\"%w\"", i ? ", " : "",
                          t->columns[i].name, t->columns[i].name);
    sqlite3_str_appendall(sql, " WHERE 0");
    for (size_t i = 0; i < n; i++) {
      const char *c = t->columns[i].name;
      sqlite3_str_appendf(sql,
                          " OR \"%w\".\"%w\" IS NOT excluded.\"%w\""
                          " COLLATE BINARY OR typeof(\"%w\".\"%w\") <>"
                          " typeof(excluded.\"%w\")",
                          t->name, c, c, t->name, c, c);
    }
  }
  text = sqlite3_str_finish(sql);
  if (!text)
    return sq_fail_nomem(s);
  rc = sq_prepare(s, text, &t->update_stmt);
  sqlite3_free(text);
  return rc == SQLITE_OK ? 0 : sq_fail_db(s, t->name, "update");
}

static int write_row(sqlite_store *s, sqlite_table *t, const lipsync_row *row) {
  size_t n = t->base.ncolumns;
  sqlite3_stmt *st;
  int rc;

  if (row->nvalues != n)
    return sq_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT,
                   "table %s: a row of %zu values for %zu columns", t->name,
                   row->nvalues, n);
  if (!t->update_stmt && (rc = prepare_update(s, t)) != 0)
    return rc;
  st = t->update_stmt;
  return sq_write_row(s, t, st, row);
}

static int delete_row(sqlite_store *s, sqlite_table *t) {
  int rc;
  if (!t->delete_stmt &&
      (rc = prepare_mprintf(s, t, &t->delete_stmt, "delete",
                            "DELETE FROM main.\"%w\" WHERE \"%w\" = ?1",
                            t->name, LIPSYNC_UUID_COLUMN)) != 0)
    return rc;
  sqlite3_bind_text(t->delete_stmt, 1, t->insert_key, UUID_TEXT_LEN,
                    SQLITE_STATIC);
  rc = sqlite3_step(t->delete_stmt);
  rc = rc == SQLITE_DONE ? 0 : sq_fail_db(s, t->name, "delete");
  sqlite3_reset(t->delete_stmt);
  return rc;
}

int sq_items_update(sqlite_store *s, sqlite_table *t, const lipsync_row *row) {
  int rc;

  if ((rc = sq_check_clock(s, t, row->version.clock)) != 0 ||
      (rc = sq_need_index(s, t)) != 0)
    return rc;
  lipsync_uuid_format(row->uuid, t->insert_key);
  rc = row->deleted ? delete_row(s, t) : write_row(s, t, row);
  if (rc)
    return rc;
  if (!t->meta_upsert &&
      (rc = prepare_mprintf(
           s, t, &t->meta_upsert, "updating an item",
           "INSERT INTO main.\"%w\"(uuid, clock, site, deleted)"
           " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(uuid) DO UPDATE SET"
           " clock = excluded.clock, site = excluded.site,"
           " deleted = excluded.deleted",
           t->meta_name)) != 0)
    return rc;
  return write_item(s, t, t->meta_upsert, row);
}

int sq_items_scan(sqlite_store *s, sqlite_table *t, sqlite_cursor **out) {
  sqlite_cursor *c;
  int rc;

  *out = NULL;
  /* A scan needs no index: a bulk load goes on after it (the session
   * scans the items of an empty table before the rows arrive), its items
   * staged anew. */
  if ((rc = write_staged(s, t)) != 0)
    return rc;
  c = calloc(1, sizeof *c);
  if (!c)
    return sq_fail_nomem(s);
  c->base.table = &t->base;
  c->table = t;
  c->shape = ITEM_SHAPE;
  c->stmt = t->idle_scan[ITEM_SHAPE];
  t->idle_scan[ITEM_SHAPE] = NULL;
  if (!c->stmt &&
      (rc = prepare_mprintf(s, t, &c->stmt, "scan_items",
                            "SELECT uuid, clock, site, deleted, base_clock,"
                            " base_site FROM main.\"%w\"",
                            t->meta_name)) != 0) {
    free(c);
    return rc;
  }
  c->next = t->cursors;
  t->cursors = c;
  *out = c;
  return 0;
}

/* Copies a version's site from column |col|: 16 bytes, or NULL for the
 * zero version when |null_ok|. */
static bool read_site(sqlite3_stmt *st, int col, bool null_ok, uint8_t *out) {
  const void *p;
  if (sqlite3_column_type(st, col) == SQLITE_NULL) {
    memset(out, 0, LIPSYNC_SITE_LEN);
    return null_ok;
  }
  p = sqlite3_column_blob(st, col);
  if (!p || sqlite3_column_bytes(st, col) != LIPSYNC_SITE_LEN)
    return false;
  memcpy(out, p, LIPSYNC_SITE_LEN);
  return true;
}

int sq_items_next(sqlite_cursor *c, lipsync_item *item) {
  sqlite_table *t = c->table;
  sqlite_store *s = t->store;
  const char *u;
  int rc;

  if (c->status)
    return c->status > 0 ? 0 : c->status;
  rc = sqlite3_step(c->stmt);
  if (rc != SQLITE_ROW) {
    c->status = rc == SQLITE_DONE ? 1 : sq_fail_db(s, t->name, "scan_items");
    return c->status > 0 ? 0 : c->status;
  }
  memset(item, 0, sizeof *item);
  u = (const char *)sqlite3_column_text(c->stmt, 0);
  if (!u || lipsync_uuid_parse(u, (size_t)sqlite3_column_bytes(c->stmt, 0),
                               item->uuid) != 0)
    return c->status =
               sq_fail(s, LIPSYNC_ERR_STORAGE,
                       "table %s: an item has a malformed uuid", t->name);
  item->version.clock = (uint64_t)sqlite3_column_int64(c->stmt, 1);
  item->deleted = sqlite3_column_int(c->stmt, 3) != 0;
  item->base.clock = (uint64_t)sqlite3_column_int64(c->stmt, 4);
  if (!read_site(c->stmt, 2, false, item->version.site) ||
      !read_site(c->stmt, 5, true, item->base.site))
    return c->status =
               sq_fail(s, LIPSYNC_ERR_STORAGE,
                       "table %s: item %s: a site is not 16 bytes", t->name, u);
  if (base_is_version(t)) /* never synced as a client */
    memset(&item->base, 0, sizeof item->base);
  return 1;
}

void sq_items_free(sqlite_table *t) {
  sqlite3_finalize(t->meta_insert);
  sqlite3_finalize(t->meta_upsert);
  sqlite3_finalize(t->update_stmt);
  sqlite3_finalize(t->delete_stmt);
  sqlite3_finalize(t->stage_insert);
}
