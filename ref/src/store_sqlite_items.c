/*
 * store_sqlite_items.c: the items (the rows of "_lipsync_meta_T") of the
 * SQLite backend: the cursors that read them (a UUID range, a lookup, the
 * changes since a position, old tombstones), the writes of the rows and
 * items a sync applies, the kept summary of each table and its fold, and
 * change positions.
 *
 * Every item change takes a change sequence number (_lipsync_state.seq;
 * the triggers take theirs, a sync its own range), so the items changed
 * since a position are a range of the seq index. The kept summary (the sum
 * and count of the item digests of the table, spec 8.2) is as of the last
 * fold; "_lipsync_prev_T" holds, for each item changed since, the state the
 * sum counts. A fold subtracts those digests and adds the current ones: the
 * cost of what changed, not of the table.
 *
 * A bulk load into a table that had no item (the first sync of a million
 * rows) logs nothing for the fold: the digests of its items add up in
 * memory, and its items share one sequence number (t->bulk_seq) and are
 * written with seq 0, outside the seq index. Its items join the table in UUID
 * order: directly while they arrive in order (a peer sends a range in UUID
 * order), else through a TEMP staging table and one INSERT ... SELECT ... ORDER
 * BY uuid (SQLite's external sorter, bounded memory) when the indexes set aside
 * are built (sq_need_index), as its rows' indexes are.
 */
#include "store_sqlite_int.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_COLUMNS "uuid, clock, site, deleted, base_clock, base_site"
/* A position: format 1, the site id, the highest sequence number read,
 * the range of the session's own writes. */
#define POSITION_FORMAT 1
#define POSITION_LEN (1 + LIPSYNC_SITE_LEN + 3 * 8)

/* Binds ?1 uuid (t->insert_key), ?2 clock, ?3 site, ?4 deleted, ?5 seq,
 * runs |st| and resets it. */
static int write_item(sqlite_store *s, sqlite_table *t, sqlite3_stmt *st,
                      const lipsync_row *row, uint64_t seq) {
  int rc;
  sqlite3_bind_text(st, 1, t->insert_key, UUID_TEXT_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)row->version.clock);
  sqlite3_bind_blob(st, 3, row->version.site, LIPSYNC_SITE_LEN,
                    SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 4, row->deleted ? 1 : 0);
  if (sqlite3_bind_parameter_count(st) >= 5)
    sqlite3_bind_int64(st, 5, (sqlite3_int64)seq);
  rc = sqlite3_step(st);
  if (rc != SQLITE_DONE)
    rc = sq_fail(s, sq_code(sqlite3_extended_errcode(s->db)),
                 "table %s: item %s: %s", t->name, t->insert_key,
                 sqlite3_errmsg(s->db));
  else
    rc = 0;
  sqlite3_reset(st);
  t->wrote = true;
  return rc;
}

/* Runs |*st| for t->insert_key: logs in the fold log the state the kept
 * summary counts for the item (none when |none|) before it changes. */
static int log_state(sqlite_store *s, sqlite_table *t, sqlite3_stmt **st,
                     bool none) {
  int rc;
  if (!*st &&
      (rc = none ? sq_prepare_mprintf(s, t, st, "logging an item",
                                      "INSERT OR IGNORE INTO main.\"%w\"(uuid)"
                                      " VALUES (?1)",
                                      t->prev_name)
                 : sq_prepare_mprintf(
                       s, t, st, "logging an item",
                       "INSERT OR IGNORE INTO main.\"%w\"(uuid, clock, site,"
                       " deleted) SELECT uuid, clock, site, deleted FROM"
                       " main.\"%w\" WHERE uuid = ?1",
                       t->prev_name, t->meta_name)) != 0)
    return rc;
  sqlite3_bind_text(*st, 1, t->insert_key, UUID_TEXT_LEN, SQLITE_STATIC);
  rc = sqlite3_step(*st);
  sqlite3_reset(*st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, t->name, "logging an item");
}

/* A table never synced as a client reports every base as zero
 * (sq_items_next); its new items store base = version, so that its first
 * sync as a client, which sets every base to its version, rewrites only
 * the items that differ. */
static bool base_is_version(const sqlite_table *t) {
  return t->base.last_sync == 0 && !t->base.is_server;
}

static int prepare_meta_insert(sqlite_store *s, sqlite_table *t) {
  if (t->meta_insert)
    return 0;
  return sq_prepare_mprintf(
      s, t, &t->meta_insert, "inserting an item",
      base_is_version(t)
          ? "INSERT INTO main.\"%w\"(uuid, clock, site, deleted, seq,"
            " base_clock, base_site) VALUES (?1, ?2, ?3, ?4, ?5, ?2, ?3)"
          : "INSERT INTO main.\"%w\"(uuid, clock, site, deleted, seq)"
            " VALUES (?1, ?2, ?3, ?4, ?5)",
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
                      " clock INTEGER, site BLOB, deleted INTEGER,"
                      " seq INTEGER); DELETE FROM temp.\"%w%w\"",
                      STAGE_PREFIX, t->name, STAGE_PREFIX, t->name),
      "creating the staging table");
  if (rc)
    return rc;
  return sq_prepare_mprintf(s, t, &t->stage_insert, "staging an item",
                            "INSERT INTO temp.\"%w%w\"(uuid, clock, site,"
                            " deleted, seq) VALUES (?1, ?2, ?3, ?4, ?5)",
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
                            " deleted, seq, base_clock, base_site) SELECT"
                            " uuid, clock, site, deleted, seq, clock, site"
                            " FROM temp.\"%w%w\" ORDER BY uuid"
                          : "INSERT INTO main.\"%w\"(uuid, clock, site,"
                            " deleted, seq) SELECT uuid, clock, site,"
                            " deleted, seq FROM temp.\"%w%w\" ORDER BY uuid",
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

/* An item of a bulk load: straight into the item table while the items come
 * in UUID order, else into the staging table. */
static int bulk_item(sqlite_store *s, sqlite_table *t, const lipsync_row *row,
                     uint64_t seq) {
  int rc;
  canon_fp_add(&t->bulk_fp, row->digest);
  /* Once the indexes are back, items go straight in. */
  if (t->bulk_done ||
      (!t->staging && t->bulk_sorted &&
       (t->bulk_fp.count == 1 ||
        memcmp(row->uuid, t->bulk_last, LIPSYNC_UUID_LEN) > 0))) {
    memcpy(t->bulk_last, row->uuid, LIPSYNC_UUID_LEN);
    if ((rc = prepare_meta_insert(s, t)) != 0)
      return rc;
    return write_item(s, t, t->meta_insert, row, seq);
  }
  t->bulk_sorted = false;
  t->staging = true;
  if ((rc = open_stage(s, t)) != 0)
    return rc;
  return write_item(s, t, t->stage_insert, row, seq);
}

int sq_items_insert(sqlite_store *s, sqlite_table *t, const lipsync_row *row) {
  uint64_t seq;
  int rc;

  if ((rc = sq_check_clock(s, t, row->version.clock)) != 0)
    return rc;
  lipsync_uuid_format(row->uuid, t->insert_key);
  if (t->bulk)
    return bulk_item(s, t, row, 0);
  seq = ++s->own_hi;
  /* The kept summary counts no state for this UUID. */
  if ((rc = log_state(s, t, &t->prev_none,
                      "INSERT OR IGNORE INTO main.\"%w\"(uuid) VALUES (?1)"
                      "")) != 0 ||
      (rc = prepare_meta_insert(s, t)) != 0)
    return rc;
  return write_item(s, t, t->meta_insert, row, seq);
}

int sq_items_write_staged(sqlite_store *s, sqlite_table *t) {
  return write_staged(s, t);
}

int sq_items_unstage(sqlite_store *s, sqlite_table *t) {
  int rc;
  if (!t->bulk || t->index_pending || t->bulk_done)
    return 0;
  t->bulk_done = true;
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
  int rc;

  if (row->nvalues != n)
    return sq_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT,
                   "table %s: a row of %zu values for %zu columns", t->name,
                   row->nvalues, n);
  if (!t->update_stmt && (rc = prepare_update(s, t)) != 0)
    return rc;
  return sq_write_row(s, t, t->update_stmt, row);
}

static int delete_row(sqlite_store *s, sqlite_table *t) {
  int rc;
  if (!t->delete_stmt &&
      (rc = sq_prepare_mprintf(s, t, &t->delete_stmt, "delete",
                               "DELETE FROM main.\"%w\" WHERE \"%w\" = ?1",
                               t->name, LIPSYNC_UUID_COLUMN)) != 0)
    return rc;
  sqlite3_bind_text(t->delete_stmt, 1, t->insert_key, UUID_TEXT_LEN,
                    SQLITE_STATIC);
  sq_nested_begin(s, t);
  rc = sqlite3_step(t->delete_stmt);
  sq_nested_end(s);
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
  if ((rc = log_state(s, t, &t->prev_log, false)) != 0)
    return rc;
  rc = row->deleted ? delete_row(s, t) : write_row(s, t, row);
  if (rc)
    return rc;
  if (!t->meta_upsert &&
      (rc = sq_prepare_mprintf(
           s, t, &t->meta_upsert, "updating an item",
           "INSERT INTO main.\"%w\"(uuid, clock, site, deleted, seq)"
           " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(uuid) DO UPDATE SET"
           " clock = excluded.clock, site = excluded.site,"
           " deleted = excluded.deleted, seq = excluded.seq, rowdig = NULL",
           t->meta_name)) != 0)
    return rc;
  return write_item(s, t, t->meta_upsert, row, ++s->own_hi);
}

/* ------------------------------------------------------------------ */
/* Cursors                                                              */
/* ------------------------------------------------------------------ */

/* Opens an item cursor of |shape| over the statement |fmt| formats with the
 * item table's name (or the one kept idle). */
static int open_items(sqlite_store *s, sqlite_table *t, int shape,
                      sqlite_cursor **out, const char *fmt) {
  sqlite3_stmt *st = NULL;
  char *sql = NULL;
  int rc;
  *out = NULL;
  /* An item read needs no index: a bulk load goes on after it, its items
   * staged anew. */
  if ((rc = write_staged(s, t)) != 0)
    return rc;
  sq_snapshot_used(s);
  /* |fmt| names the item table once or twice (an index of it). */
  if (!t->idle[shape] &&
      !(sql = sqlite3_mprintf(fmt, t->meta_name, t->meta_name)))
    return sq_fail_nomem(s);
  rc = sq_take_stmt(s, t, shape, sql, &st);
  sqlite3_free(sql);
  return rc ? rc : sq_cursor_open(s, t, shape, CURSOR_ITEMS, st, out);
}

int sq_items_scan(sqlite_store *s, sqlite_table *t, sqlite_cursor **out) {
  return open_items(s, t, SHAPE_ALL_ITEMS, out,
                    "SELECT " ITEM_COLUMNS " FROM main.\"%w\"");
}

int sq_items_range(sqlite_store *s, sqlite_table *t, const uint8_t *lower,
                   const uint8_t *upper, sqlite_cursor **out) {
  static const char *const fmt[4] = {
      "SELECT " ITEM_COLUMNS " FROM main.\"%w\" ORDER BY uuid",
      "SELECT " ITEM_COLUMNS " FROM main.\"%w\" WHERE uuid >= ?1"
      " ORDER BY uuid",
      "SELECT " ITEM_COLUMNS " FROM main.\"%w\" WHERE uuid < ?2"
      " ORDER BY uuid",
      "SELECT " ITEM_COLUMNS " FROM main.\"%w\" WHERE uuid >= ?1"
      " AND uuid < ?2 ORDER BY uuid"};
  int bounds = (lower ? 1 : 0) | (upper ? 2 : 0);
  int rc = open_items(s, t, SHAPE_ITEMS + bounds, out, fmt[bounds]);
  if (rc)
    return rc;
  if (lower) {
    lipsync_uuid_format(lower, (*out)->lower);
    sqlite3_bind_text((*out)->stmt, 1, (*out)->lower, UUID_TEXT_LEN,
                      SQLITE_STATIC);
  }
  if (upper) {
    lipsync_uuid_format(upper, (*out)->upper);
    sqlite3_bind_text((*out)->stmt, 2, (*out)->upper, UUID_TEXT_LEN,
                      SQLITE_STATIC);
  }
  return 0;
}

int sq_items_lookup(sqlite_store *s, sqlite_table *t, const uint8_t *uuids,
                    size_t n, sqlite_cursor **out) {
  int rc = open_items(s, t, SHAPE_ITEM_BY_UUID, out,
                      "SELECT " ITEM_COLUMNS " FROM main.\"%w\""
                      " WHERE uuid = ?1");
  if (rc)
    return rc;
  if (n && !((*out)->uuids = malloc(n * LIPSYNC_UUID_LEN)))
    return (*out)->status = sq_fail_nomem(s);
  if (n)
    memcpy((*out)->uuids, uuids, n * LIPSYNC_UUID_LEN);
  (*out)->nuuids = n;
  return 0;
}

int sq_items_changes(sqlite_store *s, sqlite_table *t,
                     const lipsync_position *since, sqlite_cursor **out) {
  uint64_t read_seq, lo, hi;
  int rc;
  *out = NULL;
  if ((rc = sq_items_parse_position(s, since, &read_seq, &lo, &hi)) != 0)
    return rc;
  /* A bulk load since: every item changed, a scan of the whole table. */
  if (t->bulk_seq > read_seq && !(t->bulk_seq >= lo && t->bulk_seq <= hi))
    return sq_fail(s, LIPSYNC_ERR_NOT_FOUND,
                   "table %s was loaded whole since that position", t->name);
  /* INDEXED BY: without statistics the planner would rather scan the
   * whole table in UUID order than sort the few changed items. */
  rc = open_items(s, t, SHAPE_CHANGES, out,
                  "SELECT " ITEM_COLUMNS " FROM main.\"%w\" INDEXED BY"
                  " \"%w_seq\" WHERE seq > ?1 AND seq > 0 AND (seq < ?2 OR"
                  " seq > ?3) ORDER BY uuid");
  if (rc)
    return rc;
  sqlite3_bind_int64((*out)->stmt, 1, (sqlite3_int64)read_seq);
  sqlite3_bind_int64((*out)->stmt, 2, (sqlite3_int64)lo);
  sqlite3_bind_int64((*out)->stmt, 3, (sqlite3_int64)hi);
  return 0;
}

int sq_items_tombstones(sqlite_store *s, sqlite_table *t, uint64_t clock,
                        sqlite_cursor **out) {
  int rc = open_items(s, t, SHAPE_TOMBSTONES, out,
                      "SELECT " ITEM_COLUMNS " FROM main.\"%w\" WHERE deleted"
                      " AND clock < ?1");
  if (rc)
    return rc;
  sqlite3_bind_int64((*out)->stmt, 1,
                     clock > INT64_MAX ? INT64_MAX : (sqlite3_int64)clock);
  return 0;
}

/* Reads the item of the current row of |st| (the ITEM_COLUMNS from column
 * |col| on) into |item|. */
static int read_item(sqlite_store *s, sqlite_table *t, sqlite3_stmt *st,
                     int col, lipsync_item *item) {
  const char *u = (const char *)sqlite3_column_text(st, col);
  memset(item, 0, sizeof *item);
  if (!u || lipsync_uuid_parse(u, (size_t)sqlite3_column_bytes(st, col),
                               item->uuid) != 0)
    return sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: an item has a malformed uuid", t->name);
  item->version.clock = (uint64_t)sqlite3_column_int64(st, col + 1);
  item->deleted = sqlite3_column_int(st, col + 3) != 0;
  item->base.clock = (uint64_t)sqlite3_column_int64(st, col + 4);
  if (!sq_read_site(st, col + 2, false, item->version.site) ||
      !sq_read_site(st, col + 5, true, item->base.site))
    return sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: item %s: a site is not 16 bytes", t->name, u);
  if (base_is_version(t)) /* never synced as a client */
    memset(&item->base, 0, sizeof item->base);
  return 0;
}

int sq_items_next(sqlite_cursor *c, lipsync_item *item) {
  sqlite_table *t = c->table;
  sqlite_store *s = t->store;
  int rc;

  for (;;) {
    if (c->status)
      return c->status > 0 ? 0 : c->status;
    if (c->shape == SHAPE_ITEM_BY_UUID) {
      if (c->pos == c->nuuids) {
        c->status = 1;
        continue;
      }
      sqlite3_reset(c->stmt);
      lipsync_uuid_format(c->uuids + c->pos++ * LIPSYNC_UUID_LEN, c->key);
      sqlite3_bind_text(c->stmt, 1, c->key, UUID_TEXT_LEN, SQLITE_STATIC);
    }
    rc = sqlite3_step(c->stmt);
    if (rc == SQLITE_ROW) {
      rc = read_item(s, t, c->stmt, 0, item);
      if (!rc && t->nwindow)
        rc = sq_check_window(s, t, item->uuid);
      if (!rc)
        return 1;
      c->status = rc;
      continue;
    }
    if (rc == SQLITE_DONE && c->shape == SHAPE_ITEM_BY_UUID)
      continue;
    c->status = rc == SQLITE_DONE ? 1 : sq_fail_db(s, t->name, "reading items");
  }
}

/* ------------------------------------------------------------------ */
/* Kept summaries                                                       */
/* ------------------------------------------------------------------ */

/* Adds (|sign| > 0) or subtracts the item digest of the item whose clock,
 * site and deleted flag are columns |col|.. of |st| (uuid |uuid|). */
static int add_state(sqlite_store *s, sqlite_table *t, sqlite3_stmt *st,
                     int col, const uint8_t *uuid, int sign, canon_fp *fp) {
  lipsync_version v;
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  v.clock = (uint64_t)sqlite3_column_int64(st, col);
  if (!sq_read_site(st, col + 1, false, v.site))
    return sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: an item's site is not 16 bytes", t->name);
  if (canon_item_digest(&s->hasher, uuid, &v,
                        sqlite3_column_int(st, col + 2) != 0, digest) != 0)
    return sq_fail_nomem(s);
  if (sign > 0)
    canon_fp_add(fp, digest);
  else
    canon_fp_sub(fp, digest);
  return 0;
}

/* The kept summary of |t| as last folded, into |fp|. */
static int read_kept(sqlite_store *s, sqlite_table *t, canon_fp *fp) {
  lipsync_summary sum;
  sqlite3_stmt *st;
  int rc;
  memset(&sum, 0, sizeof sum);
  if (sq_prepare(s,
                 "SELECT sum, count FROM main._lipsync_tables WHERE name = ?1",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "reading the kept summary");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_bytes(st, 0) == LIPSYNC_DIGEST_LEN)
      memcpy(sum.sum, sqlite3_column_blob(st, 0), LIPSYNC_DIGEST_LEN);
    sum.count = (uint64_t)sqlite3_column_int64(st, 1);
  }
  sqlite3_finalize(st);
  canon_fp_load(fp, &sum);
  return rc == SQLITE_ROW || rc == SQLITE_DONE
             ? 0
             : sq_fail_db(s, t->name, "reading the kept summary");
}

int sq_items_fold(sqlite_store *s, sqlite_table *t, bool write,
                  lipsync_summary *out) {
  sqlite3_stmt *st;
  canon_fp fp;
  int rc;

  if ((rc = write_staged(s, t)) != 0 || (rc = read_kept(s, t, &fp)) != 0)
    return rc;
  if ((rc = sq_prepare_mprintf(
           s, t, &st, "folding the changes",
           "SELECT p.uuid, p.clock, p.site, p.deleted, m.clock, m.site,"
           " m.deleted FROM main.\"%w\" AS p LEFT JOIN main.\"%w\" AS m"
           " ON m.uuid = p.uuid",
           t->prev_name, t->meta_name)) != 0)
    return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint8_t uuid[LIPSYNC_UUID_LEN];
    const char *u = (const char *)sqlite3_column_text(st, 0);
    if (!u ||
        lipsync_uuid_parse(u, (size_t)sqlite3_column_bytes(st, 0), uuid) != 0) {
      rc = sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: the fold log has a malformed uuid", t->name);
      break;
    }
    if (sqlite3_column_type(st, 1) != SQLITE_NULL &&
        (rc = add_state(s, t, st, 1, uuid, -1, &fp)) != 0)
      break;
    if (sqlite3_column_type(st, 4) != SQLITE_NULL &&
        (rc = add_state(s, t, st, 4, uuid, +1, &fp)) != 0)
      break;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return rc > 0 ? sq_fail_db(s, t->name, "folding the changes") : rc;
  if (write) {
    canon_fp_merge(&fp, &t->bulk_fp);
    canon_fp_init(&t->bulk_fp);
    canon_fp_store(&fp, out);
    sqlite3_stmt *up;
    if (sq_prepare(s,
                   "UPDATE main._lipsync_tables SET sum = ?2, count = ?3"
                   " WHERE name = ?1",
                   &up) != SQLITE_OK)
      return sq_fail_db(s, t->name, "recording the kept summary");
    sqlite3_bind_text(up, 1, t->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(up, 2, out->sum, LIPSYNC_DIGEST_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(up, 3, (sqlite3_int64)out->count);
    rc = sqlite3_step(up);
    sqlite3_finalize(up);
    if (rc != SQLITE_DONE)
      return sq_fail_db(s, t->name, "recording the kept summary");
    return sq_exec_for_table(
        s, t, sqlite3_mprintf("DELETE FROM main.\"%w\"", t->prev_name),
        "emptying the fold log");
  }
  canon_fp_store(&fp, out);
  return 0;
}

int sq_items_sum_all(sqlite_store *s, sqlite_table *t, canon_fp *out) {
  sqlite3_stmt *st;
  int rc;
  canon_fp_init(out);
  if ((rc = write_staged(s, t)) != 0 ||
      (rc = sq_prepare_mprintf(s, t, &st, "summing the items",
                               "SELECT uuid, clock, site, deleted FROM"
                               " main.\"%w\"",
                               t->meta_name)) != 0)
    return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    uint8_t uuid[LIPSYNC_UUID_LEN];
    const char *u = (const char *)sqlite3_column_text(st, 0);
    if (!u ||
        lipsync_uuid_parse(u, (size_t)sqlite3_column_bytes(st, 0), uuid) != 0) {
      rc = sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: an item has a malformed uuid", t->name);
      break;
    }
    if ((rc = add_state(s, t, st, 1, uuid, +1, out)) != 0)
      break;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0
         : rc > 0          ? sq_fail_db(s, t->name, "summing the items")
                           : rc;
}

/* ------------------------------------------------------------------ */
/* Positions (spec 8.8.1)                                               */
/* ------------------------------------------------------------------ */

int sq_items_position(sqlite_store *s, sqlite_table *t, lipsync_position *out) {
  uint8_t site[LIPSYNC_SITE_LEN];
  int rc = sq_capture_site(s, site);
  (void)t;
  if (rc)
    return rc;
  out->len = POSITION_LEN;
  out->data[0] = POSITION_FORMAT;
  memcpy(out->data + 1, site, LIPSYNC_SITE_LEN);
  canon_put_u64(out->data + 1 + LIPSYNC_SITE_LEN, s->read_seq);
  canon_put_u64(out->data + 9 + LIPSYNC_SITE_LEN, s->own_lo);
  canon_put_u64(out->data + 17 + LIPSYNC_SITE_LEN, s->own_hi);
  return 0;
}

int sq_items_parse_position(sqlite_store *s, const lipsync_position *p,
                            uint64_t *read_seq, uint64_t *lo, uint64_t *hi) {
  uint8_t site[LIPSYNC_SITE_LEN];
  sqlite3_int64 now;
  int rc;
  if (p->len != POSITION_LEN || p->data[0] != POSITION_FORMAT)
    return sq_fail(s, LIPSYNC_ERR_NOT_FOUND, "not a position of this database");
  if ((rc = sq_capture_site(s, site)) != 0)
    return rc;
  *read_seq = canon_get_u64(p->data + 1 + LIPSYNC_SITE_LEN);
  *lo = canon_get_u64(p->data + 9 + LIPSYNC_SITE_LEN);
  *hi = canon_get_u64(p->data + 17 + LIPSYNC_SITE_LEN);
  /* Another database's, or one this database has not reached (it was
   * restored from a backup since). */
  if (memcmp(site, p->data + 1, LIPSYNC_SITE_LEN) != 0 ||
      (rc = sq_query_int(s, NULL,
                         "SELECT seq FROM main._lipsync_state WHERE id = 1",
                         NULL, &now, NULL)) != 0 ||
      *read_seq > (uint64_t)now || (*hi >= *lo && *hi > (uint64_t)now))
    return rc ? rc
              : sq_fail(s, LIPSYNC_ERR_NOT_FOUND,
                        "not a position of this database");
  return 0;
}

void sq_items_free(sqlite_table *t) {
  sqlite3_finalize(t->meta_insert);
  sqlite3_finalize(t->meta_upsert);
  sqlite3_finalize(t->prev_log);
  sqlite3_finalize(t->prev_none);
  sqlite3_finalize(t->update_stmt);
  sqlite3_finalize(t->delete_stmt);
  sqlite3_finalize(t->stage_insert);
}
